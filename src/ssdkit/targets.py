"""SSD training targets: matching + sampling + encoding (GluonCV's ``SSDTargetGenerator``).

Shape legend: B batch, A anchors, G ground truths per image (rows with id < 0 are padding), C foreground classes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .anchors import AnchorGrid
from .boxes import cxcywh_to_xyxy, grid_gt_anchor_iou, gt_anchor_iou, validate_gt
from .coder import MultiClassEncoder, NormalizedBoxCenterEncoder
from .constants import BOX_STDS, POSITIVE_WEIGHTS
from .matching import naive_samples, ohem_samples, ssd_match

__all__ = ["SSDTargetGenerator", "object_balanced_weights"]

_CHUNK_ELEMENTS = 1 << 21  # IoU entries per chunk of images on CPU (8 MiB of float32)


def object_balanced_weights(match: Tensor, num_objects: int | None = None) -> Tensor:
    """Weights of the positive anchors that give every matched object of an image the same total weight.

    ``match Tensor[B, A]`` (the matched ground truth's index, -1 for none) -> ``Tensor[B, A]`` float32: for a
    positive of object ``g`` in image ``i``, ``(N_i / G_i) / n_g``, where ``n_g`` counts the positives of ``g``,
    ``N_i`` those of the image and ``G_i`` its matched objects; 0 where ``match < 0``. ``num_objects``: G, the
    ground-truth rows that ``match`` indexes (None: found from ``match``, a host read). An image's weights sum to
    ``N_i``, so a loss normalized by the positives keeps its scale; only the share of each object changes: a large
    object matched by many anchors counts as much as a small one matched by two or three.
    """
    pos = match >= 0
    index = match.clamp(min=0)
    groups = max(1, num_objects if num_objects is not None else (int(index.max()) + 1 if index.numel() else 1))
    counts = torch.zeros(match.shape[0], groups, device=match.device).scatter_add_(1, index, pos.float())
    per_object = (pos.sum(dim=1, keepdim=True) / (counts > 0).sum(dim=1, keepdim=True).clamp(min=1)).float()
    weights = per_object / counts.gather(1, index).clamp(min=1.0)
    return torch.where(pos, weights, torch.zeros_like(weights))


class SSDTargetGenerator(nn.Module):
    """Build ``(cls_targets, box_targets, box_masks)`` for a padded batch of ground truths.

    Args:
        iou_thresh: max-IoU matching threshold (an anchor with IoU >= it is positive).
        neg_thresh: OHEM only: negatives must have max IoU below it.
        negative_mining_ratio: > 0 uses OHEM with that many negatives per positive (needs ``cls_preds``);
            <= 0 uses no sampling: every unmatched anchor is background (the training pipeline's setting).
        stds: box encoding standard deviations.
        validate: check the ground truths and raise ``ValueError`` on bad input (one host sync per call).
        positive_weights: the weights that ``return_weights=True`` gives the positives: ``"anchor"`` 1 each (the
            loss as GluonCV's), ``"object"`` :func:`object_balanced_weights`.

    Call: ``(anchors_cxcywh Tensor[A,4 or 1,A,4], cls_preds Tensor[B,A,C+1] | None, gt_boxes Tensor[B,G,4],
    gt_ids Tensor[B,G] or Tensor[B,G,1], anchor_grid=None)`` -> ``(cls_targets Tensor[B,A] int64: -1 ignore,
    0 background, k+1 class k; box_targets Tensor[B,A,4]; box_masks Tensor[B,A,4])``, and with
    ``return_weights=True`` also ``pos_weights Tensor[B,A]`` (see ``positive_weights``). With ``anchor_grid`` (the
    :class:`ssdkit.anchors.AnchorGrid` of the anchors, e.g. ``net.anchor_grid_for_input()``) the IoU is computed
    per layer as overlap widths x heights (:func:`ssdkit.boxes.grid_gt_anchor_iou`: bit-equal to the dense IoU,
    about a third of its work).
    """

    def __init__(
        self,
        iou_thresh: float = 0.5,
        neg_thresh: float = 0.5,
        negative_mining_ratio: float = 3,
        stds: Sequence[float] = BOX_STDS,
        num_classes: int | None = None,
        validate: bool = True,
        positive_weights: str = "anchor",
    ):
        super().__init__()
        if positive_weights not in POSITIVE_WEIGHTS:
            raise ValueError(f"positive_weights must be one of {POSITIVE_WEIGHTS}, got {positive_weights!r}")
        self.positive_weights = positive_weights
        self.box_encoder = NormalizedBoxCenterEncoder(stds)
        self.cls_encoder = MultiClassEncoder()
        self.iou_thresh, self.neg_thresh = iou_thresh, neg_thresh
        self.negative_mining_ratio = negative_mining_ratio
        self.num_classes = num_classes  # checked against the gt ids when validating
        self.validate = validate

    @property
    def use_negative_sampling(self) -> bool:
        return self.negative_mining_ratio > 0

    @torch.no_grad()
    def forward(
        self,
        anchors_cxcywh: Tensor,
        cls_preds: Tensor | None,
        gt_boxes: Tensor,
        gt_ids: Tensor,
        anchor_grid: AnchorGrid | None = None,
        return_weights: bool = False,
    ) -> tuple[Tensor, ...]:
        anchors_cxcywh = torch.as_tensor(anchors_cxcywh)
        gt_boxes = torch.as_tensor(gt_boxes)
        gt_ids = torch.as_tensor(gt_ids, device=gt_boxes.device)
        if anchors_cxcywh.shape[-1] != 4:
            raise ValueError(f"anchors must end in 4 coordinates, got shape {tuple(anchors_cxcywh.shape)}")
        anchors = anchors_cxcywh.reshape(-1, 4).float()
        if self.validate:
            gt_boxes, gt_ids = validate_gt(gt_boxes, gt_ids, self.num_classes)
        elif gt_ids.dim() == 3:
            gt_ids = gt_ids[..., 0]
        gt_boxes = gt_boxes.float().to(anchors.device)
        gt_ids = gt_ids.to(anchors.device)
        b = gt_boxes.shape[0]
        if self.use_negative_sampling:
            if cls_preds is None:
                raise ValueError("cls_preds is required when negative_mining_ratio > 0 (OHEM sampling)")
            if cls_preds.dim() != 3 or cls_preds.shape[:2] != (b, anchors.shape[0]):
                raise ValueError(
                    f"cls_preds must have shape [B={b}, A={anchors.shape[0]}, C+1], got {tuple(cls_preds.shape)}"
                )
        valid = gt_ids >= 0
        gt_boxes = torch.where(valid[..., None], gt_boxes, torch.zeros_like(gt_boxes))  # scrub padding values
        anchors_xyxy = cxcywh_to_xyxy(anchors)
        match, max_iou = self._match(anchors_xyxy, anchor_grid, gt_boxes, valid)
        if cls_preds is not None and self.use_negative_sampling:
            samples = ohem_samples(match, cls_preds, max_iou, self.negative_mining_ratio, self.neg_thresh)
        else:
            samples = naive_samples(match)
        ids = gt_ids.long() if gt_ids.shape[1] else torch.zeros(b, 1, dtype=torch.long, device=anchors.device)
        refs = gt_boxes if gt_boxes.shape[1] else torch.zeros(b, 1, 4, device=anchors.device)
        cls_targets = self.cls_encoder(samples, match, ids)
        box_targets, box_masks = self.box_encoder(samples, match, anchors_xyxy[None], refs)
        if not return_weights:
            return cls_targets, box_targets, box_masks
        positives = torch.where(samples > 0.5, match, torch.full_like(match, -1))
        if self.positive_weights == "object":
            weights = object_balanced_weights(positives, gt_boxes.shape[1])
        else:
            weights = (positives >= 0).float()
        return cls_targets, box_targets, box_masks, weights

    def _match(
        self, anchors_xyxy: Tensor, grid: AnchorGrid | None, gt_boxes: Tensor, valid: Tensor
    ) -> tuple[Tensor, Tensor]:
        """``(match, max_iou)``, each ``Tensor[B, A]``, computed a few images at a time: the ``Tensor[b, G, A]``
        IoU of a chunk stays small enough for the CPU caches, which makes its many passes faster."""
        b, g = valid.shape
        a = anchors_xyxy.shape[0]
        chunk = max(1, _CHUNK_ELEMENTS // max(1, g * a)) if anchors_xyxy.device.type == "cpu" else b
        out = []
        for i in range(0, b, chunk):
            boxes = gt_boxes[i : i + chunk]
            # [b, G, A]; padding rows (zero boxes) give 0
            if grid is not None:
                iou_ga = grid_gt_anchor_iou(boxes, anchors_xyxy, grid)
            else:
                iou_ga = gt_anchor_iou(boxes, anchors_xyxy)
            out.append(ssd_match(iou_ga, valid[i : i + chunk], self.iou_thresh))
        if len(out) == 1:
            return out[0]
        return torch.cat([m for m, _ in out]), torch.cat([v for _, v in out])
