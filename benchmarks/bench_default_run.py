"""The default run (`ssdkit train` with no options), repeated: wall time and final VOC07 mAP, on this CPU's own
kernels and held to AVX2 in float32 (the common CPU: no AVX-512, no native bfloat16).

    python benchmarks/bench_default_run.py --runs 3 --isa both --other-seed 7
    python benchmarks/bench_default_run.py --runs 1 --isa avx2 -- --time-budget 0   # the whole recipe, untimed

Held to AVX2 means ``ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2`` and ``--no-amp``; before the runs a short
check lists the convolution kernels oneDNN runs under each setting (``ONEDNN_VERBOSE=1``). Every run's output, the
machine's load (``uptime``) before each run, the CPU and the summary (median and range per setting) go to the log,
by default ``benchmarks/results/default_run-<date>.txt``. The default run has a 10-minute time budget, so a slow or
busy machine trains fewer images: each run's line says how many it trained.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import re
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
AVX2_ENV = {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}
KERNEL_CHECK = """
import os, torch, ssdkit
from ssdkit.engine.builders import amp_dtype_for, synthetic_default_model
use_amp = None if os.environ.get("ONEDNN_MAX_CPU_ISA") is None else False
amp = amp_dtype_for(torch.device("cpu"), use_amp)
model = synthetic_default_model(torch.device("cpu"), use_amp)
print("default model:", model)
net = ssdkit.get_model(model).to(memory_format=torch.channels_last)
x = torch.rand(2, 3, 128, 128).contiguous(memory_format=torch.channels_last)
with torch.autocast("cpu", dtype=amp, enabled=amp is not None):
    cls, box, _ = net(x)
(cls.float().sum() + box.float().sum()).backward()
"""


class Log:
    def __init__(self, path: str):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self.path = path
        self.file = open(path, "a")

    def __call__(self, text: str = "") -> None:
        print(text, flush=True)
        self.file.write(text + "\n")
        self.file.flush()


def cpu_description() -> str:
    model, flags = platform.processor() or "unknown CPU", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and model in ("", "unknown CPU", platform.processor()):
                    model = line.split(":", 1)[1].strip()
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    wanted = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")
    return f"{model}, {os.cpu_count()} logical cores, flags: {' '.join(f for f in wanted if f in flags) or '?'}"


def load() -> str:
    try:
        with open("/proc/loadavg") as f:
            return "load average " + " ".join(f.read().split()[:3])
    except OSError:
        return "load average unknown"


def kernel_check(env: dict[str, str]) -> str:
    """The convolution implementations oneDNN runs for one forward + backward of the default model."""
    out = subprocess.run(
        [sys.executable, "-c", KERNEL_CHECK],
        env={**env, "ONEDNN_VERBOSE": "1"},
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    counts: dict[str, int] = {}
    model = ""
    for line in out.stdout.splitlines():
        if line.startswith("default model:"):
            model = line.split(":", 1)[1].strip() + ": "
        parts = line.split(",")
        if len(parts) > 8 and parts[3] == "exec" and parts[5] == "convolution":
            name = f"{parts[6]} {parts[8].split(':')[1]}"  # implementation and source data type
            counts[name] = counts.get(name, 0) + 1
    kernels = ", ".join(f"{k} x{v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1]))
    return model + kernels if kernels else out.stderr[-300:]


def one_run(label: str, index: int, seed: int, avx2: bool, extra: list[str], out_root: str, log: Log) -> dict:
    output = os.path.join(out_root, f"{label}-seed{seed}-{index}")
    cmd = [
        sys.executable,
        "-m",
        "ssdkit",
        "train",
        "--no-progress",
        "--output",
        output,
        "--seed",
        str(seed),
        *(["--no-amp"] if avx2 else []),
        *extra,
    ]
    log(f"--- {label} run {index} (seed {seed}), {load()}, {time.strftime('%H:%M:%S')}")
    log("$ " + "".join(f"{k}={v} " for k, v in AVX2_ENV.items() if avx2) + "python " + " ".join(cmd[1:]))
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd,
        env={**os.environ, **(AVX2_ENV if avx2 else {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
    )
    lines = []
    for line in proc.stdout:
        line = line.rstrip("\n")
        lines.append(line)
        log("  " + line)
    proc.wait()
    minutes = (time.perf_counter() - start) / 60
    if proc.returncode != 0:
        log(f"  failed with exit code {proc.returncode}")
        return {"label": label, "seed": seed, "minutes": minutes, "map": float("nan"), "images": "?"}
    with open(os.path.join(output, "metrics.csv")) as f:
        rows = list(csv.DictReader(f))
    text = "\n".join(lines)
    # what was trained: each epoch's images (the budget sizes the last epoch apart and may stop it at its deadline)
    with open(os.path.join(output, "epochs.csv")) as f:
        per_epoch_rows = {int(r["epoch"]): int(float(r["images"])) for r in csv.DictReader(f)}
    # the epochs this run trained, from its own log lines (a run folder used before may hold older rows)
    epochs = re.findall(r"^epoch (\d+)/\d+ ", text, flags=re.M)
    images = f"{sum(per_epoch_rows[e] for e in range(1, int(epochs[-1]) + 1)):,}" if epochs else "?"
    rates = re.findall(r"([\d.]+) img/s", text)
    final = re.findall(r"^done: final voc07_map ([\d.]+)", text, flags=re.M)
    result = {
        "label": label,
        "seed": seed,
        "minutes": minutes,
        "map": float(final[-1]) if final else float(rows[-1]["voc07_map"]),
        "images": images,
        "img_s": rates[-1] if rates else "?",
    }
    log(
        f"  => {minutes:.2f} min, final VOC07 mAP {result['map']:.4f}, training images {images}, "
        f"last epoch {result['img_s']} img/s, {load()}"
    )
    return result


def summary(results: list[dict], log: Log) -> None:
    log("\nsummary (median [min, max] over runs):")
    groups: dict[tuple[str, int], list[dict]] = {}
    for r in results:
        groups.setdefault((r["label"], r["seed"]), []).append(r)
    for (label, seed), rs in groups.items():
        minutes = [r["minutes"] for r in rs]
        maps = [r["map"] for r in rs]
        log(
            f"  {label:6s} seed {seed:<5d} {len(rs)} run(s): {statistics.median(minutes):.2f} min "
            f"[{min(minutes):.2f}, {max(minutes):.2f}], final VOC07 mAP {statistics.median(maps):.4f} "
            f"[{min(maps):.4f}, {max(maps):.4f}], training images {', '.join(str(r['images']) for r in rs)}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3, help="runs per setting at --seed (default 3)")
    parser.add_argument("--isa", choices=("native", "avx2", "both"), default="both")
    parser.add_argument("--seed", type=int, default=233)
    parser.add_argument("--other-seed", type=int, help="one more run at this seed (held to AVX2 unless --isa native)")
    parser.add_argument("--output-root", default=os.path.join("runs", "bench-default"))
    parser.add_argument(
        "--log", default=os.path.join(ROOT, "benchmarks", "results", f"default_run-{time.strftime('%Y%m%d')}.txt")
    )
    args, extra = parser.parse_known_args()
    extra = [a for a in extra if a != "--"]
    log = Log(args.log)
    settings = [(name, avx2) for name, avx2 in (("native", False), ("avx2", True)) if args.isa in (name, "both")]
    log(f"=== bench_default_run {time.strftime('%Y-%m-%d %H:%M:%S')}: {cpu_description()}")
    log(f"python {platform.python_version()}, extra train options: {' '.join(extra) or 'none'}")
    for name, avx2 in settings:
        log(f"convolution kernels ({name}): {kernel_check({**os.environ, **(AVX2_ENV if avx2 else {})})}")
    results = []
    for name, avx2 in settings:
        for i in range(args.runs):
            results.append(one_run(name, i + 1, args.seed, avx2, extra, args.output_root, log))
    if args.other_seed is not None:
        name, avx2 = settings[-1]
        results.append(one_run(name, 1, args.other_seed, avx2, extra, args.output_root, log))
    summary(results, log)
    log(f"log: {os.path.relpath(args.log, ROOT)}")
    return 0 if all(r["map"] == r["map"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
