"""Which L2Norm form lets torch.compile train SSD300 on a GPU, whether its gradients are right, and how fast it is.

Ran on one H200 (torch 2.11.0+cu130) at commit 83e023a, where ``L2Norm.scale`` was ``Tensor[1, C, 1, 1]``
("base" below); "flat" is the ``Tensor[C]`` form the model has had since. From the repository root:

    python3 benchmarks/results/gpu/compile_probe.py --variants flat,eager_norm --bench 128:bf16,64:fp16 \
        --budget 300 --base-last --out compile_probe.json

1. "check": one float32 channels-last step (TF32 off), compiled against eager: the loss and every gradient.
2. "bench": ``bench_gpu.run_config`` eager and compiled for each ``batch:amp`` of the first form that passed.
"""
import copy, os, sys, time, traceback, argparse, json
import torch
from torch import nn
sys.path.insert(0, "src"); sys.path.insert(0, "benchmarks")
import bench_gpu  # noqa: E402
import ssdkit  # noqa: E402
from ssdkit.models import vgg_atrous  # noqa: E402
from ssdkit.engine.step import train_step, zero_momentum_buffers  # noqa: E402

T0 = time.time()
Orig = vgg_atrous.L2Norm

class FlatL2Norm(nn.Module):
    def __init__(self, channels, initial=20.0, eps=1e-5):
        super().__init__()
        self.eps = eps
        self.scale = nn.Parameter(torch.full((channels,), float(initial)))
    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).sum(dim=1, keepdim=True) + self.eps) * self.scale.view(1, -1, 1, 1)

class EagerL2Norm(Orig):
    @torch.compiler.disable
    def forward(self, x):
        return super().forward(x)

VARIANTS = {"base": Orig, "flat": FlatL2Norm, "eager_norm": EagerL2Norm}
ap = argparse.ArgumentParser()
ap.add_argument("--device", default="cuda"); ap.add_argument("--size", type=int, default=300)
ap.add_argument("--check-batch", type=int, default=4)
ap.add_argument("--variants", default="flat,eager_norm")
ap.add_argument("--bench", default="128:bf16,64:fp16"); ap.add_argument("--steps", type=int, default=30)
ap.add_argument("--warmup", type=int, default=8); ap.add_argument("--budget", type=float, default=330)
ap.add_argument("--base-last", action="store_true"); ap.add_argument("--out", default="")
args = ap.parse_args()
device = torch.device(args.device)
if device.type == "cuda":
    device = torch.device("cuda", 0)
    torch.backends.cudnn.benchmark = True
torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
print("torch", torch.__version__, device, flush=True)
result = {"torch": torch.__version__, "checks": {}, "bench": []}

def build(variant):
    vgg_atrous.L2Norm = VARIANTS[variant]
    torch.manual_seed(0)
    net = ssdkit.get_model("ssd_300_vgg16_atrous_voc", pretrained_base=False).to(device).train()
    return net.to(memory_format=torch.channels_last)

def check(variant):
    """fp32 channels-last step, compiled vs eager: loss and every gradient."""
    net = build(variant)
    ref = copy.deepcopy(net)
    images, cls_t, box_t = bench_gpu.make_inputs(net, args.check_batch, args.size, device)
    loss_fn = ssdkit.SSDMultiBoxLoss()
    outs = {}
    for name, m in (("eager", ref), ("compiled", torch.compile(net))):
        t = time.time()
        x = images.contiguous(memory_format=torch.channels_last)
        cls_p, box_p, _ = m(x)
        loss = loss_fn(cls_p, box_p, cls_t, box_t)[0].sum()
        loss.backward()
        if device.type == "cuda":
            torch.cuda.synchronize()
        outs[name] = (float(loss.detach()), t)
        print(f"  {variant} {name}: loss {float(loss):.6f} in {time.time() - t:.1f} s", flush=True)
    worst, worst_name, n_cmp = 0.0, "(all equal)", 0
    for (n, p), q in zip(ref.named_parameters(), net.parameters()):
        assert p.grad.shape == q.grad.shape, (n, p.grad.shape, q.grad.shape)
        n_cmp += 1
        rel = float((p.grad - q.grad).abs().max() / p.grad.abs().max().clamp_min(1e-12))
        if rel > worst:
            worst, worst_name = rel, n
    d = abs(outs["eager"][0] - outs["compiled"][0])
    print(f"  {variant}: |loss diff| {d:.3g}, worst grad rel diff {worst:.3g} ({worst_name}) over {n_cmp} params", flush=True)
    return {"ok": True, "loss_diff": d, "worst_rel_grad_diff": worst, "worst_param": worst_name,
            "norm4_scale_grad_shape": list(dict(net.named_parameters())["features.norm4.scale"].grad.shape)}

def bench(variant, batch, amp, compiled):
    vgg_atrous.L2Norm = VARIANTS[variant]
    a = argparse.Namespace(model="ssd_300_vgg16_atrous_voc", size=args.size, compile=compiled, steps=args.steps,
                           warmup=args.warmup, log_interval=10)
    row = bench_gpu.run_config(a, device, batch, amp, False)
    row["variant"] = variant
    print(f"  bench {variant} b{batch} {amp} {'compiled' if compiled else 'eager'}: {row['images_per_s']:.1f} img/s "
          f"({row['ms_per_step']:.1f} ms/step, warm-up {row['warmup_s']:.1f} s, loss {row['last_loss']:.3f})", flush=True)
    return row

def save():
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)

working = None
for v in args.variants.split(","):
    try:
        result["checks"][v] = check(v)
        working = v
        break
    except Exception as e:  # report and try the next form
        traceback.print_exc(limit=3)
        result["checks"][v] = {"ok": False, "error": f"{type(e).__name__}: {e}"[:400]}
    save()
save()
if working:
    for spec in args.bench.split(","):
        b, amp = spec.split(":")
        for compiled in (False, True):
            if time.time() - T0 > args.budget:
                print("  budget spent, skipping", spec, compiled, flush=True); continue
            try:
                result["bench"].append(bench(working, int(b), amp, compiled))
            except Exception as e:
                traceback.print_exc(limit=3)
                result["bench"].append({"variant": working, "batch": b, "amp": amp, "compile": compiled,
                                        "error": f"{type(e).__name__}: {e}"[:400]})
            save()
if args.base_last and time.time() - T0 < args.budget:
    try:
        result["checks"]["base"] = check("base")
    except Exception as e:
        traceback.print_exc(limit=3)
        result["checks"]["base"] = {"ok": False, "error": f"{type(e).__name__}: {e}"[:400]}
save()
print(f"done in {time.time() - T0:.0f} s", flush=True)
