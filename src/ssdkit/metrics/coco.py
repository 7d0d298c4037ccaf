"""COCO bbox AP through pycocotools, with GluonCV's ``COCODetectionMetric`` conventions.

Shape legend: B images in a batch, N detections per image (padded with label -1).

Conventions (GluonCV 0.10.5):

* predictions are assigned to the data set's images in sorted image-id order, batch after batch, unless
  ``image_ids`` are given;
* with ``data_shape=(height, width)`` the boxes are in network-input pixels and are scaled by
  ``(orig_w / width, orig_h / height)`` back to the original image; without it they are already in
  original pixels;
* detections with score < ``score_thresh`` (0.05) or a class outside the id map are dropped;
* corners become COCO ``[x, y, w, h]`` with GluonCV's +1 extent: ``w = x2 - (x1 - 1)``;
* ``COCOeval(..., "bbox")`` runs with its defaults (10 IoU thresholds, 100 detections per image); its
  printing is captured in :attr:`COCODetectionMetric.summary`.
"""

from __future__ import annotations

import contextlib
import copy
import io
import os
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .voc import _batch, _to_numpy

__all__ = ["COCODetectionMetric"]


def _quiet(fn, *args, **kwargs):
    """Call ``fn`` with pycocotools' progress prints captured."""
    with contextlib.redirect_stdout(io.StringIO()):
        return fn(*args, **kwargs)


def _load_coco(path: str | os.PathLike):
    from pycocotools.coco import COCO

    if not os.path.isfile(path):
        raise ValueError(f"COCO annotation file not found: {path}")
    return _quiet(COCO, os.fspath(path))


class COCODetectionMetric:
    """COCO AP (AP@[.50:.95], AP50, AP75, small/medium/large and per class) of detections.

    Args:
        dataset_or_coco: a data set with ``.coco`` (a ``pycocotools.coco.COCO``) and
            ``.contiguous_id_to_json`` (list or dict: contiguous class id -> COCO category id, optional
            ``.classes``), a ``COCO`` object, or the path of an annotation json.
        data_shape: ``(height, width)`` (or one int for a square) of the network input the boxes are
            expressed in, or None when boxes are already in original image pixels.
        score_thresh: detections scoring below it are dropped (GluonCV: 0.05).
        contiguous_id_to_json: overrides the data set's id map; default for a bare ``COCO``: its sorted
            category ids.
        class_names: names for the per-class APs; default: the data set's ``classes`` or the COCO
            category names.
    """

    def __init__(
        self,
        dataset_or_coco: Any,
        data_shape: Sequence[int] | None = None,
        score_thresh: float = 0.05,
        *,
        contiguous_id_to_json: Sequence[int] | Mapping[int, int] | None = None,
        class_names: Sequence[str] | None = None,
    ) -> None:
        source = dataset_or_coco
        if isinstance(source, (str, os.PathLike)):
            coco = _load_coco(source)
        elif hasattr(source, "coco"):
            coco = source.coco
            if contiguous_id_to_json is None:
                contiguous_id_to_json = getattr(source, "contiguous_id_to_json", None)
            if class_names is None:
                class_names = getattr(source, "classes", None)
        elif hasattr(source, "getImgIds") and hasattr(source, "loadRes"):
            coco = source
        else:
            raise ValueError(
                "dataset_or_coco must be a data set with a .coco attribute, a pycocotools COCO "
                f"object or an annotation json path, got {type(source).__name__}"
            )
        self.coco = coco
        cat_ids = sorted(coco.getCatIds())
        if contiguous_id_to_json is None:
            contiguous_id_to_json = cat_ids
        if isinstance(contiguous_id_to_json, Mapping):
            id_map = {int(k): int(v) for k, v in contiguous_id_to_json.items()}
        else:
            id_map = {i: int(v) for i, v in enumerate(contiguous_id_to_json)}
        unknown = sorted(set(id_map.values()) - set(cat_ids))
        if unknown:
            raise ValueError(f"contiguous_id_to_json maps to category ids {unknown} that the COCO annotations lack")
        self.contiguous_id_to_json = id_map
        if class_names is None:
            class_names = [coco.loadCats(id_map[k])[0]["name"] for k in sorted(id_map)]
        class_names = list(class_names)
        if len(class_names) != len(id_map):
            raise ValueError(f"{len(class_names)} class names for {len(id_map)} mapped classes")
        self.class_names = class_names
        if isinstance(data_shape, (int, np.integer)):
            data_shape = (int(data_shape), int(data_shape))
        if data_shape is not None:
            if len(data_shape) != 2 or min(data_shape) <= 0:
                raise ValueError(f"data_shape must be (height, width) with positive sizes, got {data_shape!r}")
            data_shape = (int(data_shape[0]), int(data_shape[1]))
        self.data_shape = data_shape
        self.score_thresh = float(score_thresh)
        self._img_ids = sorted(coco.getImgIds())
        self.coco_eval = None
        self.summary = ""
        self.reset()

    def reset(self) -> None:
        """Forget all updates."""
        self._results: list[dict] = []
        self._current = 0
        self._seen: set[int] = set()
        self._seen_only = False

    def score_seen_only(self) -> list[int]:
        """Until :meth:`reset`, score only the images that got an update, for a caller that left images out of its
        batches on purpose (unreadable ones): their objects would otherwise count as missed. Returns the ids of the
        annotated images left out, in sorted order."""
        self._seen_only = True
        return [i for i in self._img_ids if i not in self._seen]

    def update(
        self,
        pred_bboxes: Any,
        pred_labels: Any,
        pred_scores: Any,
        *args: Any,
        image_ids: Sequence[int] | None = None,
        orig_sizes: Any = None,
        **kwargs: Any,
    ) -> None:
        """Record a batch of detections.

        Args:
            pred_bboxes: ``[B, N, 4]`` corners (or a list of per-image ``[N_i, 4]``).
            pred_labels: ``[B, N]`` or ``[B, N, 1]`` contiguous class ids, -1 for padding.
            pred_scores: ``[B, N]`` or ``[B, N, 1]``.
            *args, **kwargs: ignored (ground truths, as GluonCV's signature allows).
            image_ids: the COCO image ids of the batch; default: the next ``B`` ids in sorted order.
            orig_sizes: ``[B, 2]`` original ``(height, width)`` (rows of -1: unknown); default: from the
                annotations. Only used with ``data_shape``.
        """
        boxes, labels, scores = _batch(pred_bboxes, pred_labels, pred_scores, "pred", 0)
        assert scores is not None  # _batch returns the scores it was given
        b = boxes.shape[0]
        if image_ids is None:
            if self._current + b > len(self._img_ids):
                raise ValueError(
                    f"update: {self._current + b} images recorded but the data set has "
                    f"{len(self._img_ids)}; pass image_ids explicitly"
                )
            ids = self._img_ids[self._current : self._current + b]
        else:
            ids = [int(i) for i in _to_numpy(image_ids, "image_ids").reshape(-1)]
            if len(ids) != b:
                raise ValueError(f"image_ids has {len(ids)} ids for a batch of {b} images")
            missing = [i for i in ids if i not in self.coco.imgs]
            if missing:
                raise ValueError(f"image_ids {missing[:5]} are not in the COCO annotations")
        self._current += b
        self._seen.update(ids)
        scale = self._scales(ids, orig_sizes)  # [B, 2] (x, y)
        for i, img_id in enumerate(ids):
            self._results.extend(self._image_results(img_id, boxes[i], labels[i], scores[i], scale[i]))

    def _scales(self, ids: list[int], orig_sizes: Any) -> np.ndarray:
        if self.data_shape is None:
            return np.ones((len(ids), 2))
        hw: list[Any] = [(self.coco.imgs[i]["height"], self.coco.imgs[i]["width"]) for i in ids]
        if orig_sizes is not None:
            given = _to_numpy(orig_sizes, "orig_sizes").reshape(-1, 2).tolist()
            if len(given) != len(ids):
                raise ValueError(f"orig_sizes has {len(given)} rows for a batch of {len(ids)} images")
            hw = [g if min(g) > 0 else a for g, a in zip(given, hw)]  # -1 marks an unknown size
        height, width = self.data_shape
        return np.array([[float(w) / width, float(h) / height] for h, w in hw], dtype=np.float64)

    def _image_results(
        self, img_id: int, boxes: np.ndarray, labels: np.ndarray, scores: np.ndarray, scale: np.ndarray
    ) -> list[dict]:
        """COCO result dicts of one image: ``boxes [N, 4]``, ``labels [N]``, ``scores [N]``."""
        valid = labels >= 0
        lab = labels[valid].astype(np.int64)
        box = boxes[valid].astype(np.float64)
        score = scores[valid].astype(np.float64)
        known = np.isin(lab, np.fromiter(self.contiguous_id_to_json, dtype=np.int64))
        keep = known & ~(score < self.score_thresh)
        lab, box, score = lab[keep], box[keep], score[keep]
        box[:, [0, 2]] *= scale[0]
        box[:, [1, 3]] *= scale[1]
        box[:, 2:4] -= box[:, :2] - 1  # w = x2 - (x1 - 1), as GluonCV
        return [
            {"image_id": int(img_id), "category_id": self.contiguous_id_to_json[int(c)], "bbox": bb, "score": sc}
            for c, bb, sc in zip(lab.tolist(), box.tolist(), score.tolist())
        ]

    def _evaluate(self):
        from pycocotools.cocoeval import COCOeval

        gt = self.coco
        if self._results:
            dt = _quiet(gt.loadRes, [dict(r) for r in self._results])
        else:  # pycocotools cannot load an empty result list: build an empty result set
            from pycocotools.coco import COCO

            dt = COCO()
            dt.dataset = {
                "images": list(gt.dataset.get("images", [])),
                "categories": copy.deepcopy(gt.dataset.get("categories", [])),
                "annotations": [],
            }
            _quiet(dt.createIndex)
        coco_eval = COCOeval(gt, dt, "bbox")
        if self._seen_only:
            coco_eval.params.imgIds = sorted(self._seen)
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            coco_eval.evaluate()
            coco_eval.accumulate()
        summary = io.StringIO()
        with contextlib.redirect_stdout(summary):
            coco_eval.summarize()
        return coco_eval, summary.getvalue().strip()

    def get(self) -> tuple[list[str], list[float]]:
        """Evaluate; returns ``(names, values)``: ``"AP/<class>"`` per class, ``"AP50"``, ``"AP75"``,
        ``"AP_small"``, ``"AP_medium"``, ``"AP_large"`` and ``"AP"`` (AP@[.50:.95]) last. Values are in
        [0, 1]; nan where COCO has nothing to measure (a class or size range without gts)."""
        missing = [i for i in self._img_ids if i not in self._seen and self.coco.imgToAnns.get(i)]
        if missing and not self._seen_only:
            warnings.warn(
                f"COCODetectionMetric: {len(missing)} annotated images of {len(self._img_ids)} got no "
                "update; their objects count as missed",
                stacklevel=2,
            )
        coco_eval, self.summary = self._evaluate()
        self.coco_eval = coco_eval
        precision = coco_eval.eval["precision"]  # [iou, recall, class, area, max dets]
        iou_lo = int(np.argmin(np.abs(coco_eval.params.iouThrs - 0.5)))
        iou_hi = int(np.argmin(np.abs(coco_eval.params.iouThrs - 0.95)))
        all_area, max_dets_100 = 0, len(coco_eval.params.maxDets) - 1

        def mean_valid(p: np.ndarray) -> float:
            p = p[p > -1]
            return float(np.mean(p)) if p.size else float("nan")

        cat_index = {c: i for i, c in enumerate(coco_eval.params.catIds)}
        names: list[str] = []
        values: list[float] = []
        for k in sorted(self.contiguous_id_to_json):
            names.append(f"AP/{self.class_names[len(names)]}")
            column = cat_index[self.contiguous_id_to_json[k]]
            values.append(mean_valid(precision[iou_lo : iou_hi + 1, :, column, all_area, max_dets_100]))
        stats = [float(s) if s > -1 else float("nan") for s in coco_eval.stats[1:6]]
        names += ["AP50", "AP75", "AP_small", "AP_medium", "AP_large", "AP"]
        values += stats + [mean_valid(precision[iou_lo : iou_hi + 1, :, :, all_area, max_dets_100])]
        return names, values
