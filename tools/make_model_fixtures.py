"""Regenerate the whole-network GluonCV fixtures of ssdkit's zoo models (``tests/data/model_*``).

Run under the GluonCV virtualenv (never a dependency of ssdkit)::

    .venv-gluoncv/bin/python tools/make_model_fixtures.py [--out tests/data]   # tools/make_gluoncv_venv.sh makes it

It writes

- ``model_gluon_names.json``: the names, shapes and parameter counts of GluonCV's 12 SSD zoo models and 4
  ImageNet bases, as Gluon's ``save_parameters`` writes them (``*_custom`` with 3 classes);
- ``model_mxnet_v2.params`` / ``model_mxnet_v3.params``: small files MXNet itself wrote (every dense dtype,
  both NDArray format versions, an empty shape, a scalar), and ``model_mxnet_expected.npz`` with their arrays;
- ``model_outputs.npz``: for each of ``FIXTURE_MODELS``, random weights (BatchNorm statistics and the L2Norm
  scale too) made from a seed by ``random_gluon_params`` below, saved by Gluon, loaded back, and GluonCV's
  outputs on a fixed input: raw ``cls_preds`` / ``box_preds`` at ``RAW_ROWS`` anchors (BatchNorm on its
  running statistics), all anchors, and the detections; plus three SGD steps of ``train_ssd.py``'s recipe on
  ``TRAIN_MODEL``. The sha256 of each file Gluon saved is stored: ``write_params`` below (pure numpy) rebuilds
  it from the seed, and the tests check the digest before using it, so the 100 MB weight files need not be
  kept in the repository.

The first half of this file is pure numpy (the tests import it); MXNet is imported only in the second half.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import struct
import sys
import zlib

import numpy as np

# ---------------------------------------------------------------------------------------------------
# Pure-numpy half (shared with tests/test_models_weights.py)
# ---------------------------------------------------------------------------------------------------
ZOO = tuple(
    f"ssd_{a}_{d}"
    for a in ("300_vgg16_atrous", "512_vgg16_atrous", "512_resnet50_v1", "512_mobilenet1.0")
    for d in ("voc", "coco", "custom")
)
BASES = ("vgg16_atrous_300", "vgg16_atrous_512", "resnet50_v1", "mobilenet1.0")
CUSTOM_CLASSES = ("a", "b", "c")
# model -> (seed of its weights and input, input side)
FIXTURE_MODELS = {
    "ssd_300_vgg16_atrous_voc": (1, 300),
    "ssd_512_vgg16_atrous_coco": (2, 512),
    "ssd_512_resnet50_v1_voc": (3, 512),
    "ssd_512_mobilenet1.0_voc": (4, 512),
    "ssd_512_mobilenet1.0_custom": (5, 512),
}
RAW_ROWS = 768  # anchors whose raw predictions are stored (all of them would be 8 MB)
TRAIN_MODEL, TRAIN_SIDE, TRAIN_STEPS = "ssd_300_vgg16_atrous_voc", 300, 3
TRAIN_LR, TRAIN_MOMENTUM, TRAIN_WD = 1e-3, 0.9, 5e-4
TRAIN_GT_BOXES = np.array(
    [
        [[20, 30, 150, 200], [160, 40, 290, 260], [-1, -1, -1, -1]],
        [[50, 60, 120, 110], [10, 150, 140, 290], [180, 200, 260, 280]],
    ],
    np.float32,
)
TRAIN_GT_IDS = np.array([[[14], [6], [-1]], [[11], [2], [19]]], np.float32)


def is_constant(name: str) -> bool:
    """GluonCV constants (not learned, not random): anchors and the VGG input scale."""
    return name.endswith(".anchors") or name.endswith("init_scale")


def random_param(name: str, shape, seed: int) -> np.ndarray:
    """The random value of parameter ``name``: float32, a function of (name, shape, seed) only."""
    rng = np.random.RandomState((seed * 1000003 + zlib.crc32(name.encode())) % (2**32))
    shape = tuple(int(s) for s in shape)
    leaf = name.rsplit(".", 1)[-1].rsplit("_", 1)[-1]
    if name.endswith(("running_var", "moving_var")):
        value = rng.uniform(0.5, 2.0, shape)
    elif name.endswith(("running_mean", "moving_mean")):
        value = rng.uniform(-0.2, 0.2, shape)
    elif leaf == "gamma":
        value = rng.uniform(0.8, 1.4, shape)
    elif leaf in ("beta", "bias"):
        value = rng.uniform(-0.1, 0.1, shape)
    elif leaf == "scale":  # L2Norm
        value = rng.uniform(10.0, 30.0, shape)
    else:  # conv weights: He-uniform
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
        value = rng.uniform(-1.0, 1.0, shape) * np.sqrt(6.0 / fan_in)
    return value.astype(np.float32)


def random_gluon_params(
    entries, seed: int, constants: dict | None = None, factors: dict | None = None
) -> dict[str, np.ndarray]:
    """``{name: array}`` in file order for ``entries`` (``[name, shape]`` pairs); constants from ``constants``;
    ``factors`` (name -> float32 factor) rescales the heads so that their outputs have a useful spread."""
    out = {}
    for name, shape in entries:
        if is_constant(name):
            out[name] = constants[name]
        else:
            out[name] = random_param(name, shape, seed)
            if factors and name in factors:
                out[name] = out[name] * np.float32(factors[name])
    return out


def gluon_anchor_layer(side: int, smin: float, smax: float, ratios, step: float, offsets=(0.5, 0.5)) -> np.ndarray:
    """GluonCV's ``SSDAnchorGenerator`` constant of one layer, ``[1, 1, side, side, K*4]`` float32: per position
    (cx, cy, w, h) of a ``smin`` square, a ``sqrt(smin*smax)`` square, then ``smin*sqrt(r), smin/sqrt(r)``
    for each ratio after the first; computed in float64 as GluonCV does, then stored as float32."""
    wh = [(smin, smin), (np.sqrt(smin * smax), np.sqrt(smin * smax))]
    wh += [(smin * np.sqrt(r), smin / np.sqrt(r)) for r in ratios[1:]]
    cy = (np.arange(side, dtype=np.float64) + offsets[0]) * step
    cx = (np.arange(side, dtype=np.float64) + offsets[1]) * step
    out = np.empty((side, side, len(wh), 4), np.float64)
    out[..., 0] = cx[None, :, None]
    out[..., 1] = cy[:, None, None]
    out[..., 2:] = np.array(wh)[None, None]
    return out.reshape(1, 1, side, side, -1).astype(np.float32)


def gluon_constants(listing, anchor_spec) -> dict[str, np.ndarray]:
    """The constants of a GluonCV SSD file: anchors on each layer's stored grid (``anchor_spec`` has ``sizes``,
    ``ratios``, ``steps``), and the VGG input scale ``std * 255`` computed in float32."""
    out = {}
    for key, shape in listing:
        if key.endswith("init_scale"):
            out[key] = (np.array([0.229, 0.224, 0.225], np.float32) * np.float32(255)).reshape(1, 3, 1, 1)
        elif key.endswith(".anchors"):
            i = int(key.split(".")[1])
            out[key] = gluon_anchor_layer(
                shape[2], anchor_spec.sizes[i], anchor_spec.sizes[i + 1], anchor_spec.ratios[i], anchor_spec.steps[i]
            )
    return out


def fixed_input(seed: int, side: int, batch: int = 1) -> np.ndarray:
    """An ImageNet-normalised input ``[B, 3, side, side]`` with smooth structure (not white noise)."""
    rng = np.random.RandomState(seed)
    y, x = np.mgrid[0:side, 0:side].astype(np.float64) / side
    chans = []
    for _ in range(batch * 3):
        a, b, c, d = rng.uniform(-3, 3, 4)
        chans.append(np.sin(a * 6 * x + b) * np.cos(c * 6 * y + d) + rng.normal(0, 0.2, (side, side)))
    return (1.5 * np.stack(chans).reshape(batch, 3, side, side)).astype(np.float32)


def raw_rows(seed: int, num_anchors: int) -> np.ndarray:
    return np.sort(np.random.RandomState(seed + 77).choice(num_anchors, min(RAW_ROWS, num_anchors), replace=False))


_DTYPE_FLAGS = {
    np.dtype("<f4"): 0,
    np.dtype("<f8"): 1,
    np.dtype("<f2"): 2,
    np.dtype("u1"): 3,
    np.dtype("<i4"): 4,
    np.dtype("i1"): 5,
    np.dtype("<i8"): 6,
    np.dtype("?"): 7,
}


def write_params(path: str, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` as MXNet 1.x ``mx.nd.save`` does (NDArray list, V2 arrays on cpu(0))."""
    with open(path, "wb") as f:
        f.write(struct.pack("<QQQ", 0x112, 0, len(arrays)))
        for arr in arrays.values():
            arr = np.ascontiguousarray(arr)
            f.write(struct.pack("<Iii", 0xF993FAC9, 0, arr.ndim))
            f.write(struct.pack(f"<{arr.ndim}q", *arr.shape))
            f.write(struct.pack("<iii", 1, 0, _DTYPE_FLAGS[arr.dtype]))
            f.write(arr.tobytes())
        f.write(struct.pack("<Q", len(arrays)))
        for name in arrays:
            raw = name.encode()
            f.write(struct.pack("<Q", len(raw)) + raw)


def sha256_of(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def reader_fixture_arrays(np_semantics: bool) -> dict[str, np.ndarray]:
    """The arrays of the two MXNet-written reader fixtures."""
    rng = np.random.RandomState(11 if np_semantics else 10)
    out = {
        "f32": rng.randn(2, 3).astype(np.float32),
        "f64": rng.randn(4).astype(np.float64),
        "f16": rng.randn(3, 1, 2).astype(np.float16),
        "u8": np.array([0, 255, 7], np.uint8),
        "i32": np.array([[-5, 7], [2**31 - 1, -(2**31)]], np.int32),
        "i8": np.array([-128, 127], np.int8),
        "i64": np.array([2**40, -3], np.int64),
        "conv.weight": rng.randn(4, 2, 3, 3).astype(np.float32),
    }
    if np_semantics:
        out.update(
            {
                "scalar": np.array(3.5, np.float32),
                "bool": np.array([True, False, True]),
                "empty": np.zeros((2, 0, 3), np.float32),
            }
        )
    return out


# ---------------------------------------------------------------------------------------------------
# GluonCV half
# ---------------------------------------------------------------------------------------------------
def _gluon_net(name: str, side: int):
    import mxnet as mx
    from gluoncv import model_zoo

    if name in BASES:
        if name.startswith("vgg16_atrous"):
            from gluoncv.model_zoo.ssd.vgg_atrous import get_vgg_atrous_extractor

            net = get_vgg_atrous_extractor(16, int(name[-3:]), pretrained=False)
        else:
            net = model_zoo.get_model(name, pretrained=False)
    else:
        kw = {"classes": list(CUSTOM_CLASSES)} if name.endswith("custom") else {}
        net = model_zoo.get_model(name, pretrained=False, pretrained_base=False, **kw)
    net.initialize()
    net(mx.nd.zeros((1, 3, side, side)))  # infers the deferred shapes
    return net


def _names_and_counts(names: list[str]) -> tuple[dict, dict]:
    listing, counts = {}, {}
    for name in names:
        side = 224 if name in ("resnet50_v1", "mobilenet1.0") else (512 if "512" in name else 300)
        params = _gluon_net(name, side)._collect_params_with_prefix()
        listing[name] = [[k, list(p.shape)] for k, p in params.items()]
        counts[name] = int(
            sum(
                int(np.prod(p.shape))
                for k, p in params.items()
                if not is_constant(k) and not k.endswith(("running_mean", "running_var", "moving_mean", "moving_var"))
            )
        )
        print(f"{name}: {len(params)} names, {counts[name]} parameters", flush=True)
    return listing, counts


def _reader_fixtures(out: str) -> None:
    import mxnet as mx

    v2 = reader_fixture_arrays(False)
    mx.nd.save(os.path.join(out, "model_mxnet_v2.params"), {k: mx.nd.array(v, dtype=v.dtype) for k, v in v2.items()})
    mx.npx.set_np()
    try:
        v3 = reader_fixture_arrays(True)
        mx.npx.save(
            os.path.join(out, "model_mxnet_v3.params"), {k: mx.np.array(v, dtype=v.dtype) for k, v in v3.items()}
        )
    finally:
        mx.npx.reset_np()
    expected = {f"v2/{k}": v for k, v in v2.items()}
    expected.update({f"v3/{k}": v for k, v in v3.items()})
    np.savez_compressed(os.path.join(out, "model_mxnet_expected.npz"), **expected)


def _raw_forward(net, x):
    """GluonCV SSD's training-branch outputs, computed in predict mode (BatchNorm on running statistics)."""
    import mxnet as mx

    feats = net.features(x)
    cls = [mx.nd.flatten(mx.nd.transpose(cp(f), (0, 2, 3, 1))) for f, cp in zip(feats, net.class_predictors)]
    box = [mx.nd.flatten(mx.nd.transpose(bp(f), (0, 2, 3, 1))) for f, bp in zip(feats, net.box_predictors)]
    anchors = [mx.nd.reshape(ag(f), shape=(1, -1)) for f, ag in zip(feats, net.anchor_generators)]
    cls = mx.nd.concat(*cls, dim=1).reshape((0, -1, net.num_classes + 1))
    box = mx.nd.concat(*box, dim=1).reshape((0, -1, 4))
    return cls.asnumpy(), box.asnumpy(), mx.nd.concat(*anchors, dim=1).reshape((1, -1, 4)).asnumpy()


def _set_random(net, listing: list, seed: int, factors: dict | None = None) -> dict:
    import mxnet as mx

    params = net._collect_params_with_prefix()
    constants = {k: p.data().asnumpy() for k, p in params.items() if is_constant(k)}
    values = random_gluon_params(listing, seed, constants, factors)
    for k, p in params.items():
        p.set_data(mx.nd.array(values[k]))
    return values


def weight_factors(net, listing: list, seed: int, x) -> dict[str, float]:
    """Factors (name -> float32 number) for the random weights of ``net``. VGG (no BatchNorm): each conv, in
    forward order, scaled so that its output has std 1 on ``x`` (otherwise the 0-255 input scale makes
    activations and the first SGD steps explode). Every model: head weights scaled so that class logits have
    std 1.5 and box outputs std 0.5 on ``x``."""
    from mxnet.gluon import nn

    factors: dict[str, float] = {}
    for group in ("stages", "extras") if hasattr(net.features, "stages") else ():
        for i, seq in enumerate(getattr(net.features, group)):
            for j, layer in enumerate(seq):
                if not isinstance(layer, nn.Conv2D):
                    continue
                _set_random(net, listing, seed, factors)
                seen = []

                def record(blk, inp, out, seen=seen):
                    seen.append(float(out.asnumpy().std()))

                handle = layer.register_forward_hook(record)
                net.features(x)
                handle.detach()
                factors[f"features.{group}.{i}.{j}.weight"] = float(np.float32(1.0 / seen[0]))
    _set_random(net, listing, seed, factors)
    for i, feat in enumerate(net.features(x)):
        for kind, heads, target in (("class", net.class_predictors, 1.5), ("box", net.box_predictors, 0.5)):
            conv = heads[i].predictor
            out = conv(feat) - conv.bias.data().reshape((1, -1, 1, 1))
            factors[f"{kind}_predictors.{i}.predictor.weight"] = float(np.float32(target / out.asnumpy().std()))
    return factors


def _model_outputs(name: str, listing: list, tmp: str) -> dict:
    import mxnet as mx

    seed, side = FIXTURE_MODELS[name]
    net = _gluon_net(name, side)
    x = mx.nd.array(fixed_input(seed, side))
    factors = weight_factors(net, listing, seed, x)
    values = _set_random(net, listing, seed, factors)
    path = os.path.join(tmp, f"{name}.params")
    net.save_parameters(path)
    ours = path + ".numpy"
    write_params(ours, values)
    digest = sha256_of(path)
    if sha256_of(ours) != digest:
        raise SystemExit(f"{name}: write_params does not rebuild Gluon's file byte for byte")
    os.unlink(ours)
    net = _gluon_net(name, side)
    net.load_parameters(path)  # what a user's zoo file goes through
    os.unlink(path)
    cls, box, anchors = _raw_forward(net, x)
    ids, scores, bboxes = (o.asnumpy() for o in net(x))
    rows = raw_rows(seed, cls.shape[1])
    valid = scores[0, :, 0] >= 0
    gaps = np.diff(np.sort(scores[0, valid, 0]))
    print(
        f"{name}: cls |max| {np.abs(cls).max():.3g}, box |max| {np.abs(box).max():.3g}, {int(valid.sum())} "
        f"detections, smallest score gap {gaps.min() if gaps.size else float('nan'):.2g}",
        flush=True,
    )
    return {
        "sha256": digest,
        "factors": json.dumps(factors),
        "rows": rows,
        "cls_rows": cls[:, rows],
        "box_rows": box[:, rows],
        "cls_scale": np.abs(cls).max(),
        "box_scale": np.abs(box).max(),
        "anchors": anchors[0],
        "ids": ids[0],
        "scores": scores[0],
        "bboxes": bboxes[0],
    }


def _train_steps(listing: list, factors: dict) -> dict:
    """Three steps of train_ssd.py's recipe on TRAIN_MODEL with its fixture weights (``factors``): targets
    without sampling, SSDMultiBoxLoss with hard negative mining, SGD (lr, momentum, wd) via gluon.Trainer,
    the loss summed over the batch."""
    import mxnet as mx
    from gluoncv.loss import SSDMultiBoxLoss
    from gluoncv.model_zoo.ssd.target import SSDTargetGenerator
    from mxnet import autograd, gluon

    seed = FIXTURE_MODELS[TRAIN_MODEL][0]
    net = _gluon_net(TRAIN_MODEL, TRAIN_SIDE)
    _set_random(net, listing, seed, factors)
    x = mx.nd.array(fixed_input(seed + 100, TRAIN_SIDE, batch=TRAIN_GT_BOXES.shape[0]))
    with autograd.train_mode():
        _, _, anchors = net(mx.nd.zeros((1, 3, TRAIN_SIDE, TRAIN_SIDE)))
    target = SSDTargetGenerator(iou_thresh=0.5, stds=(0.1, 0.1, 0.2, 0.2), negative_mining_ratio=-1)
    cls_t, box_t, _ = target(anchors, None, mx.nd.array(TRAIN_GT_BOXES), mx.nd.array(TRAIN_GT_IDS))
    loss_fn = SSDMultiBoxLoss()
    trainer = gluon.Trainer(
        net.collect_params(), "sgd", {"learning_rate": TRAIN_LR, "wd": TRAIN_WD, "momentum": TRAIN_MOMENTUM}
    )
    losses = []
    for _ in range(TRAIN_STEPS):
        with autograd.record():
            cls_pred, box_pred, _ = net(x)
            sum_loss, cls_loss, box_loss = loss_fn([cls_pred], [box_pred], [cls_t], [box_t])
            autograd.backward(sum_loss)
        trainer.step(1)
        losses.append(
            [
                float(sum_loss[0].sum().asscalar()),
                float(cls_loss[0].sum().asscalar()),
                float(box_loss[0].sum().asscalar()),
            ]
        )
        print(f"train step {len(losses)}: loss {losses[-1]}", flush=True)
    return {
        "train_losses": np.array(losses, np.float64),
        "train_cls_targets": cls_t.asnumpy().astype(np.int8),
        "train_num_pos": int((cls_t.asnumpy() > 0).sum()),
    }


def main(argv=None) -> int:
    import tempfile
    import warnings

    warnings.filterwarnings("ignore")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests", "data"))
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    import gluoncv
    import mxnet as mx

    _reader_fixtures(args.out)
    listing, counts = _names_and_counts(list(ZOO) + list(BASES))
    with open(os.path.join(args.out, "model_gluon_names.json"), "w") as f:
        json.dump(
            {
                "generator": f"mxnet {mx.__version__}, gluoncv {gluoncv.__version__}",
                "custom_classes": list(CUSTOM_CLASSES),
                "param_counts": counts,
                "names": listing,
            },
            f,
        )
    outputs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in FIXTURE_MODELS:
            for k, v in _model_outputs(name, listing[name], tmp).items():
                outputs[f"{name}/{k}"] = np.asarray(v)
    outputs.update(_train_steps(listing[TRAIN_MODEL], json.loads(str(outputs[f"{TRAIN_MODEL}/factors"]))))
    np.savez_compressed(os.path.join(args.out, "model_outputs.npz"), **outputs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
