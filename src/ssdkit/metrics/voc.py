"""Pascal VOC detection mAP (VOC07 11-point and area under the precision envelope), equal to GluonCV.

Shape legend: B images in a batch, N detections per image and M ground truths per image (both padded
with label -1), K valid detections of a batch, C classes (``num_classes`` excludes background).
Boxes are corners ``(x1, y1, x2, y2)`` in pixels. The metric uses the VOC integer convention: 1 is added
to ``x2`` and ``y2`` of every box before the IoU, so a box ``[0, 0, 9, 9]`` is 10 pixels wide.

Rules (GluonCV 0.10.5 ``VOCMApMetric``), per image and class:

1. rows with label < 0 are padding and ignored;
2. detections are visited in GluonCV's order: ``argsort(score)[::-1]`` of that image's detections of
   the class, with NumPy's legacy introsort (see below);
3. each detection takes the gt of its class with the largest IoU (first one on ties, difficult gts
   included); below ``iou_thresh`` it matches nothing (a false positive);
4. a detection matched to a difficult gt is ignored; the first detection to claim a non-difficult gt is
   a true positive, later ones are false positives (duplicates).

At :meth:`VOCMApMetric.get` the detections of each class are pooled over all images, sorted again the
same way, and turned into precision/recall; classes without non-difficult gts get AP nan and the mAP is
the nanmean over classes.

Tie order: GluonCV sorts with ``np.argsort`` (introsort, not stable), and with equal scores the visiting
order changes both the greedy matching and the precision curve; :mod:`ssdkit.metrics.legacy_sort` reproduces
NumPy 1.23's permutation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..boxes import paired_box_iou_numpy
from .legacy_sort import SMALL_QUICKSORT, legacy_argsort, legacy_descending, stable_argsort

__all__ = ["VOC07MApMetric", "VOCMApMetric", "legacy_argsort", "match_detections", "voc07_ap", "voc_ap"]


# ----------------------------------------------------------------------------------------------------
# Inputs
# ----------------------------------------------------------------------------------------------------


def _to_numpy(x: Any, name: str) -> np.ndarray:
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch.Tensor
        return x.detach().cpu().numpy()
    if hasattr(x, "asnumpy"):  # an MXNet NDArray
        return x.asnumpy()
    try:
        return np.asarray(x)
    except Exception as err:  # pragma: no cover - exotic inputs
        raise ValueError(f"{name}: cannot convert {type(x).__name__} to an array") from err


def _per_image(x: Any, structure: list[int], name: str) -> list[np.ndarray]:
    """Split a list/tuple argument into per-image arrays, following the boxes' ``structure``.

    ``structure[i]`` is the number of images in list element ``i``; 0 means "element i is one image".
    """
    if not isinstance(x, (list, tuple)):
        raise ValueError(f"{name}: expected a list like the boxes argument, got {type(x).__name__}")
    if len(x) != len(structure):
        raise ValueError(f"{name}: list has {len(x)} elements, the boxes list has {len(structure)}")
    out: list[np.ndarray] = []
    for item, count in zip(x, structure):
        a = _to_numpy(item, name)
        if count:
            if a.ndim < 1 or a.shape[0] != count:
                raise ValueError(f"{name}: a batched element has shape {a.shape}, expected {count} images")
            out.extend(a.reshape(count, -1))
        else:
            out.append(a.reshape(-1))
    return out


def _stack_padded(rows: Sequence[np.ndarray], width: int, fill: float, name: str) -> np.ndarray:
    """Stack per-image ``[n_i * width]`` arrays into ``[B, max n_i, width]`` padded with ``fill``."""
    if not rows:
        return np.zeros((0, 0, width))
    dtype = np.result_type(*[r.dtype for r in rows])
    if dtype == np.bool_ or fill < 0:
        dtype = np.result_type(dtype, np.int8)  # room for the -1 padding of unsigned labels
    counts = []
    for r in rows:
        if r.size % width:
            raise ValueError(f"{name}: an image has {r.size} values, not a multiple of {width}")
        counts.append(r.size // width)
    out = np.full((len(rows), max(counts, default=0), width), fill, dtype=dtype)
    for i, (r, c) in enumerate(zip(rows, counts)):
        out[i, :c] = r.reshape(c, width)
    return out


def _batch(
    boxes: Any, labels: Any, extra: Any, name: str, extra_fill: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Normalise ``boxes``/``labels``/``extra`` (scores or difficult flags) to ``[B, N, 4]``, ``[B, N]``."""
    if isinstance(boxes, (list, tuple)):
        arrays = [_to_numpy(b, f"{name}_bboxes") for b in boxes]
        structure = [a.shape[0] if a.ndim == 3 else 0 for a in arrays]
        box_rows: list[np.ndarray] = []
        for a, count in zip(arrays, structure):
            box_rows.extend(a.reshape(count, -1) if count else [a.reshape(-1)])
        box_arr = _stack_padded(box_rows, 4, 0, f"{name}_bboxes")
        lab_rows = _per_image(labels, structure, f"{name}_labels")
        for i, (bx, lb) in enumerate(zip(box_rows, lab_rows)):
            if bx.size != 4 * lb.size:
                raise ValueError(
                    f"image {i}: {name}_bboxes has {bx.size / 4:g} boxes but {name}_labels has {lb.size} labels"
                )
        lab_arr = _stack_padded(lab_rows, 1, -1, f"{name}_labels")[..., 0]
        ext_arr = None
        if extra is not None:
            ext_rows = _per_image(extra, structure, f"{name} scores/difficults")
            ext_arr = _stack_padded(ext_rows, 1, extra_fill, f"{name} scores/difficults")[..., 0]
    else:
        box_arr = _to_numpy(boxes, f"{name}_bboxes")
        if box_arr.ndim != 3 or box_arr.shape[-1] != 4:
            raise ValueError(
                f"{name}_bboxes must have shape [B, N, 4] (or be a list of per-image [N, 4]), got {box_arr.shape}"
            )
        lab_arr = _to_numpy(labels, f"{name}_labels")
        ext_arr = None if extra is None else _to_numpy(extra, f"{name} scores/difficults")
    b, n = box_arr.shape[:2]
    lab_arr = _check_rows(lab_arr, b, n, f"{name}_labels")
    if ext_arr is not None:
        ext_arr = _check_rows(ext_arr, b, n, f"{name} scores/difficults")
    return box_arr, lab_arr, ext_arr


def _check_rows(a: np.ndarray, b: int, n: int, name: str) -> np.ndarray:
    if a.shape[:1] != (b,) or a.size != b * n or (a.ndim == 3 and a.shape[-1] != 1) or a.ndim > 3:
        raise ValueError(f"{name} must have shape [{b}, {n}] or [{b}, {n}, 1] to match the boxes, got {a.shape}")
    return a.reshape(b, n)


# ----------------------------------------------------------------------------------------------------
# Matching (one batch) and AP
# ----------------------------------------------------------------------------------------------------


def match_detections(
    pred_bboxes: np.ndarray,
    pred_labels: np.ndarray,
    pred_scores: np.ndarray,
    gt_bboxes: np.ndarray,
    gt_labels: np.ndarray,
    gt_difficults: np.ndarray | None,
    iou_thresh: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Classify every valid detection of a batch as TP (1), FP (0) or ignored (-1), GluonCV's way.

    Args: ``pred_bboxes [B, N, 4]``, ``pred_labels [B, N]``, ``pred_scores [B, N]``, ``gt_bboxes [B, M, 4]``,
        ``gt_labels [B, M]``, ``gt_difficults [B, M]`` or None; label < 0 marks padding.
    Returns:
        ``(labels int64 [K], scores [K], matches int8 [K], n_pos int64 [C'])``: the valid detections in
        GluonCV's visiting order (image, class, per-image score order) and the number of non-difficult
        gts per class (``C'`` = largest gt label + 1).
    """
    b, m = gt_labels.shape
    gt_valid = gt_labels >= 0
    gt_cls = np.where(gt_valid, gt_labels, -1).astype(np.int64)  # padding gts get class -1
    gt_hard = np.zeros((b, m), dtype=bool) if gt_difficults is None else gt_difficults != 0
    n_pos = np.bincount(gt_cls[gt_valid & ~gt_hard], minlength=int(gt_cls.max(initial=-1)) + 1)

    img, col = np.nonzero(pred_labels >= 0)
    labels = pred_labels[img, col].astype(np.int64)
    scores = pred_scores[img, col]
    order = _visiting_order(img, labels, scores)
    img, col, labels, scores = img[order], col[order], labels[order], scores[order]
    k = labels.size
    matches = np.zeros(k, dtype=np.int8)

    # Candidate pairs (detection, gt of the same image and class). Detections are sorted by
    # (image, class) and so are the gts (column order kept), so the pairs of one detection are contiguous
    # and list its gts in GluonCV's order.
    stride = max(int(labels.max(initial=0)), int(gt_cls.max(initial=0))) + 1
    g_img, g_col = np.nonzero(gt_valid)
    g_key = g_img * stride + gt_cls[g_img, g_col]
    by_key = stable_argsort(g_key)
    g_img, g_col, g_key = g_img[by_key], g_col[by_key], g_key[by_key]
    p_key = img * stride + labels
    first_gt = np.searchsorted(g_key, p_key, side="left")
    count = np.searchsorted(g_key, p_key, side="right") - first_gt
    num_pairs = int(count.sum())
    if num_pairs == 0:
        return labels, scores, matches, n_pos
    pair_det = np.repeat(np.arange(k), count)
    pair_start = np.cumsum(count) - count
    pair_gt = np.repeat(first_gt - pair_start, count) + np.arange(num_pairs)  # index into the sorted gts

    # IoU with the +1 convention and exactly GluonCV's arithmetic: same dtype, same operations in the
    # same order (its np.prod over two numbers is one multiplication).
    p = pred_bboxes[img[pair_det], col[pair_det]]
    g = gt_bboxes[g_img[pair_gt], g_col[pair_gt]]
    p[:, 2:] += 1  # fancy indexing made copies
    g[:, 2:] += 1
    iou = paired_box_iou_numpy(p, g)

    # Per detection: the first gt with the largest IoU (np.argmax semantics, NaN counting as largest).
    has_pair = count > 0
    starts = pair_start[has_pair]
    best_iou = np.maximum.reduceat(iou, starts)  # propagates NaN like np.max
    best_rep = np.repeat(best_iou, count[has_pair])
    is_best = (iou == best_rep) | (np.isnan(iou) & np.isnan(best_rep))
    best_pair = np.minimum.reduceat(np.where(is_best, np.arange(num_pairs), num_pairs), starts)
    det = np.flatnonzero(has_pair)
    hit = ~(best_iou < iou_thresh)
    det, gt_index = det[hit], pair_gt[best_pair[hit]]
    hard = gt_hard[g_img[gt_index], g_col[gt_index]]
    matches[det[hard]] = -1
    det, gt_index = det[~hard], gt_index[~hard]
    _, first = np.unique(gt_index, return_index=True)  # detections in visiting order: first claim wins
    matches[det[first]] = 1
    return labels, scores, matches, n_pos


def _visiting_order(img: np.ndarray, labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Order of ``[K]`` valid detections (listed image by image, column by column) in which GluonCV
    visits them: by image, then class, then ``argsort(score)[::-1]`` within the image's class.

    NumPy insertion-sorts (stably) at most 16 items, so within a group the order is score descending,
    later column first on ties. Groups of more than 16 with tied scores are re-sorted by introsort.
    """
    k = labels.size
    by_score = stable_argsort(scores, descending=True)
    group = img.astype(np.int64) * (int(labels.max(initial=0)) + 1) + labels
    order = by_score[stable_argsort(group[by_score])]
    counts = np.bincount(group) if k else np.zeros(0, np.int64)
    if k == 0 or counts.max() <= SMALL_QUICKSORT + 1:
        return order
    sorted_group = group[order]
    for g in np.flatnonzero(counts > SMALL_QUICKSORT + 1):
        s, e = np.searchsorted(sorted_group, [g, g + 1])
        members = np.sort(order[s:e])  # listing order, as GluonCV's boolean mask keeps it
        member_scores = scores[members]
        ascending = np.sort(member_scores)
        if (ascending[1:] == ascending[:-1]).any():
            order[s:e] = members[legacy_descending(member_scores)]
    return order


def voc07_ap(rec: np.ndarray | None, prec: np.ndarray | None) -> float:
    """VOC2007 11-point AP: mean over t in {0, 0.1, ..., 1} of the best precision at recall >= t."""
    if rec is None or prec is None:
        return float("nan")
    prec = np.nan_to_num(prec)
    best_after = np.maximum.accumulate(prec[::-1])[::-1] if prec.size else prec
    ap = 0.0
    for t in np.arange(0.0, 1.1, 0.1):  # GluonCV's thresholds, float rounding included
        i = int(np.searchsorted(rec, t, side="left"))  # rec is non-decreasing
        p = best_after[i] if i < rec.size else 0
        ap += p / 11.0
    return float(ap)


def voc_ap(rec: np.ndarray | None, prec: np.ndarray | None) -> float:
    """VOC2010+ AP: area under the monotone (right-to-left running max) precision envelope."""
    if rec is None or prec is None:
        return float("nan")
    mrec = np.concatenate(([0.0], rec, [1.0]))
    mpre = np.concatenate(([0.0], np.nan_to_num(prec), [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    i = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


# ----------------------------------------------------------------------------------------------------
# Metric classes
# ----------------------------------------------------------------------------------------------------


class VOCMApMetric:
    """Pascal VOC mAP with GluonCV semantics (area under the precision envelope, VOC2010+ style).

    Args:
        iou_thresh: IoU at or above which a detection matches a gt (0.5).
        class_names: optional class names; they name the per-class values and fix the class count
            (labels outside ``range(len(class_names))`` are then an error).

    ``get()`` returns ``(names, values)``: one AP per class (nan for classes without non-difficult gts)
    and ``"mAP"`` last. Without ``class_names`` the classes are named ``"0"``, ``"1"``... up to the largest
    label seen (GluonCV returns a single ``("VOCMeanAP", mAP)`` pair in that case).
    """

    def __init__(self, iou_thresh: float = 0.5, class_names: Sequence[str] | None = None) -> None:
        if not isinstance(iou_thresh, (int, float)) or not 0.0 <= float(iou_thresh) <= 1.0:
            raise ValueError(f"iou_thresh must be a number in [0, 1], got {iou_thresh!r}")
        if class_names is not None:
            if not isinstance(class_names, (list, tuple)) or not all(isinstance(c, str) for c in class_names):
                raise ValueError("class_names must be a list or tuple of str")
            class_names = list(class_names)
        self.iou_thresh = float(iou_thresh)
        self.class_names = class_names
        self.reset()

    def reset(self) -> None:
        """Forget all updates."""
        self._labels: list[np.ndarray] = []
        self._scores: list[np.ndarray] = []
        self._matches: list[np.ndarray] = []
        self._n_pos = np.zeros(0, dtype=np.int64)
        self._num_seen = 0  # largest label seen (pred or gt) + 1

    def update(
        self,
        pred_bboxes: Any,
        pred_labels: Any,
        pred_scores: Any,
        gt_bboxes: Any,
        gt_labels: Any,
        gt_difficults: Any = None,
    ) -> None:
        """Add a batch of detections and ground truths.

        Args:
            pred_bboxes: ``[B, N, 4]`` corners (torch tensor or numpy array), or a list of per-image
                ``[N_i, 4]`` arrays (or of batched ``[B_i, N, 4]`` arrays); the other arguments follow the
                same layout.
            pred_labels: ``[B, N]`` or ``[B, N, 1]`` class ids, rows with id < 0 are ignored.
            pred_scores: ``[B, N]`` or ``[B, N, 1]``.
            gt_bboxes: ``[B, M, 4]`` corners.
            gt_labels: ``[B, M]`` or ``[B, M, 1]``, rows with id < 0 are ignored.
            gt_difficults: ``[B, M]`` or ``[B, M, 1]`` flags (non-zero = difficult), or None.
        """
        p_box, p_lab, p_score = _batch(pred_bboxes, pred_labels, pred_scores, "pred", 0)
        assert p_score is not None  # _batch returns the scores it was given
        g_box, g_lab, g_diff = _batch(gt_bboxes, gt_labels, gt_difficults, "gt", 0)
        if p_box.shape[0] != g_box.shape[0]:
            raise ValueError(f"predictions cover {p_box.shape[0]} images but ground truths {g_box.shape[0]}")
        if p_score.dtype.kind not in "fc":
            p_score = p_score.astype(np.float64)
        valid = p_lab >= 0
        if np.isnan(p_score[valid]).any():
            raise ValueError("pred_scores contains NaN for a non-padding detection")
        self._check_labels(p_lab[valid], "pred_labels")
        self._check_labels(g_lab[g_lab >= 0], "gt_labels")
        labels, scores, matches, n_pos = match_detections(p_box, p_lab, p_score, g_box, g_lab, g_diff, self.iou_thresh)
        if n_pos.size > self._n_pos.size:
            n_pos[: self._n_pos.size] += self._n_pos
            self._n_pos = n_pos
        else:
            self._n_pos[: n_pos.size] += n_pos
        if labels.size:
            self._num_seen = max(self._num_seen, int(labels.max()) + 1)
        self._num_seen = max(self._num_seen, n_pos.size)
        self._labels.append(labels)
        self._scores.append(scores)
        self._matches.append(matches)

    def _check_labels(self, labels: np.ndarray, name: str) -> None:
        if self.class_names is not None and labels.size and labels.astype(np.int64).max() >= len(self.class_names):
            raise ValueError(
                f"{name} has class id {int(labels.max())}, but class_names lists only {len(self.class_names)} classes"
            )

    def _average_precision(self, rec: np.ndarray | None, prec: np.ndarray | None) -> float:
        return voc_ap(rec, prec)

    def recall_precision(self) -> tuple[list[np.ndarray | None], list[np.ndarray | None]]:
        """Per class ``(recall [D_c], precision [D_c])`` over the pooled, score-sorted detections.

        Recall is None for classes without non-difficult gts (their AP is nan).
        """
        num = len(self.class_names) if self.class_names is not None else self._num_seen
        labels = np.concatenate(self._labels) if self._labels else np.zeros(0, np.int64)
        scores = np.concatenate(self._scores) if self._scores else np.zeros(0)
        matches = np.concatenate(self._matches) if self._matches else np.zeros(0, np.int8)
        by_class = stable_argsort(labels)  # keeps update order within a class
        bounds = np.searchsorted(labels[by_class], np.arange(num + 1))
        recs: list[np.ndarray | None] = []
        precs: list[np.ndarray | None] = []
        for c in range(num):
            idx = by_class[bounds[c] : bounds[c + 1]]
            match = matches[idx]
            # Where ignored (-1) detections sit among equal scores cannot change the AP (they repeat the
            # previous precision/recall point), so only ties between a TP and an FP are tracked exactly.
            match = match[legacy_descending(scores[idx], key=match == 1)]
            tp = np.cumsum(match == 1)
            fp = np.cumsum(match == 0)
            with np.errstate(divide="ignore", invalid="ignore"):
                precs.append(tp / (fp + tp))
            n_pos = int(self._n_pos[c]) if c < self._n_pos.size else 0
            recs.append(tp / n_pos if n_pos > 0 else None)
        return recs, precs

    def get(self) -> tuple[list[str], list[float]]:
        """Return ``(names, values)``: per-class AP then ``("mAP", nanmean of the class APs)``."""
        recs, precs = self.recall_precision()
        aps = [self._average_precision(r, p) for r, p in zip(recs, precs)]
        names = list(self.class_names) if self.class_names is not None else [str(c) for c in range(len(aps))]
        aps_arr = np.asarray(aps, dtype=np.float64)
        mean_ap = float(np.nanmean(aps_arr)) if np.isfinite(aps_arr).any() else float("nan")
        return names + ["mAP"], aps + [mean_ap]


class VOC07MApMetric(VOCMApMetric):
    """Pascal VOC2007 mAP: as :class:`VOCMApMetric` with the 11-point interpolated AP."""

    def _average_precision(self, rec: np.ndarray | None, prec: np.ndarray | None) -> float:
        return voc07_ap(rec, prec)
