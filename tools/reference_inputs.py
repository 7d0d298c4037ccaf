"""Pure-NumPy inputs of the SSD core parity fixtures (no MXNet): seeded ground-truth batches, logits, decoder
probabilities and post-processing inputs, plus small NumPy references (IoU, box decoding, softmax).

``tools/make_reference_fixtures.py`` (under the GluonCV virtualenv) feeds these inputs to GluonCV and stores the
outputs; ``tests/test_parity_core.py`` and ``benchmarks/bench_postprocess.py`` rebuild the same inputs from the
stored seeds (NumPy's legacy ``RandomState`` gives the same numbers under NumPy 1.23 and 2.x).

Shape legend: B batch, A anchors, G ground truths (padded with -1), C foreground classes.
"""

from __future__ import annotations

import numpy as np

# ---------------------------------------------------------------------------------------------------
# Input generators
# ---------------------------------------------------------------------------------------------------

ZOO_MODELS = (
    "ssd_300_vgg16_atrous_voc",
    "ssd_300_vgg16_atrous_coco",
    "ssd_512_vgg16_atrous_voc",
    "ssd_512_vgg16_atrous_coco",
    "ssd_512_resnet50_v1_voc",
    "ssd_512_resnet50_v1_coco",
    "ssd_512_mobilenet1.0_voc",
    "ssd_512_mobilenet1.0_coco",
)
IMAGE_SIZE = 300  # targets and post-processing use the ssd_300 anchors
NUM_FG = 20  # VOC foreground classes
TUTORIAL_GT_IDS = [[1, -1, -1, -1], [1, 3, 5, 7]]
TUTORIAL_GT_BOXES = [
    [[10, 20, 80, 90], [-1, -1, -1, -1], [-1, -1, -1, -1], [-1, -1, -1, -1]],
    [[10, 10, 30, 30], [40, 40, 60, 60], [50, 50, 90, 90], [100, 110, 120, 140]],
]
# Image kinds of the random target batches. "tiny" boxes are only matched by the bipartite step; "tie"
# boxes are aligned to the 8-px grid so that several anchors share exactly the best IoU (tie fill);
# "dup" repeats a box under two class ids.
TARGET_BATCH_KINDS = (
    ("mixed", "one", "many", "tiny"),
    ("mixed", "mixed", "large", "overlap"),
    ("tiny", "one", "mixed", "overlap"),
    ("many", "large", "tiny", "mixed"),
    ("overlap", "overlap", "one", "large"),
    ("mixed", "many", "mixed", "tiny"),
    ("tie", "tie", "mixed", "one"),
    ("dup", "dup", "overlap", "tie"),
)


def _clip_box(x1, y1, x2, y2, size=IMAGE_SIZE):
    x1, x2 = np.clip([x1, x2], 0, size)
    y1, y2 = np.clip([y1, y2], 0, size)
    return [float(x1), float(y1), float(max(x2, x1 + 1.0)), float(max(y2, y1 + 1.0))]


def _random_box(rs, lo, hi, size=IMAGE_SIZE):
    w = rs.uniform(lo, hi)
    h = w * np.exp(rs.uniform(-0.7, 0.7))
    h = min(max(h, lo * 0.7), size)
    x1 = rs.uniform(0, max(size - w, 1e-3))
    y1 = rs.uniform(0, max(size - h, 1e-3))
    return _clip_box(x1, y1, x1 + w, y1 + h, size)


def _image_boxes(rs, kind):
    """One image's boxes ``list[[x1, y1, x2, y2]]`` and class ids for an image kind."""
    boxes = []
    if kind == "one":
        boxes.append(_random_box(rs, 20, 200))
    elif kind == "many":
        for _ in range(40):
            boxes.append(_random_box(rs, *[(4, 16), (16, 60), (60, 200)][rs.randint(3)]))
    elif kind == "tiny":
        for _ in range(rs.randint(3, 9)):
            boxes.append(_random_box(rs, 2, 10))
    elif kind == "large":
        for _ in range(rs.randint(1, 4)):
            boxes.append(_random_box(rs, 150, 300))
    elif kind == "overlap":
        for _ in range(rs.randint(2, 4)):
            base = _random_box(rs, 30, 160)
            boxes.append(base)
            w, h = base[2] - base[0], base[3] - base[1]
            for _ in range(rs.randint(1, 4)):
                dx, dy = rs.uniform(-0.25, 0.25, 2) * [w, h]
                sw, sh = np.exp(rs.uniform(-0.3, 0.3, 2))
                cx, cy = (base[0] + base[2]) / 2 + dx, (base[1] + base[3]) / 2 + dy
                boxes.append(_clip_box(cx - w * sw / 2, cy - h * sh / 2, cx + w * sw / 2, cy + h * sh / 2))
    elif kind == "tie":
        # 16x16 boxes on the 8-px grid lie inside the four neighbouring 30x30 conv4_3 anchors: equal IoU.
        for _ in range(rs.randint(2, 5)):
            gx, gy = rs.randint(1, 34, 2)
            boxes.append([8.0 * gx, 8.0 * gy, 8.0 * gx + 16.0, 8.0 * gy + 16.0])
        boxes.append(_random_box(rs, 30, 120))
    elif kind == "dup":
        for _ in range(rs.randint(1, 3)):
            b = _random_box(rs, 10, 150)
            boxes.extend([b, list(b)])
        boxes.append(_random_box(rs, 10, 100))
    elif kind == "mixed":
        for _ in range(rs.randint(3, 21)):
            boxes.append(_random_box(rs, *[(3, 12), (12, 50), (50, 150), (150, 300)][rs.randint(4)]))
    else:
        raise ValueError(f"unknown image kind {kind!r}")
    ids = rs.randint(0, NUM_FG, size=len(boxes))
    return boxes, ids


def target_batch(seed, kinds):
    """A padded gt batch: ``(gt_boxes float32[B, G, 4], gt_ids float32[B, G])``, padding rows -1.

    G is the largest box count plus two, so every image has padding rows.
    """
    rs = np.random.RandomState(seed)
    per_image = [_image_boxes(rs, k) for k in kinds]
    g = max(len(b) for b, _ in per_image) + 2
    gt_boxes = -np.ones((len(kinds), g, 4), np.float32)
    gt_ids = -np.ones((len(kinds), g), np.float32)
    for i, (boxes, ids) in enumerate(per_image):
        if kinds[i] == "dup":  # give each duplicated pair two different ids
            ids = ids.copy()
            for j in range(0, len(boxes) - 1, 2):
                ids[j + 1] = (ids[j] + 1 + rs.randint(NUM_FG - 1)) % NUM_FG
        gt_boxes[i, : len(boxes)] = np.asarray(boxes, np.float32)
        gt_ids[i, : len(boxes)] = ids
    return gt_boxes, gt_ids


def tutorial_batch():
    return np.asarray(TUTORIAL_GT_BOXES, np.float32), np.asarray(TUTORIAL_GT_IDS, np.float32)


def normal_logits(seed, shape, scale=1.0):
    """``float32[shape]`` standard-normal logits times ``scale`` (OHEM and loss inputs)."""
    return (np.random.RandomState(seed).standard_normal(shape) * scale).astype(np.float32)


def class_decoder_probs(seed, batch=2, anchors=1000, num_class=NUM_FG + 1):
    """``float32[B, A, C+1]`` class probabilities with deliberate edge values.

    Rows are normalised powers of uniforms; every 7th row has a foreground entry exactly
    ``float32(0.01)`` (the threshold is strict), every 11th row has two equal foreground maxima.
    """
    rs = np.random.RandomState(seed)
    u = rs.uniform(0.0, 1.0, (batch, anchors, num_class)) ** 3
    total = np.zeros((batch, anchors))
    for k in range(num_class):  # explicit order: identical sums under every numpy version
        total = total + u[..., k]
    p = (u / total[..., None]).astype(np.float32)
    rows = np.arange(anchors)
    cls = rs.randint(1, num_class, size=(batch, anchors))
    p[:, rows % 7 == 0, :] = np.where(
        np.arange(num_class) == cls[:, rows % 7 == 0, None], np.float32(0.01), p[:, rows % 7 == 0, :]
    )
    tie = rows % 11 == 0
    top = p[:, tie, 1:].max(axis=-1) + np.float32(0.05)
    c1 = cls[:, tie]
    c2 = (c1 % (num_class - 1)) + 1
    sub = p[:, tie, :]
    sub[np.arange(batch)[:, None], np.arange(tie.sum())[None, :], c1] = top
    sub[np.arange(batch)[:, None], np.arange(tie.sum())[None, :], c2] = top
    p[:, tie, :] = sub
    # a few all-small rows: every foreground prob below the threshold
    small = rows % 13 == 5
    p[:, small, 1:] = np.float32(0.005)
    return p


SCORE_GRID_STEP = 2e-5
SCORE_GRID_LO = 0.011


def _xyxy(anchors_cxcywh):
    a = np.asarray(anchors_cxcywh, np.float64)
    return np.stack([a[:, 0] - a[:, 2] / 2, a[:, 1] - a[:, 3] / 2, a[:, 0] + a[:, 2] / 2, a[:, 1] + a[:, 3] / 2], 1)


def iou_np(a_xyxy, b_xyxy):
    """float64 IoU ``[N, M]`` without +1 (as GluonCV's networks)."""
    a = np.asarray(a_xyxy, np.float64)[:, None, :]
    b = np.asarray(b_xyxy, np.float64)[None, :, :]
    iw = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    ih = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = iw * ih
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    union = area_a + area_b - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


# Per image: (objects, noise candidates). Image 1 has more than 400 candidates (top-k cut), image 3
# almost none (padding rows), image 2 crowds one class.
POSTPROCESS_LAYOUT = ((3, 80), (10, 1500), (8, 150), (1, 1))


def postprocess_inputs(seed, anchors_cxcywh, batch=4, num_fg=NUM_FG, layout=POSTPROCESS_LAYOUT):
    """Synthetic raw SSD outputs with a realistic score distribution.

    Returns ``(cls_logits float32[B, A, C+1], box_preds float32[B, A, 4])``. Background dominates every
    anchor (each foreground softmax prob < 0.0045) except candidate anchors: anchors overlapping a few
    random objects (IoU > 0.3; 1-3 classes above 0.01, the object's class the highest) and scattered
    noise anchors (one class at 0.011-0.08). Candidate probabilities are distinct values of a grid with
    step 2e-5 per image, turned into logits by ``log``. ``layout[i % len(layout)]`` gives image i's
    (objects, noise candidates).
    """
    rs = np.random.RandomState(seed)
    anchors_xyxy = _xyxy(anchors_cxcywh)
    n_anchors = anchors_xyxy.shape[0]
    logits = np.zeros((batch, n_anchors, num_fg + 1), np.float64)
    logits[..., 1:] = rs.uniform(-9.0, -5.5, size=(batch, n_anchors, num_fg))
    box_preds = (rs.standard_normal((batch, n_anchors, 4)) * 0.3).astype(np.float32)
    grid_size = int((0.985 - SCORE_GRID_LO) / SCORE_GRID_STEP)

    for b in range(batch):
        n_obj, n_noise = layout[b % len(layout)]
        used = set()

        def draw(lo, hi, used=used):
            lo_i = int(np.ceil((lo - SCORE_GRID_LO) / SCORE_GRID_STEP))
            hi_i = max(lo_i + 1, min(grid_size, int((hi - SCORE_GRID_LO) / SCORE_GRID_STEP)))
            while True:
                k = rs.randint(lo_i, hi_i)
                if k not in used:
                    used.add(k)
                    return SCORE_GRID_LO + k * SCORE_GRID_STEP

        rows = {}
        crowd_class = rs.randint(num_fg)
        for _ in range(n_obj):
            obj = np.asarray([_random_box(rs, 20, 220)])
            cls = crowd_class if b % len(layout) == 2 else rs.randint(num_fg)
            ious = iou_np(anchors_xyxy, obj)[:, 0]
            for a in np.nonzero(ious > 0.3)[0]:
                if a in rows:
                    continue
                m = 1 + (rs.uniform() < 0.35) + (rs.uniform() < 0.1)
                primary = draw(0.05 + 0.5 * (ious[a] - 0.3), 0.35 + 0.6 * ious[a])
                probs = {cls: primary}
                for _ in range(m - 1):
                    other = rs.randint(num_fg)
                    if other in probs:
                        continue
                    probs[other] = draw(SCORE_GRID_LO, min(primary, (1.0 - primary) / 3.0))
                rows[a] = probs
        for _ in range(n_noise):
            a = rs.randint(n_anchors)
            if a in rows:
                continue
            rows[a] = {rs.randint(num_fg): draw(SCORE_GRID_LO, 0.08)}
        for a, probs in rows.items():
            p = rs.uniform(1e-5, 2e-4, size=num_fg + 1)
            for c, s in probs.items():
                p[c + 1] = s
            p[0] = 0.0
            p[0] = 1.0 - p.sum()
            logits[b, a] = np.log(p)
    return logits.astype(np.float32), box_preds


def decode_np(box_preds, anchors_cxcywh, stds=(0.1, 0.1, 0.2, 0.2)):
    """float64 reference decode ``[..., A, 4]`` -> corners (used only for margin checks)."""
    p = np.asarray(box_preds, np.float64)
    a = np.asarray(anchors_cxcywh, np.float64)
    ox = p[..., 0] * stds[0] * a[..., 2] + a[..., 0]
    oy = p[..., 1] * stds[1] * a[..., 3] + a[..., 1]
    hw = np.exp(p[..., 2] * stds[2]) * a[..., 2] / 2
    hh = np.exp(p[..., 3] * stds[3]) * a[..., 3] / 2
    return np.stack([ox - hw, oy - hh, ox + hw, oy + hh], -1)


def softmax_np(logits):
    x = np.asarray(logits, np.float64)
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def unpack_targets(z, prefix, batch, n_anchors):
    """Rebuild dense ``(cls_targets int64[B, A], box_targets float32[B, A, 4], box_masks float32[B, A, 4])``
    from the compact arrays stored under ``prefix``."""
    cls_targets = z[prefix + "cls_targets"].astype(np.int64).reshape(batch, n_anchors)
    box_targets = np.zeros((batch * n_anchors, 4), np.float32)
    box_targets[z[prefix + "box_index"]] = z[prefix + "box_values"]
    box_masks = np.zeros((batch * n_anchors, 4), np.float32)
    box_masks[z[prefix + "mask_index"]] = 1.0
    return cls_targets, box_targets.reshape(batch, n_anchors, 4), box_masks.reshape(batch, n_anchors, 4)


# ---------------------------------------------------------------------------------------------------
# Margins: inputs whose decisions float32 rounding could flip are rejected (the script takes the next seed)
# ---------------------------------------------------------------------------------------------------

MARGIN = 1e-5


def iou_margin_ok(anchors, gt_boxes, gt_ids):
    """True when no anchor-gt IoU sits within MARGIN of the 0.5 thresholds without being exactly 0.5."""
    anchors_xyxy = _xyxy(anchors)
    for i in range(gt_boxes.shape[0]):
        near = np.abs(iou_np(anchors_xyxy, gt_boxes[i][gt_ids[i] >= 0]) - 0.5)
        if np.any((near < MARGIN) & (near > 0)):
            return False
    return True


def ohem_margin_ok(anchors, logits, gt_boxes, gt_ids, ct):
    """True when the OHEM cut-off of every image has a float64 score gap above MARGIN."""
    anchors_xyxy = _xyxy(anchors)
    for i in range(gt_boxes.shape[0]):
        max_iou = iou_np(anchors_xyxy, gt_boxes[i][gt_ids[i] >= 0]).max(axis=1)
        lp = np.log(softmax_np(logits[i]))
        score = -lp[:, 0]
        n_neg = int((ct[i] == 0).sum())
        cand = (ct[i] <= 0) & (max_iou < 0.5)
        s = np.sort(score[cand])[::-1]
        if n_neg < s.size and s[n_neg - 1] - s[n_neg] < MARGIN:
            return False
    return True


def hard_negative_margin_ok(cls_preds, cls_targets, ratio=3, min_hard_negatives=0):
    """True when the loss's hard-negative cut-off of every image has a cross-entropy gap above MARGIN."""
    for i in range(cls_preds.shape[0]):
        lp = np.log(softmax_np(cls_preds[i]))
        ce = -lp[np.arange(lp.shape[0]), np.clip(cls_targets[i], 0, None)]
        pos = cls_targets[i] > 0
        k = max(min_hard_negatives, ratio * int(pos.sum()))
        s = np.sort(ce[~pos])[::-1]
        if 0 < k < s.size and s[k - 1] - s[k] < MARGIN:
            return False
    return True


def nms_margin_ok(cls_logits, box_preds, anchors, thresholds=(0.45, 0.5), topk=400):
    """True when no candidate score sits near the 0.01 cut and no IoU the NMS compares near its thresholds."""
    probs = softmax_np(cls_logits)[..., 1:]
    boxes = decode_np(box_preds, anchors[None])
    for b in range(probs.shape[0]):
        a_idx, c_idx = np.nonzero(probs[b] > 0.01)
        if np.any(np.abs(probs[b][probs[b] > 0.005] - 0.01) < 5e-4):
            return False
        order = np.argsort(-probs[b][a_idx, c_idx], kind="stable")[:topk]
        for c in np.unique(c_idx[order]):
            sel = a_idx[order][c_idx[order] == c]
            ious = iou_np(boxes[b][sel], boxes[b][sel])
            for t in thresholds:
                if np.any(np.abs(ious - t) < MARGIN):
                    return False
    return True
