"""The whole input pipeline that feeds an SSD300 training step: ssdkit against GluonCV on the same JPEG files.

    python benchmarks/bench_pipeline.py [--images 64] [--batch 16] [--workers 0,1,2] [--repeats 3]

A VOC-format folder of ``--images`` JPEG files (500 x 375, textured, 1-5 boxes each, the images of
``bench_transforms.py``) is written to a temporary folder. One pass = every image read from disk, decoded, put
through GluonCV's SSD train augmentation, given SSD targets against SSD300's 8732 anchors, batched, and copied to
the device (``--device``, default CUDA where present, with pinned memory and non-blocking copies; on a CPU-only
machine the copy is a no-op). ssdkit: ``VOCFolder`` + ``SSDTrainTransform`` + ``TargetCollate`` in a
``torch.utils.data.DataLoader`` (targets in the workers, persistent workers). GluonCV 0.10.5 (its virtualenv, a
subprocess serving timing requests): a dataset reading the same files with ``mx.image.imread`` and the same
labels, ``SSDDefaultTrainTransform(300, 300, anchors)`` with the anchors of its ``ssd_300_vgg16_atrous_voc`` (as
``train_ssd.py``), and ``gluon.data.DataLoader`` with ``train_ssd.py``'s batchify. Each worker count runs its
passes for the two libraries alternately (``--repeats`` rounds after a warm-up pass), one intra-op thread per
process on both sides; medians of images/s with the range are printed, with the ratio.
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

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from ssdkit.constants import VOC_CLASSES as VOC_NAMES  # noqa: E402

from _gluoncv_side import DEFAULT_PYTHON as DEFAULT_GLUONCV_PYTHON  # noqa: E402
from _gluoncv_side import gluoncv_env


def write_voc_folder(root: str, n: int, seed: int) -> list[list[list[float]]]:
    """``n`` JPEG files + VOC XML annotations under ``root``; returns the labels ``[x1, y1, x2, y2, cls, diff]``."""
    from bench_transforms import HEIGHT, WIDTH, encode_all, make_images

    images, labels = make_images(seed, n)
    os.makedirs(os.path.join(root, "JPEGImages"), exist_ok=True)
    os.makedirs(os.path.join(root, "Annotations"), exist_ok=True)
    for i, (jpeg, lab) in enumerate(zip(encode_all(images), labels)):
        stem = f"{i:06d}"
        with open(os.path.join(root, "JPEGImages", stem + ".jpg"), "wb") as f:
            f.write(jpeg)
        objs = "".join(
            f"<object><name>{VOC_NAMES[int(c)]}</name><difficult>{int(d)}</difficult><bndbox>"
            f"<xmin>{x1:.0f}</xmin><ymin>{y1:.0f}</ymin><xmax>{x2:.0f}</xmax><ymax>{y2:.0f}</ymax></bndbox></object>"
            for x1, y1, x2, y2, c, d in lab
        )
        with open(os.path.join(root, "Annotations", stem + ".xml"), "w") as f:
            f.write(
                f"<annotation><filename>{stem}.jpg</filename><size><width>{WIDTH}</width>"
                f"<height>{HEIGHT}</height><depth>3</depth></size>{objs}</annotation>"
            )
    # the labels as the XML holds them (whole pixels), for the GluonCV side
    return [
        [[round(x1), round(y1), round(x2), round(y2), c, d] for x1, y1, x2, y2, c, d in lab.tolist()] for lab in labels
    ]


# ------------------------------------------------------------------ GluonCV side (runs in its venv)


def gluoncv_server(args) -> None:
    """Answer ``workers N`` lines on stdin with ``{"sec": ...}``: one timed pass of GluonCV's pipeline."""
    import mxnet as mx
    from gluoncv import model_zoo
    from gluoncv.data.batchify import Stack, Tuple
    from gluoncv.data.transforms.presets.ssd import SSDDefaultTrainTransform
    from mxnet import autograd, gluon

    with open(os.path.join(args.root, "labels.json")) as f:
        labels = [np.asarray(lab, dtype=np.float32) for lab in json.load(f)]
    paths = [os.path.join(args.root, "JPEGImages", f"{i:06d}.jpg") for i in range(len(labels))]

    class Files(gluon.data.Dataset):
        def __len__(self):
            return len(paths)

        def __getitem__(self, idx):
            return mx.image.imread(paths[idx]), labels[idx]

    net = model_zoo.get_model("ssd_300_vgg16_atrous_voc", pretrained=False, pretrained_base=False)
    net.initialize()
    with autograd.train_mode():
        _, _, anchors = net(mx.nd.zeros((1, 3, 300, 300)))
    dataset = Files().transform(SSDDefaultTrainTransform(300, 300, anchors))
    batchify = Tuple(Stack(), Stack(), Stack())
    loaders = {
        w: gluon.data.DataLoader(
            dataset, args.batch, shuffle=True, batchify_fn=batchify, last_batch="rollover", num_workers=w
        )
        for w in args.worker_counts
    }
    ctx = mx.cpu()

    def one_pass(w):
        t0 = time.perf_counter()
        for images, cls_targets, box_targets in loaders[w]:
            for x in (images.as_in_context(ctx), cls_targets.as_in_context(ctx), box_targets.as_in_context(ctx)):
                x.wait_to_read()
        return time.perf_counter() - t0

    for w in args.worker_counts:
        one_pass(w)  # warm-up: worker start, first decode
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        cmd = line.split()
        if not cmd or cmd[0] == "quit":
            break
        print(json.dumps({"sec": one_pass(int(cmd[1]))}), flush=True)


# ------------------------------------------------------------------ ssdkit side


def ssdkit_loaders(root: str, batch: int, worker_counts, device):
    import torch
    from torch.utils.data import DataLoader

    import ssdkit
    from ssdkit.data.collate import TargetCollate
    from ssdkit.data.transforms import SSDTrainTransform
    from ssdkit.data.voc import VOCFolder

    net = ssdkit.get_model("ssd_300_vgg16_atrous_voc", pretrained_base=False)
    anchors = net.anchors_for_input(300, 300)
    dataset = VOCFolder(root, classes=VOC_NAMES, transform=SSDTrainTransform(300))
    collate = TargetCollate(anchors, ssdkit.SSDTargetGenerator(iou_thresh=0.5, negative_mining_ratio=-1))
    pin = device.type == "cuda"
    loaders = {
        w: DataLoader(
            dataset,
            batch,
            shuffle=True,
            num_workers=w,
            collate_fn=collate,
            pin_memory=pin,
            persistent_workers=w > 0,
            prefetch_factor=4 if w else None,
        )
        for w in worker_counts
    }

    def one_pass(w):
        t0 = time.perf_counter()
        for b in loaders[w]:
            out = [b[k].to(device, non_blocking=True) for k in ("images", "cls_targets", "box_targets")]
        if device.type == "cuda":
            torch.cuda.synchronize()
        del out
        return time.perf_counter() - t0

    return one_pass


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--workers", default="0,1,2")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--gluoncv-python", default=DEFAULT_GLUONCV_PYTHON)
    ap.add_argument("--no-gluoncv", action="store_true")
    ap.add_argument("--serve-gluoncv", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--root", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.worker_counts = [int(w) for w in args.workers.split(",")]
    if args.serve_gluoncv:
        gluoncv_server(args)
        return {}

    import warnings

    import torch

    warnings.filterwarnings("ignore", category=DeprecationWarning)
    torch.set_num_threads(1)
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    use_gluoncv = not args.no_gluoncv and os.path.exists(args.gluoncv_python)
    times = {(lib, w): [] for lib in ("ssdkit", "GluonCV") for w in args.worker_counts}
    with tempfile.TemporaryDirectory() as root:
        labels = write_voc_folder(root, args.images, args.seed)
        with open(os.path.join(root, "labels.json"), "w") as f:
            json.dump(labels, f)
        ours = ssdkit_loaders(root, args.batch, args.worker_counts, device)
        server = None
        if use_gluoncv:
            env = gluoncv_env(1)
            env.pop("PYTHONPATH", None)
            server = subprocess.Popen(
                [
                    args.gluoncv_python,
                    os.path.abspath(__file__),
                    "--serve-gluoncv",
                    "--root",
                    root,
                    "--batch",
                    str(args.batch),
                    "--workers",
                    args.workers,
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
            )
            line = server.stdout.readline()
            if not line:
                sys.exit("GluonCV side failed:\n" + server.stderr.read()[-3000:])

        def theirs(w):
            server.stdin.write(f"workers {w}\n")
            server.stdin.flush()
            return json.loads(server.stdout.readline())["sec"]

        try:
            for w in args.worker_counts:
                ours(w)  # warm-up: worker start, first decode
                for _ in range(args.repeats):
                    times[("ssdkit", w)].append(ours(w))
                    if server is not None:
                        times[("GluonCV", w)].append(theirs(w))
        finally:
            if server is not None and server.poll() is None:
                server.stdin.write("quit\n")
                server.stdin.flush()
                server.wait(timeout=60)
    n = args.images
    print(
        f"input pipeline: {n} JPEGs 500x375 -> SSD300 train augmentation + targets (8732 anchors), batch "
        f"{args.batch}, to {device}; one thread per process; {args.repeats} alternating passes per worker count"
    )
    result = {}
    for w in args.worker_counts:
        ours_t = times[("ssdkit", w)]
        line = (
            f"  workers {w}: ssdkit {n / statistics.median(ours_t):6.1f} img/s "
            f"({n / max(ours_t):.1f}-{n / min(ours_t):.1f})"
        )
        result[w] = {"ssdkit": n / statistics.median(ours_t)}
        if use_gluoncv:
            ref = times[("GluonCV", w)]
            ratio = statistics.median(ref) / statistics.median(ours_t)
            line += (
                f"   GluonCV {n / statistics.median(ref):6.1f} img/s ({n / max(ref):.1f}-{n / min(ref):.1f})"
                f"   ssdkit / GluonCV {ratio:.2f}x"
            )
            result[w].update(GluonCV=n / statistics.median(ref), ratio=ratio)
        print(line)
    return result


if __name__ == "__main__":
    main()
