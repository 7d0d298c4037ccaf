"""SSD multibox loss with hard-negative mining (GluonCV's ``SSDMultiBoxLoss``) and the seed's tip 1.

Shape legend: B batch, A anchors, C foreground classes.

``normalization="batch"`` divides every image's loss by the positives of the whole batch (summed over all
processes when ``torch.distributed`` is initialized), as GluonCV's training does; ``"sample"`` divides each image
by its own positive count, as the seed tutorial prints it. Both clamp the count at 1.

The two scales differ: summed over a batch of ``B`` images, batch-wise values give one loss of the size of an
image's loss, sample-wise values ``B`` of them. :meth:`SSDMultiBoxLoss.batch_loss` puts both on one scale: the
sum of the batch-wise values, the *mean* of the sample-wise ones over the images of the global batch. With
``n`` positives in every image the two are then equal (``sum_i L_i / (B n) = mean_i L_i / n``), and so are their
gradients; with unequal counts ``n_i`` (``N = sum_i n_i``) batch-wise weighs image ``i``'s loss ``L_i`` by
``1 / N`` and sample-wise by ``1 / (B n_i)``: images with fewer positives than the batch's mean ``N / B`` count
more, those with more count less.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["SSDMultiBoxLoss", "hard_negative_mask", "global_positive_count", "global_image_count"]

_NORMALIZATIONS = ("batch", "sample")


def global_positive_count(num_pos: Tensor) -> Tensor:
    """Sum of positives over the batch and, under ``torch.distributed``, over every process (``Tensor[]``)."""
    total = num_pos.sum().to(torch.float32)
    if dist.is_available() and dist.is_initialized():
        total = total.clone()
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total


def global_image_count(per_image: Tensor) -> Tensor:
    """Images of the global batch: ``per_image.shape[0]`` summed over every process under ``torch.distributed``
    (``Tensor[]``, float32, on ``per_image``'s device). Exact also when the processes hold different counts."""
    total = torch.tensor(float(per_image.shape[0]), device=per_image.device)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total


def hard_negative_mask(ce: Tensor, pos: Tensor, candidates: Tensor, ratio: float, min_negatives: int) -> Tensor:
    """Per image, the ``max(min_negatives, ratio * #pos)`` candidates with the highest cross-entropy.

    ``ce Tensor[B,A]`` (background loss of each anchor), ``pos``/``candidates`` ``Tensor[B,A]`` bool.
    Returns ``Tensor[B,A]`` bool. Ties keep anchor order (stable sort).
    """
    k = torch.clamp(pos.sum(dim=1, keepdim=True).to(ce.dtype) * ratio, min=float(min_negatives))
    score = torch.where(candidates, ce.detach(), torch.full_like(ce, float("-inf")))
    order = score.argsort(dim=1, descending=True, stable=True)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(ce.shape[1], device=ce.device).expand_as(order))
    return candidates & (rank < k)


class SSDMultiBoxLoss(nn.Module):
    """Softmax cross-entropy on positives + mined hard negatives, smooth-L1 (Huber, ``rho``) on positives.

    Call: ``(cls_preds Tensor[B,A,C+1], box_preds Tensor[B,A,4], cls_targets Tensor[B,A] (-1 ignore, 0
    background, k+1 class k), box_targets Tensor[B,A,4], pos_weights Tensor[B,A] | None)`` -> ``(sum_loss,
    cls_loss, box_loss)``, each ``Tensor[B]``: per-image values already divided by the normalizer.
    :meth:`batch_loss` turns them into the loss to minimise (the same scale for both normalizations).
    ``pos_weights`` scale each positive's cross-entropy and box loss (None: 1 each, as GluonCV); the normalizer
    still counts the positives, so weights that sum to an image's positives (e.g.
    :func:`ssdkit.targets.object_balanced_weights`) keep the loss's scale. Hard negatives are mined as without
    them.
    Anchors whose target is ``ignore_label`` (-1) are neither positives nor negative candidates. GluonCV's
    loss instead reads a -1 target as background (``pick`` in clip mode) and mines it like any negative; pass
    ``ignore_label=None`` for that behaviour. The two agree whenever the targets hold no -1, as in the training
    pipeline, whose target generator does no sampling.
    """

    def __init__(
        self,
        negative_mining_ratio: float = 3,
        rho: float = 1.0,
        lambd: float = 1.0,
        min_hard_negatives: int = 0,
        normalization: str = "batch",
        ignore_label: int | None = -1,
    ):
        super().__init__()
        if normalization not in _NORMALIZATIONS:
            raise ValueError(f"normalization must be one of {_NORMALIZATIONS}, got {normalization!r}")
        if rho <= 0:
            raise ValueError(f"rho must be positive, got {rho}")
        self.negative_mining_ratio = negative_mining_ratio
        self.rho = rho
        self.lambd = lambd
        self.min_hard_negatives = int(min_hard_negatives)
        self.normalization = normalization
        self.ignore_label = ignore_label

    def forward(
        self,
        cls_preds: Tensor,
        box_preds: Tensor,
        cls_targets: Tensor,
        box_targets: Tensor,
        pos_weights: Tensor | None = None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        if cls_preds.dim() != 3:
            raise ValueError(f"cls_preds must be Tensor[B, A, C+1], got shape {tuple(cls_preds.shape)}")
        b, a, _ = cls_preds.shape
        if cls_targets.shape != (b, a):
            raise ValueError(f"cls_targets must be Tensor[{b}, {a}], got shape {tuple(cls_targets.shape)}")
        if box_preds.shape != (b, a, 4) or box_targets.shape != (b, a, 4):
            raise ValueError(
                f"box_preds and box_targets must be Tensor[{b}, {a}, 4], got "
                f"{tuple(box_preds.shape)} and {tuple(box_targets.shape)}"
            )
        if pos_weights is not None and pos_weights.shape != (b, a):
            raise ValueError(f"pos_weights must be Tensor[{b}, {a}], got shape {tuple(pos_weights.shape)}")
        targets = cls_targets.long()
        # the softmax runs over dim 1 of a [B, C+1, A] copy: PyTorch's CPU kernel is several times slower over a
        # short last dim (C+1 = 7 on the synthetic set)
        log_probs = F.log_softmax(cls_preds.float().transpose(1, 2).contiguous(), dim=1)
        try:  # the CPU kernel checks the ids without a host read of the targets; CUDA's does not check them
            ce = -log_probs.gather(1, targets.clamp(min=0)[:, None])[:, 0]  # [B, A]
        except RuntimeError as err:
            raise ValueError(
                f"cls_targets has a class id >= {cls_preds.shape[2]} (the number of class logits)"
            ) from err
        pos = targets > 0
        candidates = ~pos if self.ignore_label is None else (~pos & (targets != self.ignore_label))
        hard_neg = hard_negative_mask(ce, pos, candidates, self.negative_mining_ratio, self.min_hard_negatives)
        zero = torch.zeros_like(ce)
        if pos_weights is None:
            weight = pos
            cls_sum = torch.where(pos | hard_neg, ce, zero).sum(dim=1)
        else:
            weight = torch.where(pos, pos_weights.float(), zero)
            cls_sum = torch.where(pos, ce * weight, torch.where(hard_neg, ce, zero)).sum(dim=1)

        diff = (box_preds.float() - box_targets.float()).abs()
        huber = torch.where(diff > self.rho, diff - 0.5 * self.rho, (0.5 / self.rho) * diff.square())
        box_sum = (huber * weight[..., None]).sum(dim=(1, 2))

        num_pos = pos.sum(dim=1)
        if self.normalization == "batch":
            norm = global_positive_count(num_pos).clamp(min=1.0)
        else:
            norm = num_pos.to(torch.float32).clamp(min=1.0)
        cls_loss = cls_sum / norm
        box_loss = box_sum / norm
        return cls_loss + self.lambd * box_loss, cls_loss, box_loss

    def batch_loss(self, *per_image: Tensor) -> tuple[Tensor, ...]:
        """This process's share of the global batch's loss for each ``Tensor[B]`` of per-image values (``Tensor[]``
        each): their sum for ``"batch"`` normalization, their sum divided by the images of the global batch
        (:func:`global_image_count`) for ``"sample"``, so that summing the shares of all processes gives the sum,
        resp. the mean, over the global batch. See the module docstring for why the two differ."""
        if self.normalization == "batch":
            return tuple(v.sum() for v in per_image)
        images = global_image_count(per_image[0])
        return tuple(v.sum() / images for v in per_image)
