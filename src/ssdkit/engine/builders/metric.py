"""The validation metric of a run."""

from __future__ import annotations

from ..config import TrainConfig

__all__ = ["build_metric", "metric_key"]


def metric_key(dataset: str) -> str:
    """The column name of the validation metric in ``metrics.csv``."""
    return "coco_ap" if dataset == "coco" else "voc07_map"


def build_metric(cfg: TrainConfig, classes: tuple[str, ...], val_set=None, data_shape: int | None = None):
    """VOC07 11-point mAP for VOC-style data (GluonCV's choice), COCO AP for COCO."""
    from ...metrics import COCODetectionMetric, VOC07MApMetric

    if cfg.dataset == "coco":
        return COCODetectionMetric(val_set, data_shape=(data_shape, data_shape))
    return VOC07MApMetric(iou_thresh=0.5, class_names=list(classes))
