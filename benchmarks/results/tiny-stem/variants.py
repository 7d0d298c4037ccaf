"""Training step of tiny-model variants: stem widths and stage-3 width (8 images, one thread, channels-last).

ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 python benchmarks/results/tiny-stem/variants.py
"""

from __future__ import annotations

import os
import statistics
import sys
import time

import torch
from torch import nn

from ssdkit.init import init_weights
from ssdkit.models import tiny
from ssdkit.models.registry import BACKBONES

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
import bench_tiny_step  # noqa: E402


def variant(c1: int, c2: int, convs: int, c3: int = 128, c4: int = 192):
    class Variant(tiny.TinyExtractor):
        def __init__(self):
            nn.Module.__init__(self)
            cbr = tiny._cbr
            self.out_channels = (c2, c3, c4, 128, 128, 128)
            repeated = (layer for _ in range(convs) for layer in cbr(c2, c2, 3))
            self.stem = nn.Sequential(*cbr(3, c1, 3, 2), *cbr(c1, c2, 3, 2), *repeated)
            self.stage3 = nn.Sequential(*cbr(c2, c3, 3, 2), *cbr(c3, c3, 3))
            self.stage4 = nn.Sequential(*cbr(c3, c4, 3, 2), *cbr(c4, c4, 3))
            self.extras = nn.ModuleList(
                [tiny._extra(c4, 64, 128), tiny._extra(128, 64, 128), tiny._extra(128, 64, 128)]
            )
            init_weights(self, "kaiming_fan_out")

    return Variant


def make_step(backbone, batch: int = 8):
    """The step of ``benchmarks/bench_tiny_step.py`` (channels-last) with ``backbone`` as the tiny model's."""
    BACKBONES["tiny"] = backbone
    return bench_tiny_step.make_step("ssd_tiny_synthetic", True, batch)


def main() -> None:
    torch.set_num_threads(1)
    variants = {
        "32/64 x4 (old)": variant(32, 64, 4),
        "32/48 x4": variant(32, 48, 4),
        "32/40 x4": variant(32, 40, 4),
        "24/40 x4": variant(24, 40, 4),
        "32/48 x4 c3=96": variant(32, 48, 4, c3=96),
    }
    steps = {name: make_step(v) for name, v in variants.items()}
    for step in steps.values():
        step(), step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(8):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    base = statistics.median(times["32/64 x4 (old)"])
    for name, ts in times.items():
        print(f"{name:16s} {statistics.median(ts) * 1000:7.1f} ms  {statistics.median(ts) / base:.2f}x")


if __name__ == "__main__":
    main()
