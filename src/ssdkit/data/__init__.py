"""Data sets, SSD transforms and batching.

Common sample format
--------------------
Every data set item is ``(image, target)``:

* ``image``: ``tv_tensors.Image`` uint8 ``Tensor[3, H, W]``, RGB (after a transform: float32).
* ``target``: a dict with

  ============== ============================================================================
  ``boxes``      ``tv_tensors.BoundingBoxes`` ``[G, 4]`` float32, XYXY, ``canvas_size=(H, W)``,
                 pixels, GluonCV's 0-based convention (VOC: XML value - 1; network width
                 ``x2 - x1``; the VOC metric adds +1)
  ``labels``     int64 ``Tensor[G]``, class ids ``0..num_classes-1`` (no background)
  ``difficult``  uint8 ``Tensor[G]``, 0/1 (VOC's flag; 0 elsewhere); kept and trained on
  ``image_id``   VOC ``"VOC2007/000005"``, COCO image id (int), synthetic index (int)
  ``path``       the image file (for error messages)
  ``orig_size``  ``(H, W)`` of the decoded image, kept through transforms
  ``bad_samples`` list of ``(path, reason)`` met while producing this item (``"skip"`` / ``"drop"``)
  ============== ============================================================================

  ``G`` may be 0. Data sets expose ``classes`` (tuple of names) and ``num_classes``.

Transforms (:mod:`ssdkit.data.transforms`) are ``torchvision.transforms.v2`` transforms on this
format (GluonCV's names and call convention in :mod:`ssdkit.data.transforms.presets.ssd`);
:func:`detection_collate` batches it into padded tensors; :mod:`ssdkit.data.errors` holds the bad-sample
policy (``on_bad_sample="skip" | "drop" | "error"``) and :class:`BadSampleLog`; :mod:`ssdkit.data.image_io` decodes
images, :mod:`ssdkit.data.sample` builds targets and :mod:`ssdkit.data.mixins` holds the data sets' mixins.
"""

from .coco import COCODetection
from .collate import TargetCollate, compute_ssd_targets, detection_collate, nonempty_batches
from .errors import BadSampleError, BadSampleLog, DroppedSample, NoValidSampleError, SkipBadSamples
from .synthetic import SHAPE_CLASSES, VAL_SEED_OFFSET, SyntheticShapes
from .transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    DivideBy255,
    RandomColorDistort,
    RandomExpand,
    RandomInterpolationResize,
    RandomIoUCrop,
    ResizeCV,
    SSDTrainTransform,
    SSDValTransform,
    random_crop_with_constraints,
)
from .voc import VOC_CLASSES, VOCDetection, VOCFolder

__all__ = [
    "BadSampleError",
    "BadSampleLog",
    "COCODetection",
    "DivideBy255",
    "DroppedSample",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "NoValidSampleError",
    "RandomColorDistort",
    "RandomExpand",
    "RandomInterpolationResize",
    "RandomIoUCrop",
    "ResizeCV",
    "SHAPE_CLASSES",
    "SSDTrainTransform",
    "SSDValTransform",
    "SkipBadSamples",
    "SyntheticShapes",
    "TargetCollate",
    "VAL_SEED_OFFSET",
    "VOCDetection",
    "VOCFolder",
    "VOC_CLASSES",
    "compute_ssd_targets",
    "detection_collate",
    "nonempty_batches",
    "random_crop_with_constraints",
]
