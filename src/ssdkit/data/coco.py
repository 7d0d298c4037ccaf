"""MS COCO detection data set (GluonCV's ``COCODetection`` semantics).

Shape legend: G ground-truth boxes of one image.

* Contiguous class ids ``0..C-1`` follow the category-id order of the JSON; class names come
  from the JSON (so COCO-format data sets with other categories work too; GluonCV insists on the
  80 COCO names).
* Boxes, as GluonCV: ``(x, y, w, h)`` -> ``x2 = x + max(w - 1, 0)``, ``y2 = y + max(h - 1, 0)``,
  clipped to ``[0, W - 1] x [0, H - 1]``; kept when ``area > 0`` and ``x2 > x1`` and ``y2 > y1``.
* ``use_crowd=True`` trains on crowd boxes; ``min_object_area`` drops smaller objects; objects
  with ``ignore == 1`` are dropped.
* ``skip_empty=True`` (training) drops images without a valid box; with ``skip_empty=False`` such
  an image yields zero boxes (GluonCV puts a dummy ``[-1] * 5`` row instead; the collate pads with
  -1, so batches look the same).

Bad samples (see :mod:`ssdkit.data.errors`): a missing image (GluonCV raises ``IOError``), an image entry without a
size, a box with NaN/inf or negative width/height, a box entirely outside its image, or an unknown category id
is reported with the image file name (the box or image is dropped under ``"skip"``). Boxes that
GluonCV's ``w - 1`` convention turns degenerate (``w <= 1``) are dropped silently, as GluonCV does.
"""

from __future__ import annotations

import contextlib
import io
import os
from typing import Any, Callable, Sequence

import numpy as np
import torch

from .errors import AnnotationReporter, BadSampleError, BadSampleLog, check_policy
from .image_io import read_image
from .mixins import PolicyLoading
from .sample import make_target

__all__ = ["COCODetection", "coco_xywh_to_xyxy"]


def coco_xywh_to_xyxy(boxes_xywh: np.ndarray, width: float, height: float) -> tuple[np.ndarray, np.ndarray]:
    """GluonCV's COCO conversion of ``[N, 4]`` ``(x, y, w, h)`` -> ``(boxes_xyxy [N, 4], valid [N])``.

    ``x2 = x + max(w - 1, 0)``, clip to ``[0, W - 1] x [0, H - 1]``, valid when ``x2 > x1`` and
    ``y2 > y1`` (the caller also requires ``area > 0``).
    """
    b = np.asarray(boxes_xywh, dtype=np.float64).reshape(-1, 4)
    xyxy = np.concatenate([b[:, :2], b[:, :2] + np.maximum(b[:, 2:4] - 1, 0)], axis=1)
    xyxy[:, 0::2] = np.minimum(width - 1, np.maximum(0, xyxy[:, 0::2]))
    xyxy[:, 1::2] = np.minimum(height - 1, np.maximum(0, xyxy[:, 1::2]))
    valid = (xyxy[:, 2] > xyxy[:, 0]) & (xyxy[:, 3] > xyxy[:, 1])
    return xyxy, valid


def _load_coco(ann_path: str):
    from pycocotools.coco import COCO

    if not os.path.isfile(ann_path):
        raise FileNotFoundError(f"COCO annotation file not found: {ann_path}")
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
            return COCO(ann_path)
    except Exception as err:
        raise ValueError(f"{ann_path}: cannot read COCO annotations ({type(err).__name__}: {err})") from None


class COCODetection(PolicyLoading, torch.utils.data.Dataset):
    """COCO-format detection data set.

    ``root/annotations/<split>.json`` for each of ``splits`` (or one ``ann_file``). Images are found
    as GluonCV does, from the last two parts of ``coco_url`` under ``root`` (``root/val2017/x.jpg``);
    without ``coco_url``, under ``image_dir`` (relative to ``root`` unless absolute; default: the
    split name without ``instances_``). Items are ``(image, target)`` in the common format of
    :mod:`ssdkit.data`; ``target["image_id"]`` is the COCO image id.

    Attributes for the COCO metric: ``coco`` (the pycocotools ``COCO`` object, single JSON only),
    ``image_ids`` (COCO ids in item order), ``contiguous_id_to_json`` / ``json_id_to_contiguous``.
    """

    def __init__(
        self,
        root: str,
        splits: str | Sequence[str] = ("instances_val2017",),
        transform: Callable | None = None,
        skip_empty: bool = True,
        use_crowd: bool = True,
        min_object_area: float = 0,
        ann_file: str | None = None,
        image_dir: str | None = None,
        on_bad_sample: str = "skip",
    ):
        self.root = os.path.expanduser(str(root))
        self.transform = transform
        self.skip_empty = skip_empty
        self.use_crowd = use_crowd
        self.min_object_area = min_object_area
        self.on_bad_sample = check_policy(on_bad_sample)
        self.bad_sample_log = BadSampleLog()
        self._known_bad: set[int] = set()
        if ann_file is not None:
            sources = [(os.path.expanduser(str(ann_file)), None)]
        else:
            splits = [splits] if isinstance(splits, str) else list(splits)
            if not splits:
                raise ValueError("splits is empty")
            sources = [(os.path.join(self.root, "annotations", s + ".json"), s) for s in splits]
        self.json_id_to_contiguous: dict[int, int] | None = None
        self.contiguous_id_to_json: dict[int, int] | None = None
        self._classes: tuple[str, ...] = ()
        self._cocos = []
        # item: (coco image id, path, (H, W), boxes float32 [G, 4], labels int64 [G])
        self._items: list[tuple[int, str, tuple[int, int], np.ndarray, np.ndarray]] = []
        reporter = AnnotationReporter(self.on_bad_sample, self.bad_sample_log)
        for ann_path, split in sources:
            self._load_json(ann_path, split, image_dir, reporter)

    # --- construction --------------------------------------------------------------------------
    def _load_json(self, ann_path: str, split: str | None, image_dir: str | None, reporter: AnnotationReporter) -> None:
        coco = _load_coco(ann_path)
        self._cocos.append(coco)
        cat_ids = sorted(coco.getCatIds())
        if not cat_ids:
            raise ValueError(f"{ann_path}: no categories")
        classes = tuple(coco.cats[c]["name"] for c in cat_ids)
        mapping = {cid: k for k, cid in enumerate(cat_ids)}
        if self.json_id_to_contiguous is None:
            self.json_id_to_contiguous = mapping
            self.contiguous_id_to_json = {k: cid for cid, k in mapping.items()}
            self._classes = classes
        elif mapping != self.json_id_to_contiguous or classes != self._classes:
            raise ValueError(f"{ann_path}: categories differ from the first annotation file")
        if image_dir is None and split is not None:
            image_dir = split[len("instances_") :] if split.startswith("instances_") else split
        for entry in coco.loadImgs(sorted(coco.getImgIds())):
            path = self._image_path(entry, image_dir)
            if not os.path.isfile(path):
                reporter.report(path, f"image file not found (image id {entry['id']} in {ann_path})")
                continue
            try:
                width, height = int(entry["width"]), int(entry["height"])
                if width <= 0 or height <= 0:
                    raise ValueError
            except (KeyError, TypeError, ValueError):
                reporter.report(path, f"image entry {entry['id']} in {ann_path} has no valid width/height")
                continue
            boxes, labels = self._entry_boxes(coco, entry, width, height, path, reporter)
            if len(boxes) == 0 and self.skip_empty:
                continue
            self._items.append((entry["id"], path, (height, width), boxes, labels))

    def _image_path(self, entry: dict, image_dir: str | None) -> str:
        file_name = entry.get("file_name", "")
        if image_dir is not None and file_name:
            base = image_dir if os.path.isabs(image_dir) else os.path.join(self.root, image_dir)
            return os.path.join(base, file_name)
        if entry.get("coco_url"):
            dirname, filename = entry["coco_url"].split("/")[-2:]
            return os.path.join(self.root, dirname, filename)
        return os.path.join(self.root, file_name)

    def _entry_boxes(
        self, coco, entry: dict, width: int, height: int, path: str, reporter: AnnotationReporter
    ) -> tuple[np.ndarray, np.ndarray]:
        objs = coco.loadAnns(coco.getAnnIds(imgIds=[entry["id"]], iscrowd=None))
        objs = [
            o
            for o in objs
            if o.get("area", 0) >= self.min_object_area
            and o.get("ignore", 0) != 1
            and (self.use_crowd or not o.get("iscrowd", 0))
        ]
        empty = (np.zeros((0, 4), np.float32), np.zeros((0,), np.int64))
        if not objs:
            return empty
        good = []
        for o in objs:
            bbox, cat = o.get("bbox"), o.get("category_id")
            what = f"annotation {o.get('id')} (image id {entry['id']})"
            try:
                x, y, w, h = (float(v) for v in bbox)
            except (TypeError, ValueError):
                reporter.report(path, f"{what}: bbox {bbox!r} is not four numbers")
                continue
            if not all(np.isfinite((x, y, w, h))):
                reporter.report(path, f"{what}: bbox {bbox!r} has NaN or infinite values")
            elif w < 0 or h < 0:
                reporter.report(path, f"{what}: bbox {bbox!r} has a negative width or height")
            elif x > width - 1 or y > height - 1 or x + max(w - 1, 0) < 0 or y + max(h - 1, 0) < 0:
                reporter.report(path, f"{what}: bbox {bbox!r} lies entirely outside the {width}x{height} image")
            elif cat not in self.json_id_to_contiguous:
                reporter.report(path, f"{what}: unknown category id {cat!r}")
            else:
                good.append((x, y, w, h, float(o.get("area", 0)), self.json_id_to_contiguous[cat]))
        if not good:
            return empty
        arr = np.asarray(good, dtype=np.float64)
        xyxy, valid = coco_xywh_to_xyxy(arr[:, :4], width, height)
        valid &= arr[:, 4] > 0
        return xyxy[valid].astype(np.float32), arr[valid, 5].astype(np.int64)

    # --- public attributes ---------------------------------------------------------------------
    @property
    def coco(self):
        """The pycocotools ``COCO`` object (for the COCO metric); one annotation file only."""
        if len(self._cocos) != 1:
            raise ValueError(f"coco is defined for one annotation file, this data set has {len(self._cocos)}")
        return self._cocos[0]

    @property
    def image_ids(self) -> list[int]:
        return [item[0] for item in self._items]

    @property
    def image_paths(self) -> list[str]:
        return [item[1] for item in self._items]

    def __len__(self) -> int:
        return len(self._items)

    # --- loading -------------------------------------------------------------------------------
    def load_raw(self, index: int) -> tuple[Any, dict]:
        """``(image, target)`` of item ``index`` before the transform; raises BadSampleError."""
        image_id, path, (height, width), boxes, labels = self._items[index]
        image = read_image(path)
        h, w = image.shape[-2:]
        if (h, w) != (height, width):
            raise BadSampleError(path, f"image is {w}x{h} pixels but its COCO entry says {width}x{height}")
        target = make_target(
            boxes,
            labels,
            np.zeros(len(labels), np.uint8),
            h,
            w,
            image_id=image_id,
            path=path,
            orig_size=(int(h), int(w)),
        )
        return image, target

    def __repr__(self) -> str:
        return (
            f"COCODetection({len(self)} images, {self.num_classes} classes, "
            f"{len(self.bad_sample_log)} bad-sample report(s))"
        )
