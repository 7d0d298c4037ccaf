"""Detection metrics with GluonCV's semantics.

* :class:`VOC07MApMetric` / :class:`VOCMApMetric`: Pascal VOC mAP (11-point / area under the envelope),
  numerically equal to GluonCV including its order of tied scores;
* :class:`COCODetectionMetric`: COCO AP through pycocotools;
* :func:`format_ap_table` / :func:`metrics_to_dict`: per-class AP tables and JSON-ready dicts.
"""

from .coco import COCODetectionMetric
from .report import format_ap_table, metrics_to_dict
from .voc import VOC07MApMetric, VOCMApMetric

__all__ = ["COCODetectionMetric", "VOC07MApMetric", "VOCMApMetric", "format_ap_table", "metrics_to_dict"]
