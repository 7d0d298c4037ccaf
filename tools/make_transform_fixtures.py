"""Regenerate the GluonCV fixtures of ``ssdkit.data.transforms.presets.ssd`` (the deterministic parts).

Run under the GluonCV virtualenv (``tools/make_gluoncv_venv.sh``; never a dependency of ssdkit)::

    .venv-gluoncv/bin/python tools/make_transform_fixtures.py [--out tests/data]

It writes ``tests/data/presets_ssd.npz`` and ``tests/data/presets_ssd_*.png``;
``tests/test_data_transforms_presets_ssd.py`` loads them. Inputs are rebuilt from seeds by :func:`make_val_case`
(NumPy's legacy ``RandomState``, the same numbers under NumPy 1.23 and 2.x), which the test imports. Stored:

- ``SSDDefaultValTransform(W, H)`` on three images (enlarging, shrinking, mixed: MXNet's cubic, area and linear);
- ``SSDDefaultTrainTransform(300, 300)`` once without and once with the ssd_300 anchors under one seed: the
  augmented label of the first and the targets of the second (the augmentation is random; the targets of a given
  augmented label are deterministic);
- ``load_test`` of two PNG files (one bounded by ``short``, one by ``max_size``).
"""

from __future__ import annotations

import argparse
import os
import random

import numpy as np

VAL_CASES = ((0, 40, 30, 64, 64), (1, 120, 100, 64, 48), (2, 50, 70, 64, 64))  # seed, h, w, out_w, out_h
LOAD_CASES = ((3, 90, 120, 64, 1000), (4, 60, 200, 64, 150))  # seed, h, w, short, max_size
TRAIN_SEED = 5


def make_val_case(seed: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """An HWC uint8 image and a ``[N, 6]`` label (x1, y1, x2, y2, class, difficult) from ``seed``."""
    rs = np.random.RandomState(seed)
    image = rs.randint(0, 256, size=(height, width, 3)).astype(np.uint8)
    n = 4
    x1 = rs.uniform(0, width * 0.6, n)
    y1 = rs.uniform(0, height * 0.6, n)
    x2 = np.minimum(x1 + rs.uniform(8, width * 0.5, n), width - 1)
    y2 = np.minimum(y1 + rs.uniform(8, height * 0.5, n), height - 1)
    label = np.stack([x1, y1, x2, y2, rs.randint(0, 20, n), rs.randint(0, 2, n)], axis=1)
    return image, label.astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests", "data"))
    args = parser.parse_args()
    import mxnet as mx
    from gluoncv import model_zoo
    from gluoncv.data.transforms.presets.ssd import SSDDefaultTrainTransform, SSDDefaultValTransform, load_test
    from PIL import Image

    out: dict[str, np.ndarray] = {}
    for seed, h, w, out_w, out_h in VAL_CASES:
        image, label = make_val_case(seed, h, w)
        x, bbox = SSDDefaultValTransform(out_w, out_h)(mx.nd.array(image, dtype="uint8"), label)
        out[f"val_{seed}_image"] = x.asnumpy()
        out[f"val_{seed}_label"] = bbox

    net = model_zoo.get_model("ssd_300_vgg16_atrous_voc", pretrained=False, pretrained_base=False)
    net.initialize()
    with mx.autograd.train_mode():
        _, _, anchors = net(mx.nd.zeros((1, 3, 300, 300)))
    image, label = make_val_case(TRAIN_SEED, 240, 320)
    results = []
    for with_anchors in (False, True):
        np.random.seed(TRAIN_SEED)
        random.seed(TRAIN_SEED)
        transform = SSDDefaultTrainTransform(300, 300, anchors if with_anchors else None)
        results.append(transform(mx.nd.array(image, dtype="uint8"), label))
    out["train_label"] = results[0][1]
    out["train_cls_targets"] = results[1][1].asnumpy().astype(np.int8)
    out["train_box_targets"] = results[1][2].asnumpy()
    np.testing.assert_array_equal(results[0][0].asnumpy(), results[1][0].asnumpy())  # one augmentation

    for seed, h, w, short, max_size in LOAD_CASES:
        path = os.path.join(args.out, f"presets_ssd_{seed}.png")
        Image.fromarray(make_val_case(seed, h, w)[0]).save(path)
        x, orig = load_test(path, short=short, max_size=max_size)
        out[f"load_{seed}_x"] = x.asnumpy()
        out[f"load_{seed}_orig"] = orig
    np.savez_compressed(os.path.join(args.out, "presets_ssd.npz"), **out)
    print("wrote", sorted(out))


if __name__ == "__main__":
    main()
