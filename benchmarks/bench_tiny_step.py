"""One training step of the tiny models (8 images = one process's share, one thread, float32), interleaved, medians:
the default model ``ssd_tiny48_synthetic`` in NCHW and channels-last, and ``ssd_tiny_synthetic`` (64-channel stem)
channels-last; ``--profile`` adds torch.profiler's table of the default model's channels-last step.

    ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 python benchmarks/bench_tiny_step.py --profile

The environment variables hold oneDNN and ATen to AVX2 (the common CPU); add ``ONEDNN_VERBOSE=1`` to see which
convolution kernels run.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import ssdkit
from ssdkit.loss import SSDMultiBoxLoss


def make_step(model: str, channels_last: bool, batch: int):
    torch.manual_seed(0)
    net = ssdkit.get_model(model).train()
    x = torch.rand(batch, 3, 128, 128)
    if channels_last:
        net.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4, fused=True)
    loss_fn = SSDMultiBoxLoss()
    with torch.no_grad():
        anchors = net.eval()(x[:1])[2].shape[1]
    net.train()
    cls_targets = torch.zeros(batch, anchors, dtype=torch.long)
    cls_targets[:, ::40] = 1  # about 70 positives per image
    box_targets = torch.randn(batch, anchors, 4)

    def step():
        cls_preds, box_preds, _ = net(x)
        loss = loss_fn(cls_preds, box_preds, cls_targets, box_targets)[0].sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    steps = {
        "nchw": make_step("ssd_tiny48_synthetic", False, args.batch),
        "channels_last": make_step("ssd_tiny48_synthetic", True, args.batch),
        "tiny64 ch-last": make_step("ssd_tiny_synthetic", True, args.batch),
    }
    for step in steps.values():
        step(), step()
    times = {name: [] for name in steps}
    for _ in range(args.repeats):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    base, wide = statistics.median(times["nchw"]), statistics.median(times["tiny64 ch-last"])
    for name, ts in times.items():
        m = statistics.median(ts)
        print(
            f"{name:14s} step {m * 1000:7.1f} ms (median of {len(ts)}, min {min(ts) * 1000:.1f}), "
            f"{args.batch / m:6.1f} images/s, NCHW / this = {base / m:.2f}, this / tiny64 = {m / wide:.2f}"
        )
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(3):
                steps["channels_last"]()
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))


if __name__ == "__main__":
    main()
