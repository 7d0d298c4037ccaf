"""Where one training process of the default run spends its time: making the data, the convolutions, the rest.

    ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 python benchmarks/bench_default_breakdown.py \
        [--batches 40] [--repeats 3] [--log benchmarks/results/default_breakdown.txt]

Builds the parts of ``ssdkit train`` as it is with no options (the float32 recipe: ``ssd_tiny48_synthetic``, dense
epochs at 96 px, the later ones at 128) for one process of its two: one thread, 8 images a step (its share of the
batch of 16). For the first (dense) and the last (sparse) epoch it times, per batch of 8, the medians of
``--repeats`` passes over ``--batches`` batches:

- the data: drawing the images (``SyntheticShapes.render``), the sample (the image as a tensor and its target), the
  transform (``SSDValTransform``: /255 and normalise), the collate with the SSD targets, and the loader as a whole;
- the training step on those batches, already made (``train_one_epoch``: forward, loss, backward, non-finite guard,
  SGD), and its convolutions' share from ``torch.profiler`` (forward and backward convolution kernels, self time).

What is left when the convolutions cost nothing bounds what a cheaper network could gain. The run trains with two
such processes side by side; there each step also waits for the gradients' all-reduce and for the slower process,
which the budget's probe in a default run measures: this script does not.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from ssdkit.engine.builders.run import build_run, prepare_config
from ssdkit.engine.config import TrainConfig
from ssdkit.engine.trainer import train_one_epoch

CONV_OPS = ("aten::mkldnn_convolution", "aten::convolution_backward", "aten::_slow_conv2d_forward")


def _median_ms(fn, passes: int, per: int) -> float:
    """Median over ``passes`` of the milliseconds per item of ``fn()`` (which handles ``per`` items)."""
    times = []
    for _ in range(passes):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3 / per)
    return statistics.median(times)


def breakdown(parts, epoch: int, batches: int, repeats: int) -> dict[str, float]:
    """Milliseconds per batch of 8 in ``epoch`` (0-based) of the run ``parts``."""
    parts.prepare_epoch(epoch)
    parts.train_loader.batch_sampler.sampler.set_epoch(epoch)
    ds, loader = parts.train_set, parts.train_loader
    per = loader.batch_sampler.batch_size
    n = batches * per
    out: dict[str, float] = {}
    transform = ds.transform
    out["render"] = per * _median_ms(lambda: [ds.render(i) for i in range(n)], repeats, n)
    ds.transform = None
    try:
        out["sample"] = per * _median_ms(lambda: [ds[i] for i in range(n)], repeats, n) - out["render"]
    finally:
        ds.transform = transform
    out["transform"] = per * _median_ms(lambda: [ds[i] for i in range(n)], repeats, n) - out["render"] - out["sample"]
    samples = [ds[i] for i in range(n)]
    groups = [samples[i : i + per] for i in range(0, n, per)]
    out["collate + targets"] = _median_ms(lambda: [loader.collate_fn(g) for g in groups], repeats, len(groups))

    def whole_loader():
        it = iter(loader)
        for _ in range(batches):
            next(it)

    out["loader"] = _median_ms(whole_loader, repeats, batches)
    it = iter(loader)
    made = [next(it) for _ in range(batches)]

    def steps(bs):
        train_one_epoch(
            parts.train_net,
            bs,
            parts.loss_fn,
            parts.optimizer,
            parts.scheduler,
            parts.device,
            epoch,
            memory_format=parts.memory_format,
            progress=False,
            log_interval=10**9,
        )

    steps(made[:4])  # warm-up: oneDNN builds its kernels for these shapes
    out["step"] = _median_ms(lambda: steps(made), repeats, len(made))
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        steps(made)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    conv = sum(e.self_cpu_time_total for e in events if e.key in CONV_OPS)
    out["convolutions"] = out["step"] * conv / total
    out["threads"] = torch.get_num_threads()
    return out


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batches", type=int, default=40)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--log", help="also append the report to this file")
    ap.add_argument("--output", default=None, help="the throwaway run folder (default: a temporary one)")
    args = ap.parse_args(argv)
    import tempfile

    with tempfile.TemporaryDirectory(prefix="ssdkit-breakdown-") as folder:
        cfg = TrainConfig(dataset="synthetic", procs=1, batch_size=8, amp=False, time_budget=0, progress=False)
        cfg.output = args.output or folder
        cfg.synthetic_train_size = max(args.batches * 8, 64)
        cfg = prepare_config(cfg)
        parts = build_run(cfg, 0, 1)
        # build_run gives one process all the cores (``share_cpu_cores``); each of the default run's two has one
        torch.set_num_threads(1)
        kinds = {"dense (epoch 1)": 0, f"sparse (epoch {cfg.epochs})": cfg.epochs - 1}
        results = {name: breakdown(parts, epoch, args.batches, args.repeats) for name, epoch in kinds.items()}
        if parts.logger is not None:
            parts.logger.close()
    threads = int(min(r["threads"] for r in results.values()))
    head = f"one process of the default run's two: 8 images a step, {threads} thread(s), float32; ms per batch"
    lines = [f"{cfg.model}, {head}"]
    for name, r in results.items():
        data, step = r["loader"], r["step"]
        rest = step - r["convolutions"]
        lines.append(
            f"{name:20s} data {data:6.1f} (drawing {r['render']:.1f}, sample {r['sample']:.1f}, transform "
            f"{r['transform']:.1f}, collate + targets {r['collate + targets']:.1f})  step {step:6.1f} (convolutions "
            f"{r['convolutions']:.1f}, the rest {rest:.1f})  all {data + step:6.1f}; without the convolutions "
            f"{data + rest:.1f} ({(data + step) / (data + rest):.2f}x faster at most)"
        )
    report = "\n".join(lines)
    print(report)
    if args.log:
        with open(args.log, "a") as f:
            command = f"python benchmarks/bench_default_breakdown.py --batches {args.batches} --repeats {args.repeats}"
            isa = ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY")
            held = " ".join(f"{k}={os.environ[k]}" for k in isa if k in os.environ)
            f.write(f"$ {held + ' ' if held else ''}{command}   ({time.strftime('%Y-%m-%d %H:%M')})\n")
            f.write(report + "\n\n")
    return results


if __name__ == "__main__":
    main()
