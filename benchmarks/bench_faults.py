"""What the fault tolerance costs a training step: the non-finite guard, and ``--checkpoint-steps N``.

The default run's model (``ssd_tiny_synthetic``, 128 px, bfloat16 autocast where the CPU has it), one process,
8 images a step (one rank's share of the default batch), on precomputed batches so that only the step is timed:

- plain: forward, loss, backward, ``optimizer.step()`` (the step without the guard);
- guarded: the same step as ``train_one_epoch`` takes it (the loss check folded into the backward pass, one fused
  non-finite check of the gradients, the fused optimizer skipping on the device flag, the counters);
- the guard's own work: the guarded optimizer step against the optimizer step alone (no model around it);
- a checkpoint: ``Checkpointer.save`` of ``last.pt`` (model, optimizer, scheduler, RNG, config), atomic.

Plain and guarded steps alternate in every round, so background load slows both alike; medians and ranges over
rounds. The cost of ``--checkpoint-steps N`` per step is (checkpoint time) / N, given for a few N.

    python benchmarks/bench_faults.py [--rounds 15] [--steps 10]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import torch

from ssdkit.data.collate import TargetCollate
from ssdkit.data.synthetic import SyntheticShapes
from ssdkit.data.transforms import SSDValTransform
from ssdkit.engine.builders import amp_dtype_for, build_optimizer, build_scheduler, model_anchors
from ssdkit.engine.checkpoint import Checkpointer
from ssdkit.engine.config import TrainConfig, resolve_config
from ssdkit.engine.guard import NonFiniteGuard
from ssdkit.loss import SSDMultiBoxLoss
from ssdkit.models import get_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--steps", type=int, default=10, help="steps per timing")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    cfg = resolve_config(TrainConfig())
    device = torch.device("cpu")
    amp = amp_dtype_for(device, cfg.amp)
    net = get_model(cfg.model)
    anchors = model_anchors(net, 128, device)
    if amp is not None:
        net.to(memory_format=torch.channels_last)
    data = SyntheticShapes(8 * 4, seed=1, transform=SSDValTransform(128), min_objects=5, max_objects=20)
    collate = TargetCollate(anchors)
    batches = [collate([data[i] for i in range(k * 8, k * 8 + 8)]) for k in range(4)]
    opt = build_optimizer(net, cfg)
    sched = build_scheduler(opt, cfg, 250)
    loss_fn = SSDMultiBoxLoss()
    guard = NonFiniteGuard(opt, device, cfg.max_bad_steps)

    def step(batch, guarded: bool) -> None:
        images = batch["images"].contiguous(memory_format=torch.channels_last) if amp else batch["images"]
        with torch.autocast("cpu", dtype=amp, enabled=amp is not None):
            cls_preds, box_preds, _ = net(images)
        loss = loss_fn(cls_preds, box_preds, batch["cls_targets"], batch["box_targets"])[0].sum()
        opt.zero_grad(set_to_none=True)
        if guarded:
            guard.guard_loss(loss, loss).backward()
            guard.step()
        else:
            loss.backward()
            opt.step()
        sched.step()

    def timed(guarded: bool) -> float:
        start = time.perf_counter()
        for k in range(args.steps):
            step(batches[k % len(batches)], guarded)
        return (time.perf_counter() - start) / args.steps * 1000

    folder = tempfile.mkdtemp(prefix="ssdkit-bench-")
    ckpt = Checkpointer(folder, net, opt, sched, None, guard, {"config": cfg.to_dict()})

    def timed_save() -> float:
        start = time.perf_counter()
        ckpt.save("last.pt", 0, -1.0)
        return (time.perf_counter() - start) * 1000

    timed(True), timed(False), timed_save()  # warm up: oneDNN primitives, allocator
    plain, guarded, saves = [], [], []
    for r in range(args.rounds):
        order = (False, True) if r % 2 == 0 else (True, False)
        for g in order:
            (guarded if g else plain).append(timed(g))
        saves.append(timed_save())
    ratio = [g / p for g, p in zip(guarded, plain)]
    # the guard's own work, without the model around it: the optimizer step alone vs the guarded optimizer step
    opt_only, guard_only = [], []
    for r in range(args.rounds):
        for g in (False, True) if r % 2 == 0 else (True, False):
            start = time.perf_counter()
            for _ in range(50):
                if g:
                    guard.guard_loss(torch.ones(()), torch.ones(()))
                    guard.step()
                else:
                    opt.step()
            (guard_only if g else opt_only).append((time.perf_counter() - start) / 50 * 1000)

    def show(xs):
        return f"median {statistics.median(xs):.2f} (range {min(xs):.2f}-{max(xs):.2f})"

    print(
        f"torch {torch.__version__}, {os.cpu_count()} cores, 1 thread, autocast {amp}, batch 8, {args.rounds} rounds "
        f"of {args.steps} steps"
    )
    print(f"step, plain:    {show(plain)} ms")
    print(f"step, guarded:  {show(guarded)} ms")
    print(f"guarded / plain per round: {show(ratio)}")
    print(
        f"optimizer step alone: {show(opt_only)} ms; guarded optimizer step (loss check, gradient check, "
        f"counters): {show(guard_only)} ms; difference of medians "
        f"{statistics.median(guard_only) - statistics.median(opt_only):+.2f} ms"
    )
    size = os.path.getsize(os.path.join(folder, "last.pt")) / 2**20
    print(f"checkpoint save ({size:.1f} MiB): {show(saves)} ms")
    step_ms, save_ms = statistics.median(plain), statistics.median(saves)
    for n in (1, 10, 50, 200):
        print(f"--checkpoint-steps {n}: +{save_ms / n:.2f} ms a step = +{100 * save_ms / n / step_ms:.1f} %")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
