"""Anchor-to-ground-truth matching and anchor sampling, batched over images.

Shape legend: B batch, A anchors, G ground truths (padding rows allowed), C+1 class logits, R candidate anchors.
IoU tensors are laid out ``iou_ga Tensor[B, G, A]`` (anchors innermost). A match is a ``Tensor[B, A]`` (int64)
holding the matched gt row or -1. Samples are ``Tensor[B, A]`` with +1 positive, -1 negative (background) and 0
ignored, as GluonCV's samplers.

GluonCV's matcher is ``CompositeMatcher([BipartiteMatcher(share_max=False), MaximumMatcher(0.5)])``:

1. greedy bipartite matching: walk all (anchor, gt) pairs by descending IoU (a stable sort, so ties go to the
   lower anchor, then the lower gt) and take a pair when both ends are still free and IoU > 1e-12.
   Computed here without walking: a gt can only be matched to one of its G best anchors (at most G-1 better ones
   can be taken by other gts first), so the walk is replayed on that ``[B, G, G*G]`` candidate block, in rounds
   that take at once every pair that is the best free pair of both its anchor and its gt. Those pairs are exactly
   the ones the sequential walk takes, so the result is identical; rounds are at most G, in practice 2-4.
2. tie fill: an anchor left free joins its argmax gt when its IoU is within 1e-12 of the best IoU any anchor has
   with that gt;
3. max-IoU matching: any anchor still free joins its argmax gt when IoU >= ``iou_thresh``.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["bipartite_match", "max_first_index", "ssd_match", "naive_samples", "ohem_samples", "background_loss"]


def _greedy_block(scores: Tensor, threshold: float) -> Tensor:
    """Greedy matching on a small block ``scores Tensor[B, G, R]`` (-inf = forbidden).

    Returns the matched gt of every candidate ``Tensor[B, R]`` (-1 when free). Ties break to the lower index.
    """
    b, g, r = scores.shape
    neg_inf = torch.tensor(float("-inf"), dtype=scores.dtype, device=scores.device)
    match = torch.full((b, r), -1, dtype=torch.long, device=scores.device)
    row_free = torch.ones(b, r, dtype=torch.bool, device=scores.device)
    col_free = torch.ones(b, g, dtype=torch.bool, device=scores.device)
    gt_idx = torch.arange(g, device=scores.device)
    cand_idx = torch.arange(r, device=scores.device)
    for _ in range(g):
        s = torch.where(col_free[:, :, None] & row_free[:, None, :], scores, neg_inf)
        best_cand = s.argmax(dim=2)  # [B, G]: best free candidate of each gt
        best_val = s.gather(2, best_cand[..., None])[..., 0]
        best_gt = s.transpose(1, 2).contiguous().argmax(dim=2)  # [B, R]: best free gt of each candidate
        mutual = (best_gt.gather(1, best_cand) == gt_idx) & (best_val > threshold)  # [B, G]
        takes = mutual.gather(1, best_gt) & (best_cand.gather(1, best_gt) == cand_idx)  # [B, R]
        if not bool(takes.any()):
            break
        match = torch.where(takes, best_gt, match)
        row_free &= ~takes
        col_free &= ~mutual
    return match


def _topk_lowest_index_on_ties(iou_ga: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Top-k IoUs along anchors where equal values rank the lower anchor first (a stable descending sort).

    ``torch.topk`` breaks ties arbitrarily, which only matters when a tie straddles the k-th place; those rows are
    ranked again: every IoU above the k-th value, then the tied ones in anchor order.
    """
    a = iou_ga.shape[2]
    if k >= a:
        val, idx = iou_ga.sort(dim=2, descending=True, stable=True)
        return val[..., :k], idx[..., :k]
    top_val, top_idx = iou_ga.topk(k + 1, dim=2)
    val, idx = top_val[..., :k].contiguous(), top_idx[..., :k].contiguous()
    # rows with a tie at the k-th place; a tie at IoU 0 cannot change a match (pairs need IoU > 1e-12)
    tied = ((top_val[..., k - 1] == top_val[..., k]) & (top_val[..., k] > 0)).nonzero(as_tuple=True)
    if tied[0].numel():
        rows = iou_ga[tied]  # [T, A]
        kth = top_val[tied][:, k - 1 : k]  # [T, 1]
        # exact small integers in float32 (A < 2**24): above the tie 2A, tied A - index (lower index first), else 0
        order_key = torch.arange(a, 0, -1, dtype=rows.dtype, device=rows.device)
        keys = torch.where(rows > kth, 2.0 * a, torch.where(rows == kth, order_key, 0.0))
        row_idx = keys.topk(k, dim=1).indices
        row_val, by_value = rows.gather(1, row_idx).sort(dim=1, descending=True, stable=True)
        idx[tied] = row_idx.gather(1, by_value)
        val[tied] = row_val
    return val, idx


def max_first_index(iou_ga: Tensor) -> tuple[Tensor, Tensor]:
    """``(max, argmax)`` over gts of ``iou_ga Tensor[B, G, A]`` -> two ``Tensor[B, A]``; ties go to the lower gt.

    ``torch.max(dim=1)`` reduces across the strided gt axis slowly on CPU; ``amax`` is fast, and the
    first gt that reaches it is found with one comparison and a small-integer ``amax`` (G < 256) or ``argmax``.
    """
    g = iou_ga.shape[1]
    pmax = iou_ga.amax(dim=1)
    reaches = iou_ga == pmax[:, None]
    if g < 256:
        weight = torch.arange(g, 0, -1, dtype=torch.uint8, device=iou_ga.device)[None, :, None]  # g - index
        first = g - (reaches.to(torch.uint8) * weight).amax(dim=1).long()
    else:
        first = reaches.to(torch.uint8).argmax(dim=1)
    return pmax, first


def bipartite_match(iou_ga: Tensor, valid_gt: Tensor, threshold: float = 1e-12) -> tuple[Tensor, Tensor]:
    """Greedy bipartite matching. ``iou_ga Tensor[B,G,A]``, ``valid_gt Tensor[B,G]`` ->
    ``(match Tensor[B,A], gt_best_iou Tensor[B,G])`` where ``gt_best_iou`` is each gt's best IoU (-1 for padding).
    """
    b, g, a = iou_ga.shape
    k = min(g, a)
    top_val, top_idx = _topk_lowest_index_on_ties(iou_ga, k)  # [B, G, k]
    cand, _ = top_idx.reshape(b, g * k).sort(dim=1)  # ascending anchor index: ties go to the lower anchor
    dup = torch.zeros_like(cand, dtype=torch.bool)
    dup[:, 1:] = cand[:, 1:] == cand[:, :-1]
    block = iou_ga.gather(2, cand[:, None, :].expand(b, g, g * k))
    allowed = valid_gt[:, :, None] & ~dup[:, None, :]
    block = torch.where(allowed, block, torch.full_like(block, float("-inf")))
    cand_match = _greedy_block(block, threshold)
    match = torch.full((b, a), -1, dtype=torch.long, device=iou_ga.device)
    match.scatter_reduce_(1, cand, cand_match, reduce="amax")
    gt_best = torch.where(valid_gt, top_val[..., 0], torch.full_like(top_val[..., 0], -1.0))
    return match, gt_best


def ssd_match(iou_ga: Tensor, valid_gt: Tensor, iou_thresh: float = 0.5, eps: float = 1e-12) -> tuple[Tensor, Tensor]:
    """Bipartite, tie fill, then max-IoU. ``iou_ga Tensor[B,G,A]`` (padding rows must hold IoU 0) ->
    ``(match Tensor[B,A], max_iou Tensor[B,A])``.

    Unlike GluonCV, a gt whose best IoU is not above ``eps`` (padding, or a box that overlaps no anchor) takes no
    anchors in the tie fill: GluonCV would mark every anchor of an all-padding image positive for the padding row.
    """
    b, g, a = iou_ga.shape
    if g == 0:
        return (
            torch.full((b, a), -1, dtype=torch.long, device=iou_ga.device),
            torch.zeros(b, a, dtype=iou_ga.dtype, device=iou_ga.device),
        )
    match, gt_best = bipartite_match(iou_ga, valid_gt, eps)
    pmax, pargmax = max_first_index(iou_ga)  # [B, A]: each anchor's best gt
    best_of_arg = gt_best.gather(1, pargmax)
    tie = (pmax + eps >= best_of_arg) & (best_of_arg > eps)
    free = match < 0
    match = torch.where(free & (tie | (pmax >= iou_thresh)), pargmax, match)
    return match, pmax


def naive_samples(match: Tensor) -> Tensor:
    """No sampling: matched anchors +1, every other anchor -1 (background). ``Tensor[B,A]`` float."""
    return torch.where(match >= 0, 1.0, -1.0)


def background_loss(cls_preds: Tensor) -> Tensor:
    """``-log softmax(cls_preds)[..., 0]``, the cross-entropy an anchor pays for background: ``Tensor[B,A]``."""
    return torch.log_softmax(cls_preds.float(), dim=-1)[..., 0].neg()


def _top_per_row(score: Tensor, count: Tensor) -> Tensor:
    """``Tensor[B, A]`` bool: the ``count[b]`` highest scores of each row, equal scores taken in index order.

    The same set as the first ``count`` places of a stable descending sort, found with one ``topk`` of the largest
    count (a few hundred out of thousands of anchors) instead of sorting every row.
    """
    b, a = score.shape
    k = min(int(count.max()), a) if b else 0
    if k <= 0:
        return torch.zeros(b, a, dtype=torch.bool, device=score.device)
    count = count.reshape(b, 1).to(torch.long).clamp(max=a)
    kth = score.topk(k, dim=1).values.gather(1, (count - 1).clamp(min=0))  # [B, 1]: the count-th best value
    above = score > kth
    tied = score == kth
    room = count - above.sum(dim=1, keepdim=True)  # places left for the tied scores
    return (above | (tied & (tied.cumsum(dim=1) <= room))) & (count > 0)


def ohem_samples(
    match: Tensor, cls_preds: Tensor, max_iou: Tensor, ratio: float = 3.0, neg_thresh: float = 0.5, min_samples: int = 0
) -> Tensor:
    """Online hard example mining, per image (GluonCV's ``OHEMSampler``).

    Positives are the matched anchors. ``k = int(min(max(min_samples, ratio * #pos), A - #pos))`` negatives are
    taken among unmatched anchors with ``max_iou < neg_thresh``, the ones with the highest background loss first.
    Everything else is ignored (0). ``match Tensor[B,A]``, ``cls_preds Tensor[B,A,C+1]``, ``max_iou Tensor[B,A]``.
    """
    pos = match >= 0
    num_pos = pos.sum(dim=1, keepdim=True).to(torch.float32)
    total = float(match.shape[1])
    num_neg = torch.minimum(torch.clamp(ratio * num_pos, min=float(min_samples)), total - num_pos).floor()
    candidate = (~pos) & (max_iou < neg_thresh)
    score = torch.where(candidate, background_loss(cls_preds.detach()), float("-inf"))
    neg = candidate & _top_per_row(score, num_neg)
    zeros = torch.zeros(match.shape, dtype=torch.float32, device=match.device)
    return torch.where(pos, 1.0, torch.where(neg, -1.0, zeros))
