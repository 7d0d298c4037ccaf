"""Which oneDNN kernels one ssdkit training step runs, and how long each takes, per memory format.

    ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 python benchmarks/onednn_kernels.py --model ssd300 --batch 4

For each layout (``--layouts nhwc,nchw``) a child process builds the step of ``benchmarks/bench_train_step.py`` for
``--model`` (forward, targets, loss, backward, SGD; float32), runs two warm-up steps, then one step with oneDNN's
verbose log on (``torch.backends.mkldnn.verbose``). The parent sums the log's execution times per primitive kind,
implementation, propagation kind and shape, and prints the total and the ``--top`` largest: where a layout loses
time, and which kernels the ISA limits in the environment (``ONEDNN_MAX_CPU_ISA``) leave.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections import defaultdict

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
MARKER = "=== onednn_kernels: timed step"
LAYOUTS = {"nhwc": torch.channels_last, "nchw": torch.contiguous_format}


def child(model_key: str, layout: str, batch: int, threads: int) -> None:
    """Run in the child process: warm up, then one step with oneDNN's verbose log on stdout."""
    sys.path.insert(0, HERE)
    from bench_train_step import MODELS, ssdkit_step

    if threads:
        torch.set_num_threads(threads)
    model, size = MODELS[model_key]
    step = ssdkit_step(model, size, batch, None, LAYOUTS[layout])
    step()
    step()
    print(MARKER, flush=True)
    with torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON):
        step()
    sys.stdout.flush()


def summarize(log: str) -> dict[tuple[str, str, str, str], float]:
    """Milliseconds per (primitive, implementation, propagation, shape) over the verbose lines after the marker."""
    totals: dict[tuple[str, str, str, str], float] = defaultdict(float)
    timed = False
    for line in log.splitlines():
        if line.startswith(MARKER):
            timed = True
            continue
        fields = line.strip().split(",")
        if not timed or not line.startswith("onednn_verbose") or len(fields) < 10 or fields[3] != "exec":
            continue
        try:
            ms = float(fields[-1])
        except ValueError:
            continue
        totals[(fields[5], fields[6], fields[7], fields[-2])] += ms
    return dict(totals)


def main(argv=None) -> dict[str, dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="ssd300", help="a key of bench_train_step.MODELS (ssd300, ssd512, tiny, ...)")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--layouts", default="nhwc,nchw")
    ap.add_argument("--top", type=int, default=12)
    ap.add_argument("--threads", type=int, default=0, help="intra-op threads (0: torch's default)")
    args = ap.parse_args(argv)
    results = {}
    for layout in args.layouts.split(","):
        if layout not in LAYOUTS:
            ap.error(f"--layouts: {layout!r} is not one of {sorted(LAYOUTS)}")
        code = (
            f"import sys; sys.path.insert(0, {HERE!r}); import onednn_kernels; "
            f"onednn_kernels.child({args.model!r}, {layout!r}, {args.batch}, {args.threads})"
        )
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        if out.returncode != 0:
            raise SystemExit(f"the {layout} step failed:\n{out.stderr[-2000:]}")
        totals = summarize(out.stdout)
        top = sorted(totals.items(), key=lambda kv: -kv[1])[: args.top]
        total = sum(totals.values())
        print(f"{args.model} {layout}, batch {args.batch}: oneDNN primitives {total:.0f} ms in one step")
        for (kind, impl, prop, shape), ms in top:
            print(f"  {ms:8.1f} ms  {kind} {impl} {prop} {shape}")
        results[layout] = {"total_ms": total, "top": [(list(k), ms) for k, ms in top]}
    return results


if __name__ == "__main__":
    main()
