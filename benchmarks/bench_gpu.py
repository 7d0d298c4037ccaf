"""SSD300 training speed on one GPU: images/s of ssdkit's training step with AMP, plain and under DDP.

    python benchmarks/bench_gpu.py [--batches 32,64] [--amp fp16,bf16] [--steps 30] [--warmup 10] [--ddp]
                                   [--compile] [--json benchmarks/results/gpu.json] [--profile FILE]
    python benchmarks/bench_gpu.py --device cpu --steps 1 --warmup 0 --model ssd_tiny_synthetic --size 64 \\
                                   --batches 2 --amp bf16 --ddp      # smoke run of every code path on a CPU

The step is the trainer's (``ssdkit.engine.step.train_step``): channels-last, autocast (float16 with a
``GradScaler``, or bfloat16), loss with hard-negative mining, backward, fused SGD (momentum 0.9, weight decay
5e-4), no host sync inside the step; losses are read back every ``--log-interval`` steps, as in training.
Inputs are random images with SSD targets made once from 1-5 random boxes per image and kept on the device, so
the figure is the model step alone (``bench_pipeline.py`` measures the input pipeline). ``--ddp`` adds a run in
``DistributedDataParallel`` over NCCL (gloo on CPU) with world size 1: the code path that every process of a
multi-GPU run takes (gradient all-reduce hooks, the loss's all-reduced positive count). Timing: ``--warmup``
steps, then ``--steps`` steps between two device synchronizations. Exits with code 2 and a message when the device
is not there.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

AMP = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": None}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_inputs(net, batch: int, size: int, device: torch.device, seed: int = 0):
    """Random images ``Tensor[B, 3, S, S]`` and their SSD targets (``Tensor[B, A]``, ``Tensor[B, A, 4]``)."""
    import ssdkit

    g = torch.Generator().manual_seed(seed)
    images = torch.randn(batch, 3, size, size, generator=g)
    gt_boxes = torch.full((batch, 5, 4), -1.0)
    gt_ids = torch.full((batch, 5), -1.0)
    for k in range(batch):
        m = int(torch.randint(1, 6, (1,), generator=g))
        xy = torch.rand(m, 2, generator=g) * size * 0.7
        wh = torch.rand(m, 2, generator=g) * size * 0.5 + size * 0.05
        gt_boxes[k, :m] = torch.cat([xy, (xy + wh).clamp(max=size - 1)], dim=1)
        gt_ids[k, :m] = torch.randint(0, net.num_classes, (m,), generator=g).float()
    anchors = net.anchors_for_input(size, size).cpu()
    cls_t, box_t = ssdkit.SSDTargetGenerator(negative_mining_ratio=-1)(anchors, None, gt_boxes, gt_ids)[:2]
    return images.to(device), cls_t.to(device), box_t.to(device)


def build_step(args, device: torch.device, batch: int, amp: str, ddp: bool):
    """The model, loss, optimizer and inputs of one configuration; returns ``step()`` and the parts to report."""
    import ssdkit
    from ssdkit.engine.distributed import wrap_ddp
    from ssdkit.engine.step import step_memory_format, train_step, zero_momentum_buffers

    torch.manual_seed(0)
    amp_dtype = AMP[amp]
    net = ssdkit.get_model(args.model, pretrained_base=False).to(device).train()
    net.to(memory_format=step_memory_format(device, amp_dtype))
    images, cls_t, box_t = make_inputs(net, batch, args.size, device)
    opt = torch.optim.SGD(net.parameters(), lr=1e-4, momentum=0.9, weight_decay=5e-4, fused=True)
    zero_momentum_buffers(opt)
    scaler = torch.amp.GradScaler(device.type) if amp_dtype == torch.float16 else None
    loss_fn = ssdkit.SSDMultiBoxLoss()
    train_net = net
    if ddp:
        train_net = wrap_ddp(net, device)  # as the trainer wraps it
    if args.compile:
        train_net = torch.compile(train_net)

    def step() -> torch.Tensor:
        return train_step(train_net, loss_fn, opt, images, cls_t, box_t, amp_dtype, scaler)

    return step, scaler


def run_config(args, device: torch.device, batch: int, amp: str, ddp: bool) -> dict:
    step, scaler = build_step(args, device, batch, amp, ddp)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    pending = torch.zeros(3, device=device)
    logged = []

    def steps(n):
        nonlocal pending
        for i in range(n):
            pending += step()
            if (i + 1) % args.log_interval == 0:
                logged.append((pending / args.log_interval).tolist())
                pending.zero_()

    t0 = time.perf_counter()
    steps(args.warmup)
    _sync(device)
    warm_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    steps(args.steps)
    _sync(device)
    sec = time.perf_counter() - t0
    last = pending.tolist() if not logged else logged[-1]
    row = {
        "batch": batch,
        "amp": amp,
        "ddp": ddp,
        "compile": args.compile,
        "steps": args.steps,
        "images_per_s": batch * args.steps / sec,
        "ms_per_step": sec / args.steps * 1e3,
        "warmup_s": warm_s,
        "last_loss": last[0],
    }
    if device.type == "cuda":
        row["peak_mem_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    if scaler is not None:
        row["grad_scale"] = scaler.get_scale()
    return row


def profile_config(args, device: torch.device, batch: int, amp: str, path: str, n: int = 5) -> None:
    """Write torch.profiler's operator table (top 30 by time on the device) for ``n`` steps after a warm-up."""
    from torch.profiler import ProfilerActivity, profile

    step, _ = build_step(args, device, batch, amp, False)
    for _ in range(max(3, args.warmup)):
        step()
    _sync(device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(n):
            step()
        _sync(device)
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    table = prof.key_averages().table(sort_by=key, row_limit=30)
    with open(path, "w") as f:
        f.write(f"{args.model} batch {batch} {amp}, {n} steps\n{table}\n")
    print(f"  profile of batch {batch} {amp} written to {path}", flush=True)


def _init_single_process_group(device: torch.device) -> None:
    import torch.distributed as dist

    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(29500 + os.getpid() % 1000))
    dist.init_process_group(
        "nccl" if device.type == "cuda" else "gloo",
        rank=0,
        world_size=1,
        device_id=device if device.type == "cuda" else None,
    )


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--model", default="ssd_300_vgg16_atrous_voc")
    ap.add_argument("--size", type=int, default=300)
    ap.add_argument("--batches", default="32,64")
    ap.add_argument("--amp", default="fp16,bf16", help="comma-separated: fp16 (with GradScaler), bf16, fp32")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--log-interval", type=int, default=10)
    ap.add_argument("--ddp", action="store_true", help="also run batch --batches[0], first --amp under DDP")
    ap.add_argument("--compile", action="store_true", help="torch.compile the model")
    ap.add_argument("--json", default="")
    ap.add_argument("--profile", default="", help="write the operator table of --batches[0], first --amp here")
    args = ap.parse_args(argv)
    try:
        device = torch.device(args.device)
    except RuntimeError as err:
        raise SystemExit(f"bench_gpu.py: --device {args.device!r} is not a device ({err})") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        print(
            "bench_gpu.py: CUDA is not available on this machine (no GPU or no CUDA driver); "
            "`--device cpu --steps 1` runs a smoke test of the code paths",
            file=sys.stderr,
        )
        sys.exit(2)
    if args.steps < 1 or args.log_interval < 1 or args.warmup < 0:
        raise SystemExit("bench_gpu.py: --steps and --log-interval must be >= 1, --warmup >= 0")
    if device.type == "cuda":
        if device.index is None:  # NCCL's process group wants the GPU's index
            device = torch.device("cuda", torch.cuda.current_device())
        torch.backends.cudnn.benchmark = True
        name = torch.cuda.get_device_name(device)
    else:
        name = f"CPU, {torch.get_num_threads()} threads"
    amps = args.amp.split(",")
    bad = [a for a in amps if a not in AMP]
    if bad:
        raise SystemExit(f"bench_gpu.py: --amp {','.join(bad)}: choose from {', '.join(AMP)}")
    batches = [int(b) for b in args.batches.split(",")]
    print(
        f"{args.model} at {args.size}x{args.size} on {name}, torch {torch.__version__}, {args.warmup} warm-up + "
        f"{args.steps} timed steps{', compiled' if args.compile else ''}",
        flush=True,
    )
    rows = []
    configs = [(b, a, False) for b in batches for a in amps]
    if args.ddp:
        configs.append((batches[0], amps[0], True))
        _init_single_process_group(device)
    try:
        for batch, amp, ddp in configs:
            row = run_config(args, device, batch, amp, ddp)
            rows.append(row)
            mem = f"  peak {row['peak_mem_gib']:.1f} GiB" if "peak_mem_gib" in row else ""
            print(
                f"  batch {batch:3d} {amp}{' DDP(world 1)' if ddp else '':13s} {row['images_per_s']:8.1f} img/s "
                f"({row['ms_per_step']:.1f} ms/step, warm-up {row['warmup_s']:.1f} s, loss {row['last_loss']:.3f})"
                f"{mem}",
                flush=True,
            )
    finally:
        if args.ddp:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()
    if args.profile:
        profile_config(args, device, batches[0], amps[0], args.profile)
    plain = {(r["batch"], r["amp"]): r for r in rows if not r["ddp"]}
    for r in rows:
        if r["ddp"] and (r["batch"], r["amp"]) in plain:
            print(
                f"  DDP (world 1) / plain at batch {r['batch']} {r['amp']}: "
                f"{r['images_per_s'] / plain[(r['batch'], r['amp'])]['images_per_s']:.2f}x"
            )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": name, "torch": torch.__version__, "model": args.model, "rows": rows}, f, indent=2)
    return rows


if __name__ == "__main__":
    main()
