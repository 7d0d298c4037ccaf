"""Detector inference speed, side by side: ssdkit (eager fp32 as is, and with BatchNorm folded + channels-last in
fp32 and bfloat16 autocast, the same compiled with Inductor's freezing, int8 (``Int8Detector``), ONNX Runtime),
torchvision's ssd300_vgg16 and GluonCV's hybridized network, on SSD300-VGG16 and SSD512-MobileNet1.0.

Every path runs the whole detector: the network, box decoding, class decoding and NMS (top 400, keep 100 for
GluonCV and ssdkit; torchvision: its own defaults of 400 candidates per class, 200 kept). Random weights
(nothing is downloaded); the background logits of ssdkit's and GluonCV's networks are offset so that about
``--candidates`` (anchor, class) pairs per image score above 0.01, as a trained detector's do (a random network's
near-uniform softmax would put all 174k pairs of SSD300 above it and time a worst-case NMS instead).
Inputs: random float32 images at the model's size. Threads: ``--threads`` for every framework.

Every round times each path once (interleaved), so a busy machine slows every column alike; medians of
``--repeats`` rounds. Prints ms per image, images/s and the ratio to GluonCV, and writes the table to ``--out``.

    python benchmarks/bench_inference.py [--repeats 5] [--batches 1,8] [--out benchmarks/results/inference.txt]
    ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 python benchmarks/bench_inference.py --no-bf16 \\
        --out benchmarks/results/inference-avx2.txt      # as on a CPU without AVX-512
"""

from __future__ import annotations

import argparse
import importlib.util
import os

# idle OpenMP threads must sleep, not spin: on a shared CPU spinning threads slowed eager PyTorch 5-10x here
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
if os.environ.get("ONEDNN_MAX_CPU_ISA"):  # the same cap for MXNet's older oneDNN (DNNL_/MKLDNN_ names)
    os.environ.setdefault("DNNL_MAX_CPU_ISA", os.environ["ONEDNN_MAX_CPU_ISA"])
    os.environ.setdefault("MKLDNN_MAX_CPU_ISA", os.environ["ONEDNN_MAX_CPU_ISA"])
import platform
import sys
import tempfile
import time

import numpy as np
import torch

from ssdkit.engine.builders.runtime import cpu_has_native_bf16

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from _gluoncv_side import DEFAULT_PYTHON as DEFAULT_GLUONCV_PYTHON  # noqa: E402
from _gluoncv_side import GluonCVServer, background_offset, interleaved_medians  # noqa: E402

MODELS = ("ssd_300_vgg16_atrous_voc", "ssd_512_mobilenet1.0_voc")


def calibrated_net(name: str, candidates: float):
    """An ssdkit zoo model in eval mode whose background logits are offset as GluonCV's (see module doc)."""
    import ssdkit

    torch.manual_seed(0)
    net = ssdkit.get_model(name).eval()
    x = torch.rand(2, 3, net.data_shape, net.data_shape)
    with torch.no_grad():
        logits = net(x)[0].numpy()
        offset = background_offset(logits, candidates)
        for head in net.class_predictors:
            head.predictor.bias[0 :: net.num_classes + 1] += offset
    return net, offset


def compiled_paths(net, x, bf16: bool, int8: bool, say) -> dict:
    """Inductor-compiled detectors (``ssdkit.export.compiled``), compiled here (first calls) and reported."""
    from ssdkit.export.compiled import CompiledDetector

    jobs = {}
    for dtype in ("fp32", "bf16") if bf16 else ("fp32",):
        detector = CompiledDetector(net, bf16=dtype == "bf16")
        start = time.perf_counter()
        detector(x)
        detector(x)
        say(f"#   compiled {dtype} batch {x.shape[0]}: {time.perf_counter() - start:.1f} s to compile and run twice")
        jobs[f"ssdkit compiled {dtype} channels-last"] = lambda d=detector: d(x)
    if int8:
        from ssdkit.export.quantized import Int8Detector

        start = time.perf_counter()
        calibration = [torch.rand_like(x) for _ in range(2)]  # random weights: the ranges matter, not their source
        int8_detector = Int8Detector(net, calibration)
        int8_detector(x)
        int8_detector(x)
        say(f"#   int8 batch {x.shape[0]}: {time.perf_counter() - start:.1f} s to calibrate, compile and run twice")
        jobs["ssdkit compiled int8 channels-last"] = lambda: int8_detector(x)
    return jobs


def ssdkit_paths(net, batch: int, onnx_path: str | None, threads: int, bf16: bool) -> dict:
    """Callables by path name, each detecting one batch of random images."""
    from ssdkit.export.fuse import inference_copy

    size = net.data_shape
    x = torch.rand(batch, 3, size, size)
    jobs = {}

    def eager():
        with torch.inference_mode():
            net.detect(x)

    jobs["ssdkit eager fp32"] = eager
    net_cl = inference_copy(net)  # BatchNorm folded, channels-last
    x_cl = x.contiguous(memory_format=torch.channels_last)

    def eager_fused():
        with torch.inference_mode():
            net_cl.detect(x_cl)

    jobs["ssdkit eager fp32 folded channels-last"] = eager_fused
    if bf16:

        def eager_bf16():
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
                net_cl.detect(x_cl)

        jobs["ssdkit eager bf16 folded channels-last"] = eager_bf16
    if onnx_path is not None:
        from ssdkit.export.runtime import OnnxRuntimeDetector

        runner = OnnxRuntimeDetector(onnx_path, threads=threads, spin=False)
        xn = x.numpy()
        jobs["ssdkit ONNX Runtime fp32"] = lambda: runner.detect(xn)
    return jobs


def torchvision_path(batch: int):
    from torchvision.models.detection import ssd300_vgg16

    torch.manual_seed(0)
    model = ssd300_vgg16(weights=None, weights_backbone=None, num_classes=21).eval()
    images = [torch.rand(3, 300, 300) for _ in range(batch)]

    def run():
        with torch.inference_mode():
            model(images)

    return run


def summarize(paths: list[str]) -> str:
    """The ratio to GluonCV of every (model, batch, path) over several logs of this script: median and range."""
    import re
    import statistics
    from collections import defaultdict

    ratios: dict[tuple[str, int, str], list[float]] = defaultdict(list)
    for path in paths:
        model = ""
        with open(path) as f:
            for line in f:
                if line.startswith("## "):
                    model = line.split()[1]
                row = re.match(r"(\S.*?)\s+(\d+)\s+[\d.]+\s+[\d.]+\s+([\d.]+)x$", line.rstrip())
                if row and model:
                    ratios[(model, int(row.group(2)), row.group(1))].append(float(row.group(3)))
    out = [
        f"# python benchmarks/bench_inference.py --summarize {' '.join(paths)}",
        "# ratio to GluonCV: median (range)",
    ]
    for (model, batch, name), values in ratios.items():
        out.append(
            f"{model:26s} {batch:3d}  {name:40s} {statistics.median(values):5.2f}x "
            f"({min(values):.2f}-{max(values):.2f}, {len(values)} runs)"
        )
    return "\n".join(out)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--candidates",
        type=float,
        default=1000.0,
        help="(anchor, class) pairs per image above 0.01 (sets the background logit offset)",
    )
    parser.add_argument("--no-bf16", action="store_true", help="skip the bfloat16 path")
    parser.add_argument("--no-onnx", action="store_true")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile paths")
    parser.add_argument("--no-int8", action="store_true", help="skip the int8 path (needs torchao)")
    parser.add_argument("--gluoncv-python", default=DEFAULT_GLUONCV_PYTHON)
    parser.add_argument("--out", help="also write the table to this file")
    parser.add_argument("--summarize", nargs="+", metavar="LOG", help="only summarize the ratios of earlier logs")
    args = parser.parse_args(argv)
    if args.summarize:
        text = summarize(args.summarize)
        print(text)
        if args.out:
            with open(args.out, "w") as f:
                f.write(text + "\n")
        return
    torch.set_num_threads(args.threads)
    models = [m for m in args.models.split(",") if m]
    batches = [int(b) for b in args.batches.split(",")]
    bf16 = cpu_has_native_bf16() and not args.no_bf16
    int8 = not args.no_int8 and importlib.util.find_spec("torchao") is not None

    lines = [
        f"# python benchmarks/bench_inference.py {' '.join(argv if argv is not None else sys.argv[1:])}",
        f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{args.threads} threads, ATen CPU capability {torch.backends.cpu.get_cpu_capability()}, "
        f"ONEDNN_MAX_CPU_ISA={os.environ.get('ONEDNN_MAX_CPU_ISA', '-')}, bf16 native: {bf16}, "
        f"medians of {args.repeats} interleaved rounds, {time.strftime('%Y-%m-%d %H:%M')}",
    ]

    def say(text=""):
        print(text, flush=True)
        lines.append(text)

    for line in lines:
        print(line)
    tmp = tempfile.mkdtemp(prefix="bench_inference_")
    server = None
    if os.path.exists(args.gluoncv_python):
        sizes = [int(m.split("_")[1]) for m in models]
        inputs = os.path.join(tmp, "inputs.npz")
        np.savez(
            inputs,
            models=np.array(models),
            sizes=np.array(sizes),
            batches=np.array(batches),
            candidates=np.array(args.candidates),
        )
        server = GluonCVServer(args.gluoncv_python, "inference", inputs)
        say(f"# GluonCV background offsets: {server.info}")
    try:
        for name in models:
            net, offset = calibrated_net(name, args.candidates)
            onnx_path = None
            if not args.no_onnx:
                from ssdkit.export import export_onnx

                onnx_path = export_onnx(net, os.path.join(tmp, f"{name}.onnx"))
            say(f"\n## {name} (input {net.data_shape}x{net.data_shape}; ssdkit background offset {offset:.3f})")
            say(f"{'path':40s} {'batch':>5s} {'ms/img':>9s} {'img/s':>8s} {'vs GluonCV':>10s}")
            for batch in batches:
                jobs = ssdkit_paths(net, batch, onnx_path, args.threads, bf16)
                if not args.no_compile:
                    x = torch.rand(batch, 3, net.data_shape, net.data_shape)
                    jobs.update(compiled_paths(net, x, bf16, int8, say))
                if name.startswith("ssd_300_vgg16"):
                    jobs["torchvision ssd300_vgg16 fp32"] = torchvision_path(batch)
                if server is not None:
                    jobs["GluonCV hybridized fp32"] = server.job(f"{name}:{batch}")
                med = interleaved_medians(jobs, args.repeats)
                ref = med.get("GluonCV hybridized fp32")
                for path, sec in med.items():
                    ratio = f"{ref / sec:9.2f}x" if ref else "        -"
                    say(f"{path:40s} {batch:5d} {sec / batch * 1e3:9.1f} {batch / sec:8.2f} {ratio:>10s}")
    finally:
        if server is not None:
            server.close()
    if args.out:
        with open(args.out, "w") as f:
            f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
