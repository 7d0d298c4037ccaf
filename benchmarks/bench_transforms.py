"""SSD train / val transform speed: ssdkit against GluonCV on the same VOC-like images, side by side.

    python benchmarks/bench_transforms.py [--images 64] [--repeats 5] [--rounds 2] [--size 300]

The images (``--images`` of 500 x 375, textured, 1-5 boxes each, as JPEG bytes) are rebuilt from one seed
with ``np.random.RandomState`` in this process and in a subprocess running GluonCV in its virtualenv
(``$SSDKIT_GLUONCV_PYTHON``, the repository's ``.venv-gluoncv`` or ``--gluoncv-python``). Both sides run one
thread in one process (``torch``
``set_num_threads(1)``; ``OMP_NUM_THREADS=1`` and ``MXNET_CPU_WORKER_NTHREADS=1`` for MXNet). Timed per
pass over all images: ``train`` = ``SSDTrainTransform`` vs ``SSDDefaultTrainTransform`` on decoded images,
``train+decode`` adds JPEG decoding, ``val`` = ``SSDValTransform`` vs ``SSDDefaultValTransform``. The two
sides alternate ``--rounds`` times so a busy machine slows both alike; medians over all passes are printed
with images/s and the ratio. Without the GluonCV environment only ssdkit's numbers are printed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _gluoncv_side import DEFAULT_PYTHON as DEFAULT_GLUONCV_PYTHON  # noqa: E402
from _gluoncv_side import gluoncv_env

HEIGHT, WIDTH = 375, 500


def make_images(seed: int, n: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """``n`` textured uint8 HWC images and label arrays ``[M, 6]`` (x1, y1, x2, y2, class, difficult)."""
    rs = np.random.RandomState(seed)
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    images, labels = [], []
    for _ in range(n):
        img = np.empty((HEIGHT, WIDTH, 3), np.float32)
        for c in range(3):
            fx, fy, ph = rs.uniform(0.005, 0.05), rs.uniform(0.005, 0.05), rs.uniform(0, 6.3)
            img[..., c] = 128 + 80 * np.sin(fx * xx + ph) * np.cos(fy * yy) + rs.uniform(-40, 40)
        m = rs.randint(1, 6)
        xy = rs.uniform(0, 1, (m, 2)) * [WIDTH - 40, HEIGHT - 40]
        wh = rs.uniform(20, 300, (m, 2))
        boxes = np.concatenate([xy, np.minimum(xy + wh, [WIDTH - 1, HEIGHT - 1])], axis=1)
        for x1, y1, x2, y2 in boxes.astype(int):
            img[y1:y2, x1:x2] = rs.uniform(0, 255, 3)
        img += rs.uniform(-10, 10, img.shape)
        images.append(np.clip(img, 0, 255).astype(np.uint8))
        lab = np.concatenate([boxes, rs.randint(0, 20, (m, 1)), rs.rand(m, 1) < 0.2], axis=1)
        labels.append(lab.astype(np.float32))
    return images, labels


def median_ms(times: list[float], n: int) -> float:
    return statistics.median(times) / n * 1e3


# ------------------------------------------------------------------ GluonCV side (runs in its venv)


def gluoncv_worker(args) -> None:
    import mxnet as mx
    from gluoncv.data.transforms.presets.ssd import SSDDefaultTrainTransform, SSDDefaultValTransform

    data = np.load(args.inputs)
    jpegs = [data[f"jpeg{i}"].tobytes() for i in range(args.images)]
    images, labels = make_images(args.seed, args.images)
    nd_images = [mx.nd.array(im, dtype="uint8") for im in images]
    train = SSDDefaultTrainTransform(args.size, args.size)
    val = SSDDefaultValTransform(args.size, args.size)
    np.random.seed(args.seed)

    def run(kind):
        start = time.perf_counter()
        for i in range(args.images):
            img = mx.image.imdecode(jpegs[i]) if kind == "train+decode" else nd_images[i]
            out = (val if kind == "val" else train)(img, labels[i])
            out[0].wait_to_read()
        return time.perf_counter() - start

    for kind in ("train", "val"):
        run(kind)  # warm up
    result = {kind: [run(kind) for _ in range(args.repeats)] for kind in ("train", "train+decode", "val")}
    print(json.dumps(result))


# ------------------------------------------------------------------ ssdkit side


def ssdkit_runner(args, jpegs: list[bytes]):
    import torch
    from torchvision import tv_tensors
    from torchvision.io import decode_jpeg

    from ssdkit.data import SSDTrainTransform, SSDValTransform

    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    images, labels = make_images(args.seed, args.images)
    samples = []
    for im, lab in zip(images, labels):
        target = {
            "boxes": tv_tensors.BoundingBoxes(
                torch.from_numpy(lab[:, :4].copy()), format="XYXY", canvas_size=(HEIGHT, WIDTH)
            ),
            "labels": torch.from_numpy(lab[:, 4].astype(np.int64)),
            "difficult": torch.from_numpy(lab[:, 5].astype(np.uint8)),
        }
        samples.append((tv_tensors.Image(torch.from_numpy(im).permute(2, 0, 1).contiguous()), target))
    encoded = [torch.frombuffer(bytearray(j), dtype=torch.uint8) for j in jpegs]
    train, val = SSDTrainTransform(args.size), SSDValTransform(args.size)

    def run(kind):
        start = time.perf_counter()
        for i, (image, target) in enumerate(samples):
            if kind == "train+decode":
                image = tv_tensors.Image(decode_jpeg(encoded[i]))
            (val if kind == "val" else train)(image, target)
        return time.perf_counter() - start

    for kind in ("train", "val"):
        run(kind)  # warm up
    return lambda: {kind: [run(kind) for _ in range(args.repeats)] for kind in ("train", "train+decode", "val")}


def encode_all(images: list[np.ndarray]) -> list[bytes]:
    import warnings

    import torch
    from torchvision.io import encode_jpeg

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return [
            encode_jpeg(torch.from_numpy(im).permute(2, 0, 1).contiguous(), quality=90).numpy().tobytes()
            for im in images
        ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--size", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--gluoncv-python", default=DEFAULT_GLUONCV_PYTHON)
    parser.add_argument("--worker", choices=["gluoncv"], help=argparse.SUPPRESS)
    parser.add_argument("--inputs", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker == "gluoncv":
        gluoncv_worker(args)
        return

    import warnings

    warnings.filterwarnings("ignore", category=DeprecationWarning)
    images, _ = make_images(args.seed, args.images)
    jpegs = encode_all(images)
    ours = ssdkit_runner(args, jpegs)
    have_gluoncv = os.path.exists(args.gluoncv_python)
    results = {
        "ssdkit": {"train": [], "train+decode": [], "val": []},
        "GluonCV": {"train": [], "train+decode": [], "val": []},
    }
    with tempfile.TemporaryDirectory() as tmp:
        inputs = os.path.join(tmp, "jpegs.npz")
        np.savez(inputs, **{f"jpeg{i}": np.frombuffer(j, np.uint8) for i, j in enumerate(jpegs)})
        env = gluoncv_env(1, MXNET_ENGINE_TYPE="NaiveEngine")
        for _ in range(args.rounds):
            for kind, times in ours().items():
                results["ssdkit"][kind] += times
            if not have_gluoncv:
                continue
            cmd = [
                args.gluoncv_python,
                os.path.abspath(__file__),
                "--worker",
                "gluoncv",
                "--inputs",
                inputs,
                "--images",
                str(args.images),
                "--repeats",
                str(args.repeats),
                "--size",
                str(args.size),
                "--seed",
                str(args.seed),
            ]
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
            if proc.returncode != 0:
                print("GluonCV worker failed:\n" + proc.stderr[-2000:])
                sys.exit(1)
            for kind, times in json.loads(proc.stdout.strip().splitlines()[-1]).items():
                results["GluonCV"][kind] += times

    print(
        f"SSD transforms: {args.images} images {WIDTH}x{HEIGHT} -> {args.size}x{args.size}, one process, "
        f"one thread, {args.rounds} rounds x {args.repeats} passes (median per image)"
    )
    for kind in ("train", "train+decode", "val"):
        ours_ms = median_ms(results["ssdkit"][kind], args.images)
        line = f"  {kind:<13} ssdkit {ours_ms:7.2f} ms/img ({1e3 / ours_ms:6.1f} img/s)"
        if have_gluoncv:
            ref_ms = median_ms(results["GluonCV"][kind], args.images)
            line += (
                f"   GluonCV {ref_ms:7.2f} ms/img ({1e3 / ref_ms:6.1f} img/s)"
                f"   speed-up (GluonCV / ssdkit time) {ref_ms / ours_ms:4.2f}x"
            )
        print(line)
    if not have_gluoncv:
        print(f"GluonCV environment not found at {args.gluoncv_python}: no comparison")


if __name__ == "__main__":
    main()
