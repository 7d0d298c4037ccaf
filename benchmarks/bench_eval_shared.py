"""The evaluation of a training run, by rank 0 alone against split over the run's two processes, alternating.

    ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 python benchmarks/bench_eval_shared.py \
        --checkpoint runs/<run>/best.pt [--rounds 3] [--log benchmarks/results/eval_shared.txt]

The trained model of ``--checkpoint`` (a synthetic-data run of ``ssdkit train``) scores its run's validation split
(500 images by default) as the training loop does after an epoch: one process with one thread, as rank 0 of a
two-process run evaluated while rank 1 waited; and two processes with one thread each, each detecting on its share
of the batches and rank 0 scoring them all (``evaluate_shared``). Each round times both, one after the other, from
the first batch to rank 0's result, without the processes' start. Prints each time, the medians, their ratio, and
whether the two give the same mAP (they must: the same batches and weights, the metric fed in the same order).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from ssdkit.engine.builders import build_datasets, build_loader, build_metric
from ssdkit.engine.distributed import run_in_processes
from ssdkit.engine.evaluation import load_trained_model
from ssdkit.engine.validate import evaluate_shared


def _score(cfg, say, rank: int, world: int):
    """Seconds from the first batch to the metric's result, and the result (rank 0)."""
    torch.set_num_threads(1)
    net, _, _ = load_trained_model(cfg.extra["checkpoint"], torch.device("cpu"))
    net.to(memory_format=torch.channels_last)
    _, val_set, classes = build_datasets(cfg, cfg.data_shape, train=False)
    loader = build_loader(val_set, cfg, train=False, shard=(rank, world))
    metric = build_metric(cfg, classes, val_set, cfg.data_shape)
    if world > 1:
        torch.distributed.barrier()
    start = time.perf_counter()
    result = evaluate_shared(net, loader, metric, torch.device("cpu"))
    return time.perf_counter() - start, result


def main(argv: list[str] | None = None) -> dict[str, list[float]]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--log", help="also append the report to this file")
    args = ap.parse_args(argv)
    _, cfg, _ = load_trained_model(args.checkpoint, torch.device("cpu"))
    cfg.extra = {"checkpoint": args.checkpoint}
    cfg.num_workers = 0
    times: dict[str, list[float]] = {"alone": [], "shared": []}
    results = {}
    lines = []
    for r in range(args.rounds):
        for mode in times:
            cfg.procs = 1 if mode == "alone" else 2
            seconds, result = _score(cfg, None, 0, 1) if mode == "alone" else run_in_processes(_score, cfg, print)
            times[mode].append(seconds)
            results[mode] = result
            lines.append(f"round {r + 1} {mode:6s} {seconds:.2f} s  mAP {result[1][-1]:.4f}")
            print(lines[-1], flush=True)
    alone, shared = (statistics.median(times[m]) for m in ("alone", "shared"))
    lines.append(
        f"{cfg.synthetic_val_size} val images, batches of {cfg.batch_size}: rank 0 alone {alone:.2f} s, shared by two "
        f"processes {shared:.2f} s (medians of {args.rounds}); alone / shared = {alone / shared:.2f}; "
        f"the same mAP: {results['alone'] == results['shared']}"
    )
    print(lines[-1])
    if args.log:
        with open(args.log, "a") as f:
            f.write(f"$ python benchmarks/bench_eval_shared.py --checkpoint {args.checkpoint} --rounds {args.rounds}\n")
            f.write("\n".join(lines) + "\n\n")
    if results["alone"] != results["shared"]:
        raise SystemExit("the shared evaluation scored otherwise than rank 0 alone")
    return times


if __name__ == "__main__":
    main()
