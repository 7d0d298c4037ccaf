"""Pascal VOC detection mAP (VOC07 11-point and area under the precision envelope), equal to GluonCV.

Shape legend: B images in a batch, N detections per image and M ground truths per image (both padded
with label -1), K valid detections of a batch, C classes (``num_classes`` excludes background).
Boxes are corners ``(x1, y1, x2, y2)`` in pixels. The metric uses the VOC integer convention: 1 is added
to ``x2`` and ``y2`` of every box before the IoU, so a box ``[0, 0, 9, 9]`` is 10 pixels wide.

Rules (GluonCV 0.10.5 ``VOCMApMetric``), per image and class:

1. rows with label < 0 are padding and ignored;
2. detections are visited in GluonCV's order: ``argsort(score)[::-1]`` of that image's detections of
   the class, with NumPy's legacy introsort (see below);
3. each detection takes the gt of its class with the largest IoU (first one on ties, difficult gts
   included); below ``iou_thresh`` it matches nothing (a false positive);
4. a detection matched to a difficult gt is ignored; the first detection to claim a non-difficult gt is
   a true positive, later ones are false positives (duplicates).

At :meth:`VOCMApMetric.get` the detections of each class are pooled over all images, sorted again the
same way, and turned into precision/recall; classes without non-difficult gts get AP nan and the mAP is
the nanmean over classes.

Tie order. GluonCV sorts with ``np.argsort`` (introsort, not stable), and with equal scores the visiting
order changes both the greedy matching and the precision curve. NumPy >= 1.25 sorts floats with SIMD
code on AVX-512/AVX2 machines, which orders ties differently from the NumPy 1.2x that GluonCV runs on.
:func:`legacy_argsort` therefore reproduces the permutation of NumPy 1.23's ``aquicksort`` exactly
(median-of-three quicksort, insertion sort below 17 items, heapsort past the depth limit). It only does
that work where the answer can differ: segments whose tied items are interchangeable are finished with a
stable sort.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["VOC07MApMetric", "VOCMApMetric", "legacy_argsort", "match_detections", "voc07_ap", "voc_ap"]


# ----------------------------------------------------------------------------------------------------
# NumPy 1.2x argsort (kind="quicksort") for 1-D arrays
# ----------------------------------------------------------------------------------------------------

_SMALL_QUICKSORT = 15  # segments with pr - pl <= 15 (at most 16 items) are insertion-sorted
_VECTOR_PARTITION_MIN = 128  # partition segments at least this long with NumPy, shorter ones in Python


def _stable_argsort(values: np.ndarray, descending: bool = False) -> np.ndarray:
    """``np.argsort(values, kind="stable")`` (``[::-1]`` of it when ``descending``) for 1-D ``values``.

    float32 values and non-negative integers below 2**32 are sorted as packed ``uint64`` keys
    (order-preserving bits << 32 | position) with ``np.sort``, several times faster than NumPy's
    indirect stable sort; other dtypes fall back to it.
    """
    v = np.asarray(values)
    n = v.size
    if n < 2:
        return np.arange(n, dtype=np.int64)
    if v.dtype == np.float32:
        bits = (v + np.float32(0)).view(np.uint32)  # + 0 turns -0.0 into +0.0, which compares equal
        primary = np.where(bits >> np.uint32(31), ~bits, bits | np.uint32(0x80000000))
    elif v.dtype.kind in "iub" and v.min() >= 0 and v.max() < 2 ** 16 and not descending:
        return np.argsort(v.astype(np.uint16), kind="stable")  # a radix sort
    elif v.dtype.kind in "iub" and n < 2 ** 32 and v.min() >= 0 and v.max() < 2 ** 32:
        primary = v.astype(np.uint32)
    else:
        order = np.argsort(v, kind="stable")
        return order[::-1].copy() if descending else order
    position = np.arange(n, dtype=np.uint64)
    if descending:  # reversed stable order: largest first, later position first among equals
        primary = ~primary
        position = position[::-1]
    keys = np.sort((primary.astype(np.uint64) << np.uint64(32)) | position)
    order = (keys & np.uint64(0xFFFFFFFF)).astype(np.int64)
    return (n - 1 - order) if descending else order


def legacy_argsort(values: Any, key: Any = None) -> np.ndarray:
    """``np.argsort(values)`` as NumPy 1.23 computes it (introsort), for a 1-D array without NaN.

    Args:
        values: ``[K]`` numbers.
        key: optional ``[K]`` labels. When given, items with equal values *and* equal keys are treated as
            interchangeable and may come out in any order among themselves (this is what makes the
            function fast: only tie groups whose members differ in ``key`` are tracked exactly).
    Returns:
        ``int64 [K]`` permutation.
    """
    v = np.asarray(values)
    if v.ndim != 1:
        raise ValueError(f"legacy_argsort: values must be 1-D, got shape {v.shape}")
    if v.dtype.kind == "f" and np.isnan(v).any():
        raise ValueError("legacy_argsort: values contain NaN")
    n = v.size
    stable = _stable_argsort(v)
    if n <= _SMALL_QUICKSORT + 1:  # pure insertion sort, which is stable
        return stable
    sorted_v = v[stable]
    tie_with_next = sorted_v[1:] == sorted_v[:-1]
    if not tie_with_next.any():
        return stable
    new_value = np.concatenate(([True], ~tie_with_next))
    rank_sorted = np.cumsum(new_value) - 1
    starts = np.flatnonzero(new_value)
    if key is None:
        tracked = np.diff(np.append(starts, n)) >= 2
    else:
        k = np.asarray(key).reshape(-1)
        if k.shape != v.shape:
            raise ValueError(f"legacy_argsort: key shape {k.shape} differs from values shape {v.shape}")
        k_sorted = k[stable]
        tracked = np.minimum.reduceat(k_sorted, starts) != np.maximum.reduceat(k_sorted, starts)
    if not tracked.any():
        return stable
    ranks = np.empty(n, dtype=np.int64)
    ranks[stable] = rank_sorted
    tags = np.where(tracked[ranks], ranks, -1)
    perm = np.arange(n, dtype=np.int64)
    _introsort(ranks, tags, perm)
    # Every segment left "to sort" (insertion-sort leaves and interchangeable segments) is sorted here in
    # one stable pass: segments are value-ordered among themselves, so this sorts each one in place.
    return perm[_stable_argsort(ranks[perm])]


def _introsort(ranks: np.ndarray, tags: np.ndarray, perm: np.ndarray) -> None:
    """Run NumPy 1.23's ``aquicksort_`` on ``perm`` (by ``ranks[perm]``) in place, partition by partition.

    Segments without two members of one tracked tie group are not followed further (nor pushed): their
    order is settled by the caller's final stable sort, as are NumPy's insertion-sorted leaves of at
    most 16 items (insertion sort is stable).
    """
    n = perm.size
    stack: list[tuple[int, int, int]] = []
    pl, pr = 0, n - 1
    cdepth = 2 * (n.bit_length() - 1)  # npy_get_msb(n) * 2
    while True:
        if cdepth < 0:
            _heapsort_segment(ranks, perm, pl, pr)
        else:
            while pr - pl > _SMALL_QUICKSORT:
                if pr - pl + 1 >= _VECTOR_PARTITION_MIN:
                    pi = _partition_numpy(ranks, perm, pl, pr)
                else:
                    pi = _partition_python(ranks, perm, pl, pr)
                cdepth -= 1
                t = tags[perm[pl:pr + 1]]
                left_open = _has_tracked_pair(t[:pi - pl])
                right_open = _has_tracked_pair(t[pi - pl + 1:])
                # NumPy keeps working on the smaller side and pushes the larger one.
                if pi - pl < pr - pi:
                    if right_open:
                        stack.append((pi + 1, pr, cdepth))
                    pr, still_open = pi - 1, left_open
                else:
                    if left_open:
                        stack.append((pl, pi - 1, cdepth))
                    pl, still_open = pi + 1, right_open
                if not still_open:
                    break
        if not stack:
            return
        pl, pr, cdepth = stack.pop()


def _has_tracked_pair(tags: np.ndarray) -> bool:
    """True when two of ``tags`` (>= 0 for members of tracked tie groups) name the same group."""
    t = tags[tags >= 0]
    if t.size < 2:
        return False
    t.sort()
    return bool((t[1:] == t[:-1]).any())


def _partition_python(ranks: np.ndarray, perm: np.ndarray, pl: int, pr: int) -> int:
    """One quicksort partition of ``perm[pl:pr + 1]`` item by item; returns the pivot's final index."""
    seg = perm[pl:pr + 1].tolist()
    val = ranks[seg].tolist()

    def swap(i: int, j: int) -> None:
        seg[i], seg[j] = seg[j], seg[i]
        val[i], val[j] = val[j], val[i]

    hi = pr - pl
    m = hi >> 1
    if val[m] < val[0]:
        swap(m, 0)
    if val[hi] < val[m]:
        swap(hi, m)
    if val[m] < val[0]:
        swap(m, 0)
    vp = val[m]
    i, j = 0, hi - 1
    swap(m, j)
    while True:
        i += 1
        while val[i] < vp:
            i += 1
        j -= 1
        while vp < val[j]:
            j -= 1
        if i >= j:
            break
        swap(i, j)
    swap(i, hi - 1)
    perm[pl:pr + 1] = seg
    return pl + i


def _partition_numpy(ranks: np.ndarray, perm: np.ndarray, pl: int, pr: int) -> int:
    """The same partition as :func:`_partition_python`, with the scan-and-swap loop vectorised.

    The left scan stops at the items ``>= pivot`` (positions ``ge``, ascending), the right scan at the
    items ``<= pivot`` (positions ``le``, descending); the k-th exchange swaps ``ge[k]`` and ``le[k]``
    until the scans cross at the first k with ``ge[k] >= le[k]``. The left scan then ends on
    ``min(ge[k], le[k - 1])`` (``le[k - 1]`` holds a swapped-in item ``>= pivot``).
    """
    seg = perm[pl:pr + 1]  # a view: swaps write through to perm
    val = ranks[seg]
    hi = pr - pl
    m = hi >> 1

    def swap(i: int, j: int) -> None:
        seg[i], seg[j] = seg[j], seg[i]
        val[i], val[j] = val[j], val[i]

    if val[m] < val[0]:
        swap(m, 0)
    if val[hi] < val[m]:
        swap(hi, m)
    if val[m] < val[0]:
        swap(m, 0)
    vp = val[m]
    swap(m, hi - 1)
    ge = np.flatnonzero(val[1:hi] >= vp) + 1
    le = np.flatnonzero(val[:hi - 1] <= vp)[::-1]
    k = min(ge.size, le.size)
    crossed = int(np.argmax(ge[:k] >= le[:k]))  # always exists: ge ends at hi - 1, le ends at 0
    if crossed:
        left, right = ge[:crossed], le[:crossed]
        moved = seg[left].copy()
        seg[left] = seg[right]
        seg[right] = moved
        pi = int(min(ge[crossed], le[crossed - 1]))
    else:
        pi = int(ge[0])
    seg[pi], seg[hi - 1] = seg[hi - 1], seg[pi]
    return pl + pi


def _heapsort_segment(ranks: np.ndarray, perm: np.ndarray, pl: int, pr: int) -> None:
    """NumPy's ``aheapsort_`` on ``perm[pl:pr + 1]`` (the introsort fallback); 1-based heap indices."""
    n = pr - pl + 1
    if n < 2:
        return
    heap = [0] + perm[pl:pr + 1].tolist()
    val = dict(zip(heap[1:], ranks[heap[1:]].tolist()))

    def sift(item: int, i: int, size: int) -> None:
        j = 2 * i
        while j <= size:
            if j < size and val[heap[j]] < val[heap[j + 1]]:
                j += 1
            if val[item] < val[heap[j]]:
                heap[i] = heap[j]
                i = j
                j += j
            else:
                break
        heap[i] = item

    for top in range(n >> 1, 0, -1):
        sift(heap[top], top, n)
    size = n
    while size > 1:
        item = heap[size]
        heap[size] = heap[1]
        size -= 1
        sift(item, 1, size)
    perm[pl:pr + 1] = heap[1:]


def _legacy_descending(scores: np.ndarray, key: Any = None) -> np.ndarray:
    """GluonCV's ``scores.argsort()[::-1]``."""
    return legacy_argsort(scores, key)[::-1]


# ----------------------------------------------------------------------------------------------------
# Inputs
# ----------------------------------------------------------------------------------------------------

def _to_numpy(x: Any, name: str) -> np.ndarray:
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch.Tensor
        return x.detach().cpu().numpy()
    if hasattr(x, "asnumpy"):  # an MXNet NDArray
        return x.asnumpy()
    try:
        return np.asarray(x)
    except Exception as err:  # pragma: no cover - exotic inputs
        raise ValueError(f"{name}: cannot convert {type(x).__name__} to an array") from err


def _per_image(x: Any, structure: list[int], name: str) -> list[np.ndarray]:
    """Split a list/tuple argument into per-image arrays, following the boxes' ``structure``.

    ``structure[i]`` is the number of images in list element ``i``; 0 means "element i is one image".
    """
    if not isinstance(x, (list, tuple)):
        raise ValueError(f"{name}: expected a list like the boxes argument, got {type(x).__name__}")
    if len(x) != len(structure):
        raise ValueError(f"{name}: list has {len(x)} elements, the boxes list has {len(structure)}")
    out: list[np.ndarray] = []
    for item, count in zip(x, structure):
        a = _to_numpy(item, name)
        if count:
            if a.ndim < 1 or a.shape[0] != count:
                raise ValueError(f"{name}: a batched element has shape {a.shape}, expected {count} images")
            out.extend(a.reshape(count, -1))
        else:
            out.append(a.reshape(-1))
    return out


def _stack_padded(rows: Sequence[np.ndarray], width: int, fill: float, name: str) -> np.ndarray:
    """Stack per-image ``[n_i * width]`` arrays into ``[B, max n_i, width]`` padded with ``fill``."""
    if not rows:
        return np.zeros((0, 0, width))
    dtype = np.result_type(*[r.dtype for r in rows])
    if dtype == np.bool_ or fill < 0:
        dtype = np.result_type(dtype, np.int8)  # room for the -1 padding of unsigned labels
    counts = []
    for r in rows:
        if r.size % width:
            raise ValueError(f"{name}: an image has {r.size} values, not a multiple of {width}")
        counts.append(r.size // width)
    out = np.full((len(rows), max(counts, default=0), width), fill, dtype=dtype)
    for i, (r, c) in enumerate(zip(rows, counts)):
        out[i, :c] = r.reshape(c, width)
    return out


def _batch(boxes: Any, labels: Any, extra: Any, name: str, extra_fill: float
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Normalise ``boxes``/``labels``/``extra`` (scores or difficult flags) to ``[B, N, 4]``, ``[B, N]``."""
    if isinstance(boxes, (list, tuple)):
        arrays = [_to_numpy(b, f"{name}_bboxes") for b in boxes]
        structure = [a.shape[0] if a.ndim == 3 else 0 for a in arrays]
        box_rows: list[np.ndarray] = []
        for a, count in zip(arrays, structure):
            box_rows.extend(a.reshape(count, -1) if count else [a.reshape(-1)])
        box_arr = _stack_padded(box_rows, 4, 0, f"{name}_bboxes")
        lab_rows = _per_image(labels, structure, f"{name}_labels")
        for i, (bx, lb) in enumerate(zip(box_rows, lab_rows)):
            if bx.size != 4 * lb.size:
                raise ValueError(f"image {i}: {name}_bboxes has {bx.size / 4:g} boxes but {name}_labels "
                                 f"has {lb.size} labels")
        lab_arr = _stack_padded(lab_rows, 1, -1, f"{name}_labels")[..., 0]
        ext_arr = None
        if extra is not None:
            ext_rows = _per_image(extra, structure, f"{name} scores/difficults")
            ext_arr = _stack_padded(ext_rows, 1, extra_fill, f"{name} scores/difficults")[..., 0]
    else:
        box_arr = _to_numpy(boxes, f"{name}_bboxes")
        if box_arr.ndim != 3 or box_arr.shape[-1] != 4:
            raise ValueError(f"{name}_bboxes must have shape [B, N, 4] (or be a list of per-image [N, 4]), "
                             f"got {box_arr.shape}")
        lab_arr = _to_numpy(labels, f"{name}_labels")
        ext_arr = None if extra is None else _to_numpy(extra, f"{name} scores/difficults")
    b, n = box_arr.shape[:2]
    lab_arr = _check_rows(lab_arr, b, n, f"{name}_labels")
    if ext_arr is not None:
        ext_arr = _check_rows(ext_arr, b, n, f"{name} scores/difficults")
    return box_arr, lab_arr, ext_arr


def _check_rows(a: np.ndarray, b: int, n: int, name: str) -> np.ndarray:
    if a.shape[:1] != (b,) or a.size != b * n or (a.ndim == 3 and a.shape[-1] != 1) or a.ndim > 3:
        raise ValueError(f"{name} must have shape [{b}, {n}] or [{b}, {n}, 1] to match the boxes, got {a.shape}")
    return a.reshape(b, n)


# ----------------------------------------------------------------------------------------------------
# Matching (one batch) and AP
# ----------------------------------------------------------------------------------------------------

def match_detections(pred_bboxes: np.ndarray, pred_labels: np.ndarray, pred_scores: np.ndarray,
                     gt_bboxes: np.ndarray, gt_labels: np.ndarray, gt_difficults: np.ndarray | None,
                     iou_thresh: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Classify every valid detection of a batch as TP (1), FP (0) or ignored (-1), GluonCV's way.

    Args: ``pred_bboxes [B, N, 4]``, ``pred_labels [B, N]``, ``pred_scores [B, N]``, ``gt_bboxes [B, M, 4]``,
        ``gt_labels [B, M]``, ``gt_difficults [B, M]`` or None; label < 0 marks padding.
    Returns:
        ``(labels int64 [K], scores [K], matches int8 [K], n_pos int64 [C'])``: the valid detections in
        GluonCV's visiting order (image, class, per-image score order) and the number of non-difficult
        gts per class (``C'`` = largest gt label + 1).
    """
    b, m = gt_labels.shape
    gt_valid = gt_labels >= 0
    gt_cls = np.where(gt_valid, gt_labels, -1).astype(np.int64)  # padding gts get class -1
    gt_hard = np.zeros((b, m), dtype=bool) if gt_difficults is None else gt_difficults != 0
    n_pos = np.bincount(gt_cls[gt_valid & ~gt_hard], minlength=int(gt_cls.max(initial=-1)) + 1)

    img, col = np.nonzero(pred_labels >= 0)
    labels = pred_labels[img, col].astype(np.int64)
    scores = pred_scores[img, col]
    order = _visiting_order(img, labels, scores)
    img, col, labels, scores = img[order], col[order], labels[order], scores[order]
    k = labels.size
    matches = np.zeros(k, dtype=np.int8)

    # Candidate pairs (detection, gt of the same image and class). Detections are sorted by
    # (image, class) and so are the gts (column order kept), so the pairs of one detection are contiguous
    # and list its gts in GluonCV's order.
    stride = max(int(labels.max(initial=0)), int(gt_cls.max(initial=0))) + 1
    g_img, g_col = np.nonzero(gt_valid)
    g_key = g_img * stride + gt_cls[g_img, g_col]
    by_key = _stable_argsort(g_key)
    g_img, g_col, g_key = g_img[by_key], g_col[by_key], g_key[by_key]
    p_key = img * stride + labels
    first_gt = np.searchsorted(g_key, p_key, side="left")
    count = np.searchsorted(g_key, p_key, side="right") - first_gt
    num_pairs = int(count.sum())
    if num_pairs == 0:
        return labels, scores, matches, n_pos
    pair_det = np.repeat(np.arange(k), count)
    pair_start = np.cumsum(count) - count
    pair_gt = np.repeat(first_gt - pair_start, count) + np.arange(num_pairs)  # index into the sorted gts

    # IoU with the +1 convention and exactly GluonCV's arithmetic: same dtype, same operations in the
    # same order (its np.prod over two numbers is one multiplication).
    p = pred_bboxes[img[pair_det], col[pair_det]]
    g = gt_bboxes[g_img[pair_gt], g_col[pair_gt]]
    px1, py1, px2, py2 = p[:, 0], p[:, 1], p[:, 2] + 1, p[:, 3] + 1
    gx1, gy1, gx2, gy2 = g[:, 0], g[:, 1], g[:, 2] + 1, g[:, 3] + 1
    left, top = np.maximum(px1, gx1), np.maximum(py1, gy1)
    right, bottom = np.minimum(px2, gx2), np.minimum(py2, gy2)
    area_i = (right - left) * (bottom - top) * ((left < right) & (top < bottom))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        iou = area_i / ((px2 - px1) * (py2 - py1) + (gx2 - gx1) * (gy2 - gy1) - area_i)

    # Per detection: the first gt with the largest IoU (np.argmax semantics, NaN counting as largest).
    has_pair = count > 0
    starts = pair_start[has_pair]
    best_iou = np.maximum.reduceat(iou, starts)  # propagates NaN like np.max
    best_rep = np.repeat(best_iou, count[has_pair])
    is_best = (iou == best_rep) | (np.isnan(iou) & np.isnan(best_rep))
    best_pair = np.minimum.reduceat(np.where(is_best, np.arange(num_pairs), num_pairs), starts)
    det = np.flatnonzero(has_pair)
    hit = ~(best_iou < iou_thresh)
    det, gt_index = det[hit], pair_gt[best_pair[hit]]
    hard = gt_hard[g_img[gt_index], g_col[gt_index]]
    matches[det[hard]] = -1
    det, gt_index = det[~hard], gt_index[~hard]
    _, first = np.unique(gt_index, return_index=True)  # detections in visiting order: first claim wins
    matches[det[first]] = 1
    return labels, scores, matches, n_pos


def _visiting_order(img: np.ndarray, labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Order of ``[K]`` valid detections (listed image by image, column by column) in which GluonCV
    visits them: by image, then class, then ``argsort(score)[::-1]`` within the image's class.

    NumPy insertion-sorts (stably) at most 16 items, so within a group the order is score descending,
    later column first on ties. Groups of more than 16 with tied scores are re-sorted by introsort.
    """
    k = labels.size
    by_score = _stable_argsort(scores, descending=True)
    group = img.astype(np.int64) * (int(labels.max(initial=0)) + 1) + labels
    order = by_score[_stable_argsort(group[by_score])]
    counts = np.bincount(group) if k else np.zeros(0, np.int64)
    if k == 0 or counts.max() <= _SMALL_QUICKSORT + 1:
        return order
    sorted_group = group[order]
    for g in np.flatnonzero(counts > _SMALL_QUICKSORT + 1):
        s, e = np.searchsorted(sorted_group, [g, g + 1])
        members = np.sort(order[s:e])  # listing order, as GluonCV's boolean mask keeps it
        member_scores = scores[members]
        ascending = np.sort(member_scores)
        if (ascending[1:] == ascending[:-1]).any():
            order[s:e] = members[_legacy_descending(member_scores)]
    return order


def voc07_ap(rec: np.ndarray | None, prec: np.ndarray | None) -> float:
    """VOC2007 11-point AP: mean over t in {0, 0.1, ..., 1} of the best precision at recall >= t."""
    if rec is None or prec is None:
        return float("nan")
    prec = np.nan_to_num(prec)
    best_after = np.maximum.accumulate(prec[::-1])[::-1] if prec.size else prec
    ap = 0.0
    for t in np.arange(0.0, 1.1, 0.1):  # GluonCV's thresholds, float rounding included
        i = int(np.searchsorted(rec, t, side="left"))  # rec is non-decreasing
        p = best_after[i] if i < rec.size else 0
        ap += p / 11.0
    return float(ap)


def voc_ap(rec: np.ndarray | None, prec: np.ndarray | None) -> float:
    """VOC2010+ AP: area under the monotone (right-to-left running max) precision envelope."""
    if rec is None or prec is None:
        return float("nan")
    mrec = np.concatenate(([0.0], rec, [1.0]))
    mpre = np.concatenate(([0.0], np.nan_to_num(prec), [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    i = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


# ----------------------------------------------------------------------------------------------------
# Metric classes
# ----------------------------------------------------------------------------------------------------

class VOCMApMetric:
    """Pascal VOC mAP with GluonCV semantics (area under the precision envelope, VOC2010+ style).

    Args:
        iou_thresh: IoU at or above which a detection matches a gt (0.5).
        class_names: optional class names; they name the per-class values and fix the class count
            (labels outside ``range(len(class_names))`` are then an error).

    ``get()`` returns ``(names, values)``: one AP per class (nan for classes without non-difficult gts)
    and ``"mAP"`` last. Without ``class_names`` the classes are named ``"0"``, ``"1"``... up to the largest
    label seen (GluonCV returns a single ``("VOCMeanAP", mAP)`` pair in that case).
    """

    def __init__(self, iou_thresh: float = 0.5, class_names: Sequence[str] | None = None) -> None:
        if not isinstance(iou_thresh, (int, float)) or not 0.0 <= float(iou_thresh) <= 1.0:
            raise ValueError(f"iou_thresh must be a number in [0, 1], got {iou_thresh!r}")
        if class_names is not None:
            if not isinstance(class_names, (list, tuple)) or not all(isinstance(c, str) for c in class_names):
                raise ValueError("class_names must be a list or tuple of str")
            class_names = list(class_names)
        self.iou_thresh = float(iou_thresh)
        self.class_names = class_names
        self.reset()

    def reset(self) -> None:
        """Forget all updates."""
        self._labels: list[np.ndarray] = []
        self._scores: list[np.ndarray] = []
        self._matches: list[np.ndarray] = []
        self._n_pos = np.zeros(0, dtype=np.int64)
        self._num_seen = 0  # largest label seen (pred or gt) + 1

    def update(self, pred_bboxes: Any, pred_labels: Any, pred_scores: Any,
               gt_bboxes: Any, gt_labels: Any, gt_difficults: Any = None) -> None:
        """Add a batch of detections and ground truths.

        Args:
            pred_bboxes: ``[B, N, 4]`` corners (torch tensor or numpy array), or a list of per-image
                ``[N_i, 4]`` arrays (or of batched ``[B_i, N, 4]`` arrays); the other arguments follow the
                same layout.
            pred_labels: ``[B, N]`` or ``[B, N, 1]`` class ids, rows with id < 0 are ignored.
            pred_scores: ``[B, N]`` or ``[B, N, 1]``.
            gt_bboxes: ``[B, M, 4]`` corners.
            gt_labels: ``[B, M]`` or ``[B, M, 1]``, rows with id < 0 are ignored.
            gt_difficults: ``[B, M]`` or ``[B, M, 1]`` flags (non-zero = difficult), or None.
        """
        p_box, p_lab, p_score = _batch(pred_bboxes, pred_labels, pred_scores, "pred", 0)
        g_box, g_lab, g_diff = _batch(gt_bboxes, gt_labels, gt_difficults, "gt", 0)
        if p_box.shape[0] != g_box.shape[0]:
            raise ValueError(f"predictions cover {p_box.shape[0]} images but ground truths {g_box.shape[0]}")
        if p_score.dtype.kind not in "fc":
            p_score = p_score.astype(np.float64)
        valid = p_lab >= 0
        if np.isnan(p_score[valid]).any():
            raise ValueError("pred_scores contains NaN for a non-padding detection")
        self._check_labels(p_lab[valid], "pred_labels")
        self._check_labels(g_lab[g_lab >= 0], "gt_labels")
        labels, scores, matches, n_pos = match_detections(
            p_box, p_lab, p_score, g_box, g_lab, g_diff, self.iou_thresh)
        if n_pos.size > self._n_pos.size:
            n_pos[: self._n_pos.size] += self._n_pos
            self._n_pos = n_pos
        else:
            self._n_pos[: n_pos.size] += n_pos
        if labels.size:
            self._num_seen = max(self._num_seen, int(labels.max()) + 1)
        self._num_seen = max(self._num_seen, n_pos.size)
        self._labels.append(labels)
        self._scores.append(scores)
        self._matches.append(matches)

    def _check_labels(self, labels: np.ndarray, name: str) -> None:
        if self.class_names is not None and labels.size and labels.astype(np.int64).max() >= len(self.class_names):
            raise ValueError(f"{name} has class id {int(labels.max())}, but class_names lists only "
                             f"{len(self.class_names)} classes")

    def _average_precision(self, rec: np.ndarray | None, prec: np.ndarray | None) -> float:
        return voc_ap(rec, prec)

    def recall_precision(self) -> tuple[list[np.ndarray | None], list[np.ndarray | None]]:
        """Per class ``(recall [D_c], precision [D_c])`` over the pooled, score-sorted detections.

        Recall is None for classes without non-difficult gts (their AP is nan).
        """
        num = len(self.class_names) if self.class_names is not None else self._num_seen
        labels = np.concatenate(self._labels) if self._labels else np.zeros(0, np.int64)
        scores = np.concatenate(self._scores) if self._scores else np.zeros(0)
        matches = np.concatenate(self._matches) if self._matches else np.zeros(0, np.int8)
        by_class = _stable_argsort(labels)  # keeps update order within a class
        bounds = np.searchsorted(labels[by_class], np.arange(num + 1))
        recs: list[np.ndarray | None] = []
        precs: list[np.ndarray | None] = []
        for c in range(num):
            idx = by_class[bounds[c]:bounds[c + 1]]
            match = matches[idx]
            # Where ignored (-1) detections sit among equal scores cannot change the AP (they repeat the
            # previous precision/recall point), so only ties between a TP and an FP are tracked exactly.
            match = match[_legacy_descending(scores[idx], key=match == 1)]
            tp = np.cumsum(match == 1)
            fp = np.cumsum(match == 0)
            with np.errstate(divide="ignore", invalid="ignore"):
                precs.append(tp / (fp + tp))
            n_pos = int(self._n_pos[c]) if c < self._n_pos.size else 0
            recs.append(tp / n_pos if n_pos > 0 else None)
        return recs, precs

    def get(self) -> tuple[list[str], list[float]]:
        """Return ``(names, values)``: per-class AP then ``("mAP", nanmean of the class APs)``."""
        recs, precs = self.recall_precision()
        aps = [self._average_precision(r, p) for r, p in zip(recs, precs)]
        names = list(self.class_names) if self.class_names is not None else [str(c) for c in range(len(aps))]
        aps_arr = np.asarray(aps, dtype=np.float64)
        mean_ap = float(np.nanmean(aps_arr)) if np.isfinite(aps_arr).any() else float("nan")
        return names + ["mAP"], aps + [mean_ap]


class VOC07MApMetric(VOCMApMetric):
    """Pascal VOC2007 mAP: as :class:`VOCMApMetric` with the 11-point interpolated AP."""

    def _average_precision(self, rec: np.ndarray | None, prec: np.ndarray | None) -> float:
        return voc07_ap(rec, prec)
