"""One evaluation pass: detections on a loader fed to a metric (what ``train`` runs every ``val_interval`` epochs),
in one process or split over a run's processes."""

from __future__ import annotations

from typing import Any

import torch

from ..boxes import clip_boxes_xyxy
from ..data.errors import none_readable
from .config import ConfigError
from .progress import progress_bar

__all__ = ["evaluate", "evaluate_shared"]


@torch.no_grad()
def evaluate(
    net, loader, metric, device: torch.device, bad_samples=None, progress: bool = False, decoder: str | None = None
) -> tuple[list[str], list[float]]:
    """Detect on every batch of ``loader`` and feed ``metric``; boxes are clipped to the input size as GluonCV's
    ``validate()``. ``decoder`` switches the class decoder for this evaluation only."""
    metric.reset()
    for args, extras in _detections(net, loader, metric, device, bad_samples, progress, decoder):
        metric.update(*args, **extras)
    if bad_samples is not None and bad_samples.dropped:
        _score_read_images_only(metric)
    return metric.get()


@torch.no_grad()
def evaluate_shared(
    net, loader, metric, device: torch.device, bad_samples=None, progress: bool = False
) -> tuple[list[str], list[float]] | None:
    """:func:`evaluate` split over the processes of a run (a collective: every rank calls it), each detecting on its
    :class:`~.sampler.EvalShard` of the batches in ``loader``; rank 0 feeds the metric every batch in the order of
    one process alone and returns the result, the others return None. The other ranks take rank 0's batch-norm
    statistics first (they train without ever using their own), so every batch is seen by the same model and the
    metric is the one that rank 0 alone would compute. Not distributed: :func:`evaluate`."""
    from .distributed import gather_objects, is_distributed

    if not is_distributed():
        return evaluate(net, loader, metric, device, bad_samples, progress)
    import torch.distributed as dist

    from .sampler import EvalShard

    share = getattr(loader, "batch_sampler", None)
    if not isinstance(share, EvalShard) or (share.rank, share.world) != (dist.get_rank(), dist.get_world_size()):
        # every rank would score every image, and rank 0 count each one world times
        raise ValueError(
            "evaluate_shared needs each rank's share of the batches: a loader whose batch_sampler is "
            "EvalShard(len(dataset), batch_size, rank, world) (build_loader(..., train=False, shard=(rank, world)))"
        )
    for buffer in net.buffers():
        dist.broadcast(buffer, src=0)
    unread: list[dict[str, Any]] = []
    mine = list(_detections(net, loader, metric, device, bad_samples, progress, unread=unread))
    logged = bool(bad_samples is not None and bad_samples.dropped)
    shares = gather_objects((mine, unread, logged))
    if not any(batches for batches, _, _ in shares) and any(carried for _, carried, _ in shares):
        # every rank raises alike, as SplitLoader does for one process: a split without a readable image
        carried = [c for _, rank_carried, _ in shares for c in rank_carried]
        err = none_readable(sum(c["dropped"] for c in carried), [p for c in carried for p in c["bad_samples"]])
        raise ConfigError(f"{getattr(loader, 'split', 'the evaluation split')}: {err}")
    if dist.get_rank() != 0:
        return None
    metric.reset()
    for k in range(max(len(batches) for batches, _, _ in shares)):
        for batches, _, _ in shares:  # batch k of rank r is batch k * world + r of the whole
            if k < len(batches):
                args, extras = batches[k]
                metric.update(*args, **extras)
    if any(flag for _, _, flag in shares):
        _score_read_images_only(metric)
    return metric.get()


def _detections(
    net, loader, metric, device: torch.device, bad_samples, progress: bool, decoder: str | None = None, unread=None
):
    """Per batch of ``loader`` that holds images, the arguments of ``metric.update`` (CPU tensors): ``(args,
    extras)``. A batch without images (a process's share with none readable) only feeds ``bad_samples``, and is
    added to the list ``unread`` when given."""
    net.eval()
    old_decoder = net.postprocessor.decoder
    if decoder is not None:
        net.postprocessor.decoder = decoder
    try:
        for batch in progress_bar(loader, len(loader), "eval", progress):
            if bad_samples is not None:
                bad_samples.record_batch(batch)
            if len(batch["images"]) == 0:
                if unread is not None:
                    unread.append({"bad_samples": batch["bad_samples"], "dropped": batch["dropped"]})
                continue
            images = batch["images"].to(device, non_blocking=True)
            ids, scores, bboxes = net.detect(images)
            h, w = images.shape[-2:]
            bboxes = clip_boxes_xyxy(bboxes, w, h)
            args = (bboxes.cpu(), ids.cpu(), scores.cpu(), batch["gt_boxes"], batch["gt_ids"], batch["difficult"])
            yield args, _metric_extras(metric, batch)
    finally:
        net.postprocessor.decoder = old_decoder


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
