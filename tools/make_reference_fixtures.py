"""Regenerate the GluonCV reference fixtures of ssdkit's SSD core (anchors, targets, loss, coders, decoding).

Run under the GluonCV virtualenv (``tools/make_gluoncv_venv.sh``; never a dependency of ssdkit)::

    .venv-gluoncv/bin/python tools/make_reference_fixtures.py [--out tests/data]

It writes ``tests/data/core_*.npz`` and ``tests/data/core_tutorial.json``; ``tests/test_parity_core.py``
loads them. Large inputs are not stored: they are rebuilt from seeds by the pure-NumPy generators of
``tools/reference_inputs.py``, which the tests import (NumPy's legacy ``RandomState`` gives the same numbers
under NumPy 1.23 and 2.x). Outputs are stored compactly (int8 class targets, box targets only at the
positive anchors).

Inputs are built with margins so that float32 rounding differences between MXNet and PyTorch cannot
flip a decision: every OHEM / hard-negative cut-off has a score gap, every IoU that an NMS threshold
compares is away from the threshold, and decoded candidate scores sit on a grid with 2e-5 spacing.
The script checks these margins and moves to the next seed when one fails; the seeds used are stored.

Shape legend: B batch, A anchors, G ground truths (padded with -1), C foreground classes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from reference_inputs import (  # noqa: E402
    NUM_FG,
    TARGET_BATCH_KINDS,
    ZOO_MODELS,
    class_decoder_probs,
    hard_negative_margin_ok,
    iou_margin_ok,
    nms_margin_ok,
    normal_logits,
    ohem_margin_ok,
    postprocess_inputs,
    softmax_np,
    target_batch,
    tutorial_batch,
    unpack_targets,
)

TARGET_SEED0 = 1000


def _mx():
    import mxnet as mx  # noqa: F401  (imported lazily)

    return mx


def build_zoo_anchors():
    """GluonCV anchors ``float32[A, 4]`` and feature sizes for every zoo model (train-mode forward)."""
    mx = _mx()
    import gluoncv
    from mxnet import autograd

    out = {}
    for name in ZOO_MODELS:
        net = gluoncv.model_zoo.get_model(name, pretrained=False, pretrained_base=False)
        net.initialize()
        size = 300 if name.startswith("ssd_300") else 512
        x = mx.nd.zeros((1, 3, size, size))
        with autograd.train_mode():
            cls_preds, _, anchors = net(x)
            feats = net.features(x)
        out[name] = anchors.asnumpy().reshape(-1, 4).astype(np.float32)
        out[name + "/feature_shapes"] = np.asarray([f.shape[2:] for f in feats], np.int32)
        out[name + "/num_classes"] = np.int32(cls_preds.shape[-1] - 1)
        print(f"anchors {name}: {out[name].shape[0]} from feature maps {out[name + '/feature_shapes'].tolist()}")
    return out


def _gcv_targets(anchors, cls_preds, gt_boxes, gt_ids, ratio):
    mx = _mx()
    from gluoncv.model_zoo.ssd.target import SSDTargetGenerator

    gen = SSDTargetGenerator(negative_mining_ratio=ratio)
    ct, bt, bm = gen(
        mx.nd.array(anchors[None]),
        None if cls_preds is None else mx.nd.array(cls_preds),
        mx.nd.array(gt_boxes),
        mx.nd.array(gt_ids),
    )
    return ct.asnumpy(), bt.asnumpy(), bm.asnumpy()


def _pack_targets(store, prefix, ct, bt, bm):
    ct_int = np.rint(ct).astype(np.int64)
    assert np.array_equal(ct_int, ct), "non-integer class target"
    assert ct_int.min() >= -1 and ct_int.max() <= 127
    flat_bt = bt.reshape(-1, 4)
    flat_bm = bm.reshape(-1, 4)
    box_index = np.nonzero(np.any(flat_bt != 0, axis=1) | (ct_int.reshape(-1) > 0))[0]
    mask_index = np.nonzero(np.any(flat_bm != 0, axis=1))[0]
    assert np.all((flat_bm == 0) | (flat_bm == 1)) and np.all(flat_bm[mask_index] == 1), "mask not all-or-none"
    rest = np.setdiff1d(np.arange(flat_bt.shape[0]), box_index)
    assert not np.any(flat_bt[rest]), "box targets outside the stored rows"
    store[prefix + "cls_targets"] = ct_int.astype(np.int8).reshape(-1)
    store[prefix + "box_index"] = box_index.astype(np.int32)
    store[prefix + "box_values"] = flat_bt[box_index].astype(np.float32)
    store[prefix + "mask_index"] = mask_index.astype(np.int32)


def build_targets(anchors):
    """SSDTargetGenerator outputs on the tutorial batch and the random batches, naive and OHEM."""
    store = {}
    n_anchors = anchors.shape[0]
    batches = [("tutorial", *tutorial_batch())]
    for bi, kinds in enumerate(TARGET_BATCH_KINDS):
        for seed in range(TARGET_SEED0 + 100 * bi, TARGET_SEED0 + 100 * bi + 50):
            gt_boxes, gt_ids = target_batch(seed, kinds)
            if iou_margin_ok(anchors, gt_boxes, gt_ids):
                break
        else:
            raise RuntimeError(f"no gt seed with clear IoU margins for batch {bi}")
        batches.append((f"b{bi}", gt_boxes, gt_ids))
        store[f"b{bi}/seed"] = np.int64(seed)
        store[f"b{bi}/kinds"] = np.asarray(kinds)
    for key, gt_boxes, gt_ids in batches:
        store[key + "/gt_boxes"] = gt_boxes
        store[key + "/gt_ids"] = gt_ids
        ct, bt, bm = _gcv_targets(anchors, None, gt_boxes, gt_ids, -1)
        _pack_targets(store, key + "/naive/", ct, bt, bm)
        npos = (ct > 0).sum(axis=1)
        # OHEM needs cls_preds; pick the first seed whose cut-offs have a clear margin
        for logit_seed in range(7 * 10**5 + 100 * len(store), 7 * 10**5 + 100 * len(store) + 50):
            logits = normal_logits(logit_seed, (gt_boxes.shape[0], n_anchors, NUM_FG + 1))
            cto, bto, bmo = _gcv_targets(anchors, logits, gt_boxes, gt_ids, 3)
            if ohem_margin_ok(anchors, logits, gt_boxes, gt_ids, cto):
                break
        else:
            raise RuntimeError(f"no OHEM logits seed with a clear margin for {key}")
        store[key + "/ohem/logit_seed"] = np.int64(logit_seed)
        _pack_targets(store, key + "/ohem/", cto, bto, bmo)
        print(
            f"targets {key}: G={gt_boxes.shape[1]} positives {npos.tolist()} "
            f"ohem negatives {(cto == 0).sum(axis=1).tolist()} (logit seed {logit_seed})"
        )
    store["batches"] = np.asarray([b[0] for b in batches])
    return store


def _gcv_loss(cls_preds, box_preds, cls_targets, box_targets, **kw):
    mx = _mx()
    from gluoncv.loss import SSDMultiBoxLoss

    loss = SSDMultiBoxLoss(**kw)
    s, c, b = loss(mx.nd.array(cls_preds), mx.nd.array(box_preds), mx.nd.array(cls_targets), mx.nd.array(box_targets))
    return [np.broadcast_to(v[0].asnumpy(), (cls_preds.shape[0],)).astype(np.float32) for v in (s, c, b)]


def build_loss(targets_store, n_anchors):
    """SSDMultiBoxLoss per image on the target batches (batch-wise and, by one call per image,
    sample-wise normalisation), with min_hard_negatives, other rho/lambd, and a no-positive batch."""
    store = {}
    cases = []
    for key in targets_store["batches"]:
        key = str(key)
        for variant in ("naive", "ohem"):
            cases.append((f"{key}/{variant}", key, variant, {}))
    cases.append(("b0/naive/minhn50", "b0", "naive", {"min_hard_negatives": 50}))
    cases.append(("b1/naive/rho0.5_lambd2", "b1", "naive", {"rho": 0.5, "lambd": 2.0}))
    cases.append(("b2/naive/ratio1", "b2", "naive", {"negative_mining_ratio": 1}))
    cases.append(("nopos/minhn0", "nopos", "naive", {}))
    cases.append(("nopos/minhn8", "nopos", "naive", {"min_hard_negatives": 8}))
    for ci, (case, key, variant, kw) in enumerate(cases):
        if key == "nopos":
            batch = 2
            cls_targets = np.zeros((batch, n_anchors), np.int64)
            box_targets = np.zeros((batch, n_anchors, 4), np.float32)
        else:
            batch = targets_store[key + "/gt_boxes"].shape[0]
            cls_targets, box_targets, _ = unpack_targets(targets_store, f"{key}/{variant}/", batch, n_anchors)
        ratio = kw.get("negative_mining_ratio", 3)
        for seed in range(5 * 10**5 + 100 * ci, 5 * 10**5 + 100 * ci + 50):
            cls_preds = normal_logits(seed, (batch, n_anchors, NUM_FG + 1), scale=1.5)
            if hard_negative_margin_ok(cls_preds, cls_targets, ratio, kw.get("min_hard_negatives", 0)):
                break
        else:
            raise RuntimeError(f"no loss seed with a clear hard-negative margin for {case}")
        box_preds = normal_logits(seed + 7, (batch, n_anchors, 4))
        s, c, b = _gcv_loss(cls_preds, box_preds, cls_targets, box_targets, **kw)
        per_image = [
            _gcv_loss(cls_preds[i : i + 1], box_preds[i : i + 1], cls_targets[i : i + 1], box_targets[i : i + 1], **kw)
            for i in range(batch)
        ]
        store[case + "/seed"] = np.int64(seed)
        store[case + "/kwargs"] = np.asarray(json.dumps(kw))
        store[case + "/targets"] = np.asarray(f"{key}/{variant}")
        store[case + "/batch"] = np.asarray([s, c, b], np.float32)
        store[case + "/sample"] = np.asarray([[p[j][0] for p in per_image] for j in range(3)], np.float32)
        print(f"loss {case}: sum {np.round(s, 4).tolist()}")
    store["cases"] = np.asarray([c[0] for c in cases])
    return store


def build_coders(anchors):
    """NormalizedBoxCenterDecoder (as SSD builds it) and both class decoders."""
    mx = _mx()
    from gluoncv.nn.coder import MultiClassDecoder, MultiPerClassDecoder, NormalizedBoxCenterDecoder

    store = {}
    seed = 4242
    box_preds = normal_logits(seed, (2, anchors.shape[0], 4))
    box_preds[1] *= 3.0
    dec = NormalizedBoxCenterDecoder((0.1, 0.1, 0.2, 0.2))
    store["box/seed"] = np.int64(seed)
    store["box/scale"] = np.asarray([1.0, 3.0], np.float32)
    store["box/decoded"] = dec(mx.nd.array(box_preds), mx.nd.array(anchors[None])).asnumpy()
    # the element-wise fallback (minimal_opset=True) must give the same boxes
    alt = NormalizedBoxCenterDecoder((0.1, 0.1, 0.2, 0.2), minimal_opset=True)
    alt_out = alt(mx.nd.array(box_preds), mx.nd.array(anchors[None])).asnumpy()
    print(f"box decoder: box_decode vs fallback max diff {np.abs(alt_out - store['box/decoded']).max():.2e}")

    seed = 4343
    probs = class_decoder_probs(seed)
    store["cls/seed"] = np.int64(seed)
    ids, scores = MultiClassDecoder()(mx.nd.array(probs))
    store["cls/argmax_ids"] = ids.asnumpy().astype(np.int8)
    store["cls/argmax_scores"] = scores.asnumpy().astype(np.float32)
    ids, scores = MultiPerClassDecoder(NUM_FG + 1)(mx.nd.array(probs))
    ids = ids.asnumpy()
    store["cls/per_class_ids"] = ids.astype(np.int8)
    keep = ids.reshape(-1) >= 0
    store["cls/per_class_score_index"] = np.nonzero(keep)[0].astype(np.int32)
    store["cls/per_class_score_values"] = scores.asnumpy().reshape(-1)[keep].astype(np.float32)
    assert not np.any(scores.asnumpy().reshape(-1)[~keep])
    print(f"class decoders: argmax valid {(store['cls/argmax_ids'] >= 0).sum()}, per-class valid {keep.sum()}")
    return store


def gcv_postprocess(cls_preds, box_preds, anchors, decoder="per_class", nms_thresh=0.45, nms_topk=400, post_nms=100):
    """GluonCV's SSD inference path on raw outputs (ssd.py forward, inference branch)."""
    mx = _mx()
    from gluoncv.nn.coder import MultiClassDecoder, MultiPerClassDecoder, NormalizedBoxCenterDecoder

    nd = mx.nd
    cls_preds = nd.array(cls_preds) if isinstance(cls_preds, np.ndarray) else cls_preds
    box_preds = nd.array(box_preds) if isinstance(box_preds, np.ndarray) else box_preds
    anchors = nd.array(anchors) if isinstance(anchors, np.ndarray) else anchors
    num_fg = cls_preds.shape[-1] - 1
    bboxes = NormalizedBoxCenterDecoder((0.1, 0.1, 0.2, 0.2))(box_preds, anchors.reshape((1, -1, 4)))
    probs = nd.softmax(cls_preds, axis=-1)
    if decoder == "per_class":
        cls_ids, scores = MultiPerClassDecoder(num_fg + 1, thresh=0.01)(probs)
        result = nd.concat(
            *[
                nd.concat(
                    cls_ids.slice_axis(axis=-1, begin=i, end=i + 1),
                    scores.slice_axis(axis=-1, begin=i, end=i + 1),
                    bboxes,
                    dim=-1,
                )
                for i in range(num_fg)
            ],
            dim=1,
        )
    else:
        cls_ids, scores = MultiClassDecoder(thresh=0.01)(probs)
        result = nd.concat(cls_ids.expand_dims(-1), scores.expand_dims(-1), bboxes, dim=-1)
    if 0 < nms_thresh < 1:
        result = nd.contrib.box_nms(
            result,
            overlap_thresh=nms_thresh,
            topk=nms_topk,
            valid_thresh=0.01,
            id_index=0,
            score_index=1,
            coord_start=2,
            force_suppress=False,
        )
        if post_nms > 0:
            result = result.slice_axis(axis=1, begin=0, end=post_nms)
    return (
        result.slice_axis(axis=2, begin=0, end=1),
        result.slice_axis(axis=2, begin=1, end=2),
        result.slice_axis(axis=2, begin=2, end=6),
    )


def check_postprocess_matches_net():
    """Our restatement of the inference path equals ``net(x)`` of a random-init ssd_300 model.

    The raw outputs are captured inside the inference call itself (MKL-DNN may pick other conv kernels
    in train mode, so a separate train-mode forward differs in the last bits).
    """
    mx = _mx()
    import gluoncv

    net = gluoncv.model_zoo.get_model("ssd_300_vgg16_atrous_voc", pretrained=False, pretrained_base=False)
    net.initialize()
    x = mx.nd.array(np.random.RandomState(5).uniform(-2, 2, (2, 3, 300, 300)).astype(np.float32))
    captured = {}
    net.bbox_decoder.register_forward_pre_hook(lambda blk, inputs: captured.update(box=inputs))
    orig_softmax = mx.nd.softmax

    def spy_softmax(data, *args, **kwargs):
        captured["logits"] = data
        return orig_softmax(data, *args, **kwargs)

    mx.nd.softmax = spy_softmax
    try:
        ids, scores, bboxes = net(x)
    finally:
        mx.nd.softmax = orig_softmax
    box_preds, anchors = captured["box"]
    mine = gcv_postprocess(captured["logits"], box_preds, anchors)
    for a, b in zip((ids, scores, bboxes), mine):
        if not np.array_equal(a.asnumpy(), b.asnumpy()):
            raise AssertionError("restated GluonCV post-processing differs from net(x)")
    print(
        f"post-processing: restatement equals net(x) in inference mode "
        f"({(ids.asnumpy() >= 0).sum(axis=1).ravel().tolist()} detections)"
    )


POSTPROCESS_CONFIGS = (
    ("per_class", dict(decoder="per_class")),
    ("argmax", dict(decoder="argmax")),
    ("per_class_t0.5_k200_p50", dict(decoder="per_class", nms_thresh=0.5, nms_topk=200, post_nms=50)),
)


def build_postprocess(anchors):
    check_postprocess_matches_net()
    store = {}
    for seed in range(9000, 9050):
        cls_logits, box_preds = postprocess_inputs(seed, anchors)
        if nms_margin_ok(cls_logits, box_preds, anchors):
            break
    else:
        raise RuntimeError("no post-processing seed with clear NMS margins")
    store["seed"] = np.int64(seed)
    store["batch"] = np.int64(cls_logits.shape[0])
    ncand = (softmax_np(cls_logits)[..., 1:] > 0.01).sum(axis=(1, 2))
    print(f"post-processing inputs: seed {seed}, candidates above 0.01 per image {ncand.tolist()}")
    for name, cfg in POSTPROCESS_CONFIGS:
        ids, scores, bboxes = gcv_postprocess(cls_logits, box_preds, anchors, **cfg)
        store[name + "/config"] = np.asarray(json.dumps(cfg))
        store[name + "/ids"] = ids.asnumpy()[..., 0].astype(np.int8)
        store[name + "/scores"] = scores.asnumpy()[..., 0].astype(np.float32)
        store[name + "/bboxes"] = bboxes.asnumpy().astype(np.float32)
        print(f"post-processing {name}: detections per image {(store[name + '/ids'] >= 0).sum(axis=1).tolist()}")
    store["configs"] = np.asarray([n for n, _ in POSTPROCESS_CONFIGS])
    return store


def build_tutorial(anchors_store):
    """The seed tutorial's printed numbers, reproduced with GluonCV (and checked against the text)."""
    mx = _mx()
    anchors = anchors_store["ssd_300_vgg16_atrous_voc"]
    gt_boxes, gt_ids = tutorial_batch()
    logits = normal_logits(11, (2, anchors.shape[0], NUM_FG + 1))
    ct, _, _ = _gcv_targets(anchors, logits, gt_boxes, gt_ids, 3)
    ctn, _, _ = _gcv_targets(anchors, None, gt_boxes, gt_ids, -1)
    sm = mx.nd.softmax(mx.nd.array([[-1, -2, 3, 4, 6.5, 6.4]])).asnumpy()[0]
    out = {
        "num_anchors": {n: int(anchors_store[n].shape[0]) for n in ZOO_MODELS},
        "first_anchors_ssd_300": np.round(anchors[:5].astype(np.float64), 2).tolist(),
        "num_positive_batch": int((ct > 0).sum()),
        "num_positive_sample": (ct > 0).sum(axis=1).astype(int).tolist(),
        "ohem_negatives": (ct == 0).sum(axis=1).astype(int).tolist(),
        "ohem_ignored": (ct == -1).sum(axis=1).astype(int).tolist(),
        "naive_background": (ctn == 0).sum(axis=1).astype(int).tolist(),
        "positive_labels_image0": sorted(set(ct[0][ct[0] > 0].astype(int).tolist())),
        "softmax_input": [-1, -2, 3, 4, 6.5, 6.4],
        "softmax": [round(float(v), 6) for v in sm],
        "ohem_logit_seed": 11,
    }
    expected = {
        "num_positive_batch": 36,
        "num_positive_sample": [13, 23],
        "ohem_negatives": [39, 69],
        "ohem_ignored": [8680, 8640],
    }
    for k, v in expected.items():
        if out[k] != v:
            raise AssertionError(f"tutorial number {k}: GluonCV gives {out[k]}, the tutorial {v}")
    return out


PARTS = ("anchors", "targets", "loss", "coders", "postprocess", "tutorial")


def _save(path, store):
    np.savez_compressed(path, **store)
    print(f"wrote {path} ({os.path.getsize(path) / 1024:.1f} KiB)")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests", "data"))
    parser.add_argument(
        "--only", default="", help=f"comma-separated parts to rebuild, of {PARTS} (the others are read from --out)"
    )
    args = parser.parse_args(argv)
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    mx = _mx()
    import gluoncv

    mx.random.seed(0)
    np.random.seed(0)
    print(f"mxnet {mx.__version__}, gluoncv {gluoncv.__version__}, numpy {np.__version__}")

    parts = set(args.only.split(",")) if args.only else set(PARTS)
    unknown = parts - set(PARTS)
    if unknown:
        parser.error(f"--only: unknown part(s) {sorted(unknown)}; choose from {PARTS}")

    def path(name):
        return os.path.join(out, name)

    if "anchors" in parts:
        anchors_store = build_zoo_anchors()
        _save(path("core_anchors.npz"), anchors_store)
    else:
        anchors_store = dict(np.load(path("core_anchors.npz")))
    anchors = anchors_store["ssd_300_vgg16_atrous_voc"]
    if "targets" in parts:
        targets = build_targets(anchors)
        _save(path("core_targets.npz"), targets)
    else:
        targets = dict(np.load(path("core_targets.npz")))
    if "loss" in parts:
        _save(path("core_loss.npz"), build_loss(targets, anchors.shape[0]))
    if "coders" in parts:
        _save(path("core_coders.npz"), build_coders(anchors))
    if "postprocess" in parts:
        _save(path("core_postprocess.npz"), build_postprocess(anchors))
    if "tutorial" in parts:
        tutorial = build_tutorial(anchors_store)
        with open(path("core_tutorial.json"), "w") as f:
            json.dump(tutorial, f, indent=1)
        print(f"wrote {path('core_tutorial.json')}: {tutorial}")
    total = sum(os.path.getsize(os.path.join(out, f)) for f in os.listdir(out) if f.startswith("core_"))
    print(f"core fixtures total {total / 1024:.1f} KiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
