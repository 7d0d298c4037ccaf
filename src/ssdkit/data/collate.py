"""Batching of detection samples: stack images, pad per-image boxes with -1.

Shape legend: B batch, G the most boxes of any image in the batch (at least 1), A anchors.

``detection_collate`` turns a list of ``(image, target)`` (the common format of :mod:`ssdkit.data`,
after a transform that gives every image the same size) into a dict:

=============== ======================= ==========================================================
key             value                   notes
=============== ======================= ==========================================================
``images``      ``Tensor[B, 3, H, W]``  stacked as they are (float after the SSD transforms)
``gt_boxes``    ``Tensor[B, G, 4]``     float32 corners, padding rows ``-1``
``gt_ids``      ``Tensor[B, G]``        int64 class ids, padding ``-1``
``difficult``   ``Tensor[B, G]``        int64 0/1, padding ``-1`` (GluonCV pads its label column)
``num_boxes``   ``Tensor[B]``           int64, real boxes per image
``image_ids``   ``list``                ``target["image_id"]`` (None when absent)
``paths``       ``list[str | None]``
``orig_sizes``  ``Tensor[B, 2]``        ``(H, W)`` before the transform (``-1`` when unknown)
``bad_samples`` ``list[(path, reason)]`` problems met while producing the batch (see errors.py)
``dropped``     ``int``                 items left out: the :class:`DroppedSample` of policy ``"drop"``
=============== ======================= ==========================================================

An image without boxes gives a row of -1, as GluonCV's ``Pad(pad_val=-1)``. A batch whose items were all
dropped has ``B = 0`` (``images`` ``Tensor[0, 3, 0, 0]``); :func:`nonempty_batches` passes over such batches.

``TargetCollate`` additionally runs the SSD target generator on the whole batch (in DataLoader
workers when ``num_workers > 0``), as GluonCV's train transform does when given anchors.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from .errors import DroppedSample, none_readable

if TYPE_CHECKING:
    from ..anchors import AnchorGrid

__all__ = ["detection_collate", "nonempty_batches", "TargetCollate", "compute_ssd_targets"]


def _plain(t: Tensor) -> Tensor:
    return t.as_subclass(Tensor) if isinstance(t, Tensor) else torch.as_tensor(t)


def detection_collate(batch: Sequence[tuple[Any, dict] | DroppedSample]) -> dict[str, Any]:
    """Collate ``[(image Tensor[3, H, W], target dict), ...]`` into the dict described above; a
    :class:`DroppedSample` is left out, its problems kept in ``bad_samples``."""
    if len(batch) == 0:
        raise ValueError("detection_collate got an empty batch")
    lost = [p for sample in batch if isinstance(sample, DroppedSample) for p in sample.problems]
    kept = [sample for sample in batch if not isinstance(sample, DroppedSample)]
    out = _collate_kept(kept) if kept else _empty_batch()
    out["bad_samples"] = lost + out["bad_samples"]
    out["dropped"] = len(batch) - len(kept)
    return out


def _empty_batch() -> dict[str, Any]:
    """The batch of no image (every item was dropped), with the keys and ranks of any other batch."""
    return {
        "images": torch.zeros(0, 3, 0, 0),
        "gt_boxes": torch.full((0, 1, 4), -1.0),
        "gt_ids": torch.full((0, 1), -1, dtype=torch.int64),
        "difficult": torch.full((0, 1), -1, dtype=torch.int64),
        "num_boxes": torch.zeros(0, dtype=torch.int64),
        "image_ids": [],
        "paths": [],
        "orig_sizes": torch.zeros(0, 2, dtype=torch.int64),
        "bad_samples": [],
    }


def _collate_kept(batch: Sequence[tuple[Any, dict]]) -> dict[str, Any]:
    images, targets = [], []
    for k, sample in enumerate(batch):
        if not (isinstance(sample, (tuple, list)) and len(sample) == 2 and isinstance(sample[1], dict)):
            raise ValueError(f"batch item {k} is not an (image, target dict) pair: {type(sample).__name__}")
        images.append(_plain(sample[0]))
        targets.append(sample[1])
    shapes = {tuple(img.shape) for img in images}
    if len(shapes) != 1:
        raise ValueError(
            f"images in a batch must share one shape, got {sorted(shapes)}; "
            "use a transform that resizes (e.g. SSDTrainTransform / SSDValTransform)"
        )
    bsz = len(batch)
    counts = []
    for k, t in enumerate(targets):
        boxes = t.get("boxes")
        if boxes is None:
            raise ValueError(f"batch item {k} has no 'boxes' in its target")
        if _plain(boxes).reshape(-1, 4).shape[0] != _plain(t["labels"]).reshape(-1).shape[0]:
            raise ValueError(f"batch item {k} ({t.get('path')}): boxes and labels differ in length")
        counts.append(_plain(boxes).reshape(-1, 4).shape[0])
    g = max(max(counts), 1)
    gt_boxes = torch.full((bsz, g, 4), -1.0, dtype=torch.float32)
    gt_ids = torch.full((bsz, g), -1, dtype=torch.int64)
    difficult = torch.full((bsz, g), -1, dtype=torch.int64)
    for k, (t, n) in enumerate(zip(targets, counts)):
        if n:
            gt_boxes[k, :n] = _plain(t["boxes"]).reshape(-1, 4).to(torch.float32)
            gt_ids[k, :n] = _plain(t["labels"]).reshape(-1).to(torch.int64)
            if "difficult" in t:
                difficult[k, :n] = _plain(t["difficult"]).reshape(-1).to(torch.int64)
            else:
                difficult[k, :n] = 0
    orig_sizes = torch.tensor([list(t.get("orig_size", (-1, -1))) for t in targets], dtype=torch.int64)
    return {
        "images": torch.stack(images),
        "gt_boxes": gt_boxes,
        "gt_ids": gt_ids,
        "difficult": difficult,
        "num_boxes": torch.tensor(counts, dtype=torch.int64),
        "image_ids": [t.get("image_id") for t in targets],
        "paths": [t.get("path") for t in targets],
        "orig_sizes": orig_sizes.reshape(bsz, 2),
        "bad_samples": [tuple(p) for t in targets for p in t.get("bad_samples", ())],
    }


def nonempty_batches(batches: Iterable[dict[str, Any]], share: bool = False) -> Iterator[dict[str, Any]]:
    """The batches of ``batches`` (from :func:`detection_collate`) that hold an image, in order; the
    ``bad_samples`` and ``dropped`` count of a batch whose items were all dropped go with a neighbour, so a
    :class:`~ssdkit.data.errors.BadSampleLog` fed by ``record_batch`` still sees them. Each batch is passed on
    once the next batch with an image (or the end) is reached. Raises
    :class:`~ssdkit.data.errors.NoValidSampleError` when no batch holds an image; with ``share`` (one process's
    share of a split, whose other shares may hold images) it yields one batch without images that carries them
    instead."""
    held: dict[str, Any] | None = None
    empty: dict[str, Any] | None = None
    problems: list[tuple[str, str]] = []
    dropped = 0
    for batch in batches:
        if len(batch["images"]) == 0:
            problems += batch["bad_samples"]
            dropped += batch["dropped"]
            empty = batch
            continue
        if held is not None:
            yield _with_dropped(held, problems, dropped)
            problems, dropped = [], 0
        held = batch
    if held is None:
        if not dropped:  # no batch at all: an empty loader is its owner's business, not a bad sample
            return
        if share and empty is not None:
            yield {**empty, "bad_samples": problems, "dropped": dropped}
            return
        raise none_readable(dropped, problems)
    yield _with_dropped(held, problems, dropped)


def _with_dropped(batch: dict[str, Any], problems: list[tuple[str, str]], dropped: int) -> dict[str, Any]:
    batch["bad_samples"] = list(batch.get("bad_samples", ())) + problems
    batch["dropped"] = batch.get("dropped", 0) + dropped
    return batch


def compute_ssd_targets(
    target_generator: Callable,
    anchors_cxcywh: Tensor,
    gt_boxes: Tensor,
    gt_ids: Tensor,
    anchor_grid: AnchorGrid | None = None,
    with_weights: bool = False,
) -> tuple[Tensor, ...]:
    """Run ``target_generator(anchors, None, gt_boxes, gt_ids)``; return ``(cls_targets, box_targets)``, and with
    ``with_weights`` also the positives' weights ``Tensor[B, A]`` (the generator's ``return_weights=True``).

    ``anchors_cxcywh`` ``Tensor[1, A, 4]``; ``gt_boxes`` ``Tensor[B, G, 4]``; ``gt_ids`` ``Tensor[B, G]``
    (-1 rows are padding) -> ``cls_targets Tensor[B, A]``, ``box_targets Tensor[B, A, 4]``. ``anchor_grid``
    (the anchors' :class:`ssdkit.anchors.AnchorGrid`) is passed on as a keyword when given. The one place that
    knows the generator's calling convention.
    """
    if anchors_cxcywh.dim() == 2:
        anchors_cxcywh = anchors_cxcywh.unsqueeze(0)
    extra: dict[str, Any] = {} if anchor_grid is None else {"anchor_grid": anchor_grid}
    if with_weights:
        extra["return_weights"] = True
    with torch.no_grad():
        out = target_generator(
            anchors_cxcywh, None, gt_boxes.to(anchors_cxcywh.dtype), gt_ids.to(anchors_cxcywh.dtype), **extra
        )
    return (out[0], out[1], out[3]) if with_weights else (out[0], out[1])


class TargetCollate:
    """``detection_collate`` plus ``cls_targets Tensor[B, A]`` and ``box_targets Tensor[B, A, 4]``, and
    ``pos_weights Tensor[B, A]`` when the generator weighs positives otherwise than 1 each (its
    ``positive_weights`` is not ``"anchor"``).

    ``target_generator`` defaults to ``ssdkit.targets.SSDTargetGenerator(negative_mining_ratio=-1)``
    (GluonCV's train transform: every unmatched anchor is background; hard negatives are mined in
    the loss). Pass it as ``collate_fn`` to a DataLoader so the targets are computed in workers.
    ``anchor_grid`` (the anchors' :class:`ssdkit.anchors.AnchorGrid`, e.g. ``net.anchor_grid_for_input()``)
    lets the generator compute the IoU separably; without it the dense IoU gives the same targets.
    ``other_sizes`` maps further input sizes ``(H, W)`` to their ``(anchors_cxcywh, anchor_grid)``: a batch's
    images choose the anchors (e.g. smaller training images in the first epochs); any other size gets
    ``anchors_cxcywh``.
    """

    def __init__(
        self,
        anchors_cxcywh: Tensor,
        target_generator: Callable | None = None,
        collate_fn: Callable = detection_collate,
        anchor_grid: AnchorGrid | None = None,
        other_sizes: dict[tuple[int, int], tuple[Tensor, AnchorGrid | None]] | None = None,
    ):
        if target_generator is None:
            from ssdkit.targets import SSDTargetGenerator

            target_generator = SSDTargetGenerator(negative_mining_ratio=-1)
        self.anchors_cxcywh, self.anchor_grid = _checked_anchors(anchors_cxcywh, anchor_grid)
        self.other_sizes = {(int(h), int(w)): _checked_anchors(*pair) for (h, w), pair in (other_sizes or {}).items()}
        self.target_generator = target_generator
        self.collate_fn = collate_fn

    def __call__(self, batch: Sequence[tuple[Any, dict]]) -> dict[str, Any]:
        out = self.collate_fn(batch)
        anchors, grid = self.anchors_cxcywh, self.anchor_grid
        if self.other_sizes and out["images"].shape[0]:
            size = (int(out["images"].shape[-2]), int(out["images"].shape[-1]))
            anchors, grid = self.other_sizes.get(size, (anchors, grid))
        weighted = getattr(self.target_generator, "positive_weights", "anchor") != "anchor"
        targets = compute_ssd_targets(
            self.target_generator, anchors, out["gt_boxes"], out["gt_ids"], grid, with_weights=weighted
        )
        out["cls_targets"], out["box_targets"] = targets[0], targets[1]
        if weighted:
            out["pos_weights"] = targets[2]
        return out


def _checked_anchors(anchors_cxcywh: Tensor, anchor_grid: AnchorGrid | None) -> tuple[Tensor, AnchorGrid | None]:
    anchors = torch.as_tensor(anchors_cxcywh).detach().to("cpu", torch.float32)
    if anchors.dim() == 2:
        anchors = anchors.unsqueeze(0)
    if anchors.dim() != 3 or anchors.shape[0] != 1 or anchors.shape[-1] != 4:
        raise ValueError(f"anchors_cxcywh must be Tensor[1, A, 4] or [A, 4], got {tuple(anchors.shape)}")
    if anchor_grid is not None and anchor_grid.num_anchors != anchors.shape[1]:
        raise ValueError(
            f"anchor_grid describes {anchor_grid.num_anchors} anchors, anchors_cxcywh has {anchors.shape[1]}"
        )
    return anchors, anchor_grid
