"""Training-step speed of the real models: ssdkit's SSD300-VGG16 / SSD512-ResNet50 against torchvision's
``ssd300_vgg16``, and against this machine's fp32 matmul peak, side by side in one process.

    python benchmarks/bench_train_step.py [--models ssd300,ssd512] [--dtypes fp32,bf16] [--batch 4]
                                          [--repeats 3] [--profile benchmarks/results/profile_step.txt]

One step = forward, SSD targets (matching + encoding of the batch's boxes), loss with hard-negative mining,
backward and an SGD step (momentum 0.9, weight decay 5e-4), on batch ``--batch`` of random images with 1-5
VOC-like boxes each. torchvision's step is ``ssd300_vgg16(num_classes=21)`` in train mode (its own matching and
loss inside ``forward``), random weights, nothing downloaded. The jobs (every model x dtype, plus a 2048 x 2048
fp32 matmul for the peak) run round-robin ``--repeats`` times after one warm-up round, so a busy machine slows
them alike; medians are printed with the range. The step's FLOPs are counted once per model with
``torch.utils.flop_counter`` (forward + backward convolutions and matmuls; the loss and SGD add under 0.1 %),
and achieved FLOP/s are reported as a fraction of the matmul peak. ``bf16`` (autocast + channels-last) runs only
where the CPU has native bfloat16 unless ``--force-bf16``. ssdkit's step runs in the memory format ``ssdkit train``
picks on this CPU (NHWC, except VGG in float32 without AVX-512: NCHW); ``--other-layout`` times the other one too.
``--profile`` writes ``torch.profiler`` tables (top operators by self CPU time) of one ssdkit and one torchvision
step per dtype.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

MODELS = {
    "ssd300": ("ssd_300_vgg16_atrous_voc", 300),
    "ssd512": ("ssd_512_resnet50_v1_voc", 512),
    "ssd512vgg": ("ssd_512_vgg16_atrous_voc", 512),
    "mobilenet": ("ssd_512_mobilenet1.0_voc", 512),
    "tiny": ("ssd_tiny_synthetic", 128),
}


def make_batch(batch: int, size: int, num_classes: int = 20, seed: int = 0):
    """Images ``Tensor[B, 3, S, S]`` (normalized-looking floats) and per-image boxes (xyxy pixels) and labels."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(batch, 3, size, size, generator=g)
    boxes, labels = [], []
    for _ in range(batch):
        m = int(torch.randint(1, 6, (1,), generator=g))
        xy = torch.rand(m, 2, generator=g) * (size * 0.7)
        wh = torch.rand(m, 2, generator=g) * (size * 0.5) + size * 0.05
        boxes.append(torch.cat([xy, (xy + wh).clamp(max=size - 1)], dim=1))
        labels.append(torch.randint(0, num_classes, (m,), generator=g))
    return images, boxes, labels


def _padded(boxes, labels):
    g = max(len(b) for b in boxes)
    gt_boxes = torch.full((len(boxes), g, 4), -1.0)
    gt_ids = torch.full((len(boxes), g), -1.0)
    for k, (b, lab) in enumerate(zip(boxes, labels)):
        gt_boxes[k, : len(b)] = b
        gt_ids[k, : len(b)] = lab.float()
    return gt_boxes, gt_ids


def _sgd(net):
    return torch.optim.SGD(net.parameters(), lr=1e-4, momentum=0.9, weight_decay=5e-4, fused=True)


def ssdkit_layout(model: str, amp_dtype) -> torch.memory_format:
    """The memory format ``ssdkit train`` would train ``model`` in on this CPU."""
    from ssdkit.engine.builders.runtime import run_memory_format

    return run_memory_format(model, torch.device("cpu"), amp_dtype)


def ssdkit_step(model: str, size: int, batch: int, amp_dtype, memory_format=None):
    """A callable running one ssdkit training step (``ssdkit.engine.step.train_step``, the trainer's step) in
    ``memory_format`` (None: the one ``ssdkit train`` picks here)."""
    import ssdkit
    from ssdkit.engine.step import train_step

    torch.manual_seed(0)
    net = ssdkit.get_model(model, pretrained_base=False).train()
    memory_format = memory_format or ssdkit_layout(model, amp_dtype)
    net = net.to(memory_format=memory_format)
    images, boxes, labels = make_batch(batch, size, net.num_classes)
    gt_boxes, gt_ids = _padded(boxes, labels)
    anchors = net.anchors_for_input(size, size)
    target_gen = ssdkit.SSDTargetGenerator(negative_mining_ratio=-1)
    loss_fn = ssdkit.SSDMultiBoxLoss()
    opt = _sgd(net)

    def step():
        with torch.no_grad():
            cls_t, box_t = target_gen(anchors, None, gt_boxes, gt_ids)[:2]
        return train_step(net, loss_fn, opt, images, cls_t, box_t, amp_dtype=amp_dtype, memory_format=memory_format)

    return step


def torchvision_step(batch: int, amp_dtype):
    from torchvision.models.detection import ssd300_vgg16

    torch.manual_seed(0)
    net = ssd300_vgg16(weights=None, weights_backbone=None, num_classes=21).train()
    if amp_dtype is not None:
        net = net.to(memory_format=torch.channels_last)
    images, boxes, labels = make_batch(batch, 300)
    img_list = [im for im in images]
    targets = [{"boxes": b, "labels": lab + 1} for b, lab in zip(boxes, labels)]
    opt = _sgd(net)

    def step():
        with torch.autocast("cpu", dtype=amp_dtype or torch.bfloat16, enabled=amp_dtype is not None):
            losses = net(img_list, targets)
        loss = sum(losses.values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.detach()

    return step


def step_flops(step) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        step()
    return counter.get_total_flops()


def matmul_job(n: int = 2048):
    a, b = torch.randn(n, n), torch.randn(n, n)
    out = torch.empty(n, n)

    def run():
        for _ in range(3):
            torch.mm(a, b, out=out)

    return run, 3 * 2 * n**3


def profile_table(step, rows: int = 25) -> str:
    from torch.profiler import ProfilerActivity, profile

    step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows, max_name_column_width=48)


_LAYOUT_NAMES = {torch.channels_last: "nhwc", torch.contiguous_format: "nchw"}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--models",
        default="ssd300,ssd512",
        help="comma-separated: ssd300, ssd512 (ResNet-50), ssd512vgg, mobilenet, tiny",
    )
    ap.add_argument("--dtypes", default="fp32,bf16")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-torchvision", action="store_true")
    ap.add_argument(
        "--other-layout",
        action="store_true",
        help="also time ssdkit's step in the memory format it does not pick here (NCHW / NHWC)",
    )
    ap.add_argument("--force-bf16", action="store_true", help="run bf16 even where the CPU emulates it")
    ap.add_argument("--threads", type=int, default=0, help="intra-op threads (0: torch's default)")
    ap.add_argument("--profile", default="", help="write torch.profiler tables to this file")
    ap.add_argument("--json", default="", help="write the medians to this JSON file")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from ssdkit.engine.builders import cpu_has_native_bf16

    dtypes = []
    for name in args.dtypes.split(","):
        if name == "bf16" and not (cpu_has_native_bf16() or args.force_bf16):
            print("bf16: skipped (no native bfloat16 on this CPU; --force-bf16 runs it emulated)")
            continue
        dtypes.append((name, {"fp32": None, "bf16": torch.bfloat16}[name]))
    jobs, flops = {}, {}
    for key in args.models.split(","):
        model, size = MODELS[key]
        for dname, dt in dtypes:
            jobs[f"ssdkit {key} {dname}"] = ssdkit_step(model, size, args.batch, dt)
            picked = ssdkit_layout(model, dt)
            print(f"ssdkit {key} {dname}: {_LAYOUT_NAMES[picked]} (the layout ssdkit train picks here)")
            if args.other_layout:
                other = torch.contiguous_format if picked == torch.channels_last else torch.channels_last
                jobs[f"ssdkit {key} {dname} {_LAYOUT_NAMES[other]}"] = ssdkit_step(model, size, args.batch, dt, other)
            if key == "ssd300" and not args.no_torchvision:
                jobs[f"torchvision ssd300 {dname}"] = torchvision_step(args.batch, dt)
    counted = {}
    for name, step in jobs.items():  # warm-up round; FLOPs counted once per model (every dtype does the same)
        t0 = time.perf_counter()
        step()
        print(f"warm-up {name}: {time.perf_counter() - t0:.1f} s", flush=True)
        model_key = name.split()[1]
        if model_key not in counted:
            counted[model_key] = step_flops(step)
        flops[name] = counted[model_key]
    mm, mm_flops = matmul_job()
    mm()
    times = {name: [] for name in jobs}
    times["matmul fp32"] = []
    for _ in range(args.repeats):
        for name, fn in list(jobs.items()) + [("matmul fp32", mm)]:
            time.sleep(0.1)
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
            print(f"  {name}: {times[name][-1]:.3f} s", flush=True)
    peak = mm_flops / statistics.median(times["matmul fp32"])
    env = {k: os.environ[k] for k in ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY") if k in os.environ}
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}, {args.repeats} "
        f"interleaved repeats{', ' + str(env) if env else ''}; fp32 matmul peak {peak / 1e9:.1f} GFLOP/s "
        f"(2048^2, range {mm_flops / max(times['matmul fp32']) / 1e9:.1f}-"
        f"{mm_flops / min(times['matmul fp32']) / 1e9:.1f})"
    )
    result = {"peak_gflops": peak / 1e9, "threads": torch.get_num_threads(), "env": env, "jobs": {}}
    print(
        f"{'job':28s} {'s/step':>8s} {'range':>15s} {'img/s':>7s} {'GFLOP/step':>10s} {'GFLOP/s':>8s} {'of peak':>7s}"
    )
    for name in jobs:
        med = statistics.median(times[name])
        rate = flops[name] / med
        print(
            f"{name:28s} {med:8.3f} {min(times[name]):7.3f}-{max(times[name]):7.3f} {args.batch / med:7.2f} "
            f"{flops[name] / 1e9:10.1f} {rate / 1e9:8.1f} {rate / peak:7.0%}"
        )
        result["jobs"][name] = {
            "median_s": med,
            "min_s": min(times[name]),
            "max_s": max(times[name]),
            "images_per_s": args.batch / med,
            "gflop": flops[name] / 1e9,
            "of_peak": rate / peak,
        }
    for dname, _ in dtypes:
        ours, theirs = f"ssdkit ssd300 {dname}", f"torchvision ssd300 {dname}"
        if ours in times and theirs in times:
            ratios = [b / a for a, b in zip(times[ours], times[theirs])]
            ratio = statistics.median(times[theirs]) / statistics.median(times[ours])
            print(
                f"ssd300 {dname}: torchvision's step / ssdkit's = {ratio:.2f}x "
                f"(per round {min(ratios):.2f}-{max(ratios):.2f})"
            )
            result[f"ratio_{dname}"] = statistics.median(times[theirs]) / statistics.median(times[ours])
    if args.profile:
        with open(args.profile, "w") as f:
            for name, step in jobs.items():
                f.write(f"== {name} (python benchmarks/bench_train_step.py {' '.join(argv or sys.argv[1:])})\n")
                f.write(profile_table(step) + "\n\n")
        print(f"profiles written to {args.profile}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
