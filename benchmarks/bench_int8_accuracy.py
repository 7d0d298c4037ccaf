"""What int8 costs in accuracy and buys in speed: a trained checkpoint's mAP and detection time, float32 eager vs
``ssdkit.export.quantized.Int8Detector``, on the checkpoint's own validation split.

Calibration: ``--calibration-images`` images spread over the checkpoint's *training* split with the validation
preprocessing, never the split that is scored (``engine.evaluation.int8_detector``, as ``ssdkit eval --int8``).
Timing: the whole validation pass of each path (network, decoding, NMS, metric update), interleaved ``--repeats``
times after one untimed pass; medians.

    python benchmarks/bench_int8_accuracy.py --checkpoint runs/synthetic/last.pt \\
        [--calibration-images 256] [--out benchmarks/results/int8_accuracy.txt]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import statistics
import sys
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import torch

from ssdkit.engine.builders import build_datasets, build_loader, build_metric
from ssdkit.engine.config import resolve_config
from ssdkit.engine.evaluation import int8_detector, load_trained_model
from ssdkit.engine.validate import evaluate


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--calibration-images", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", help="also write the report to this file")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    lines = [
        f"# python benchmarks/bench_int8_accuracy.py {' '.join(argv if argv is not None else sys.argv[1:])}",
        f"# {platform.machine()}, torch {torch.__version__}, {args.threads} threads, ATen CPU capability "
        f"{torch.backends.cpu.get_cpu_capability()}, ONEDNN_MAX_CPU_ISA={os.environ.get('ONEDNN_MAX_CPU_ISA', '-')}, "
        f"{time.strftime('%Y-%m-%d %H:%M')}",
    ]

    def say(text: str) -> None:
        print(text, flush=True)
        lines.append(text)

    for line in lines:
        print(line)
    device = torch.device("cpu")
    net, cfg, ckpt = load_trained_model(args.checkpoint, device)
    cfg = resolve_config(dataclasses.replace(cfg, num_workers=0, device="cpu", resume=None))
    data_shape = int(ckpt.get("data_shape") or cfg.data_shape or net.data_shape)
    _, val_set, classes = build_datasets(cfg, data_shape, train=False, val=True)
    loader = build_loader(val_set, cfg, train=False)
    metric = build_metric(cfg, classes, val_set, data_shape)
    start = time.perf_counter()
    int8 = int8_detector(net, cfg, data_shape, args.calibration_images)
    say(
        f"# model {cfg.model}, {len(val_set)} validation images, batch {cfg.batch_size}, decoder {cfg.decoder}; "
        f"calibrated on at most {args.calibration_images} training images in {time.perf_counter() - start:.1f} s"
    )
    paths = {"float32 eager": net, "int8 compiled": int8}
    results: dict[str, list[float]] = {}
    seconds: dict[str, list[float]] = {name: [] for name in paths}
    for name, model in paths.items():  # untimed first pass: compiles the int8 graph for each batch size
        names, values = evaluate(model, loader, metric, device, decoder=cfg.decoder)
        results[name] = values
    for _ in range(args.repeats):
        for name, model in paths.items():
            start = time.perf_counter()
            evaluate(model, loader, metric, device, decoder=cfg.decoder)
            seconds[name].append(time.perf_counter() - start)
    main_index = len(names) - 1  # the mean AP is the last entry
    say(f"{'path':16s} {'mAP':>8s} {'s per pass':>11s} {'img/s':>8s}")
    for name in paths:
        sec = statistics.median(seconds[name])
        say(f"{name:16s} {results[name][main_index]:8.4f} {sec:11.2f} {len(val_set) / sec:8.1f}")
    base = results["float32 eager"]
    worst = max(range(len(names) - 1), key=lambda i: abs(results["int8 compiled"][i] - base[i]))
    say(
        f"# int8 - float32 mAP: {results['int8 compiled'][main_index] - base[main_index]:+.4f}; largest class change "
        f"{names[worst]} {results['int8 compiled'][worst] - base[worst]:+.4f}; int8 speed "
        f"{statistics.median(seconds['float32 eager']) / statistics.median(seconds['int8 compiled']):.2f}x float32"
    )
    if args.out:
        with open(args.out, "w") as f:
            f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
