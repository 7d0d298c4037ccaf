"""Run the README's main job (`ssdkit train` with no options) and print its wall time and final VOC07 mAP.

Not a test: it takes about 8.5 minutes here (8.5 measured). The issue's goal: at most 10 minutes on a 2-core CPU
and VOC07 mAP >= 0.90 on the synthetic validation split.

    python benchmarks/bench_default_run.py [--output runs/default-bench] [extra ssdkit train options...]
"""
from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import time


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default=os.path.join("runs", "default-bench"))
    args, extra = parser.parse_known_args()
    cmd = [sys.executable, "-m", "ssdkit.cli", "train", "--output", args.output, "--no-progress", *extra]
    print("running:", " ".join(cmd), flush=True)
    start = time.perf_counter()
    proc = subprocess.run(cmd)
    minutes = (time.perf_counter() - start) / 60
    if proc.returncode != 0:
        print(f"ssdkit train failed with exit code {proc.returncode}")
        return proc.returncode
    rows = list(csv.DictReader(open(os.path.join(args.output, "metrics.csv"))))
    final = float(rows[-1]["voc07_map"])
    best = max(float(r["voc07_map"]) for r in rows)
    print(f"wall time {minutes:.1f} min (goal <= 10), final VOC07 mAP {final:.4f}, best {best:.4f} (goal >= 0.90)")
    print("mAP by epoch:", ", ".join(f"{r['epoch']}: {float(r['voc07_map']):.3f}" for r in rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
