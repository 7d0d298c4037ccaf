"""One evaluation pass: detections on a loader fed to a metric (what ``train`` runs every ``val_interval`` epochs)."""

from __future__ import annotations

from typing import Any

import torch

from ..boxes import clip_boxes_xyxy
from .progress import progress_bar

__all__ = ["evaluate"]


@torch.no_grad()
def evaluate(
    net, loader, metric, device: torch.device, bad_samples=None, progress: bool = False, decoder: str | None = None
) -> tuple[list[str], list[float]]:
    """Detect on every batch of ``loader`` and feed ``metric``; boxes are clipped to the input size as GluonCV's
    ``validate()``. ``decoder`` switches the class decoder for this evaluation only."""
    net.eval()
    metric.reset()
    old_decoder = net.postprocessor.decoder
    if decoder is not None:
        net.postprocessor.decoder = decoder
    try:
        for batch in progress_bar(loader, len(loader), "eval", progress):
            if bad_samples is not None:
                bad_samples.record_batch(batch)
            images = batch["images"].to(device, non_blocking=True)
            ids, scores, bboxes = net.detect(images)
            h, w = images.shape[-2:]
            bboxes = clip_boxes_xyxy(bboxes, w, h)
            metric.update(
                bboxes.cpu(),
                ids.cpu(),
                scores.cpu(),
                batch["gt_boxes"],
                batch["gt_ids"],
                batch["difficult"],
                **_metric_extras(metric, batch),
            )
    finally:
        net.postprocessor.decoder = old_decoder
    if bad_samples is not None and bad_samples.dropped:
        _score_read_images_only(metric)
    return metric.get()


def _score_read_images_only(metric) -> None:
    """The images left out as unreadable are not scored: the VOC metric sees only the ground truths of the batches,
    and the COCO one, which holds every image's annotations, is told to score the images it saw."""
    from ..metrics import COCODetectionMetric

    if isinstance(metric, COCODetectionMetric):
        metric.score_seen_only()


def _metric_extras(metric, batch) -> dict[str, Any]:
    from ..metrics import COCODetectionMetric

    if isinstance(metric, COCODetectionMetric):  # boxes go back to original pixels per image
        return {"image_ids": batch["image_ids"], "orig_sizes": batch["orig_sizes"]}
    return {}
