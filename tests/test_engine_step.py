"""The training step: no host sync, channels-last and AMP paths (bf16, fp16 with GradScaler) on CPU."""

import contextlib

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import ssdkit
from ssdkit.data.collate import TargetCollate
from ssdkit.data.synthetic import SyntheticShapes
from ssdkit.data.transforms import SSDValTransform
from ssdkit.engine.step import match_state_layouts, step_memory_format, train_step, zero_momentum_buffers
from ssdkit.engine.trainer import train_one_epoch

SIZE = 64
# aten ops that make the host wait for the device on CUDA: a scalar read (item, bool, int, float all land in
# _local_scalar_dense) and ops whose output size depends on the data
_SYNC_OPS = ("_local_scalar_dense", "nonzero", "masked_select", "unique", "_unique2", "equal", "is_nonzero")


class SyncCounter(TorchDispatchMode):
    """Counts host syncs: the aten ops above, indexing with a boolean mask, and ``.cpu()`` / ``.tolist()`` /
    ``.numpy()`` calls (patched in :func:`count_syncs`)."""

    def __init__(self):
        super().__init__()
        self.calls: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.__name__.split(".")[0]
        if name in _SYNC_OPS:
            self.calls.append(name)
        elif name in ("index", "index_put", "index_put_") and any(
            isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in args[1] if i is not None
        ):
            self.calls.append(name + " with a boolean mask")
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def count_syncs():
    counter = SyncCounter()
    patched = {}
    for name in ("cpu", "tolist", "numpy"):
        original = getattr(torch.Tensor, name)

        def wrapper(self, *a, _name=name, _original=original, **k):
            counter.calls.append(_name)
            return _original(self, *a, **k)

        patched[name] = original
        setattr(torch.Tensor, name, wrapper)
    try:
        with counter:
            yield counter.calls
    finally:
        for name, original in patched.items():
            setattr(torch.Tensor, name, original)


def _setup(amp_dtype=None, n_batches=1, batch=2, seed=0, device="cpu", size=SIZE):
    torch.manual_seed(seed)
    device = torch.device(device)
    net = ssdkit.get_model("ssd_tiny_synthetic").train()
    anchors = net.anchors_for_input(size, size)
    net.to(device, memory_format=step_memory_format(device, amp_dtype))
    ds = SyntheticShapes(batch * n_batches, seed=seed + 1, transform=SSDValTransform(size), image_size=size)
    collate = TargetCollate(anchors.cpu())
    batches = [collate([ds[i] for i in range(k * batch, (k + 1) * batch)]) for k in range(n_batches)]
    batches = [{k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in b.items()} for b in batches]
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4, fused=True)
    zero_momentum_buffers(opt)
    return net, batches, opt


def _step(net, opt, b, amp_dtype=None, scaler=None, memory_format=None):
    return train_step(
        net,
        ssdkit.SSDMultiBoxLoss(),
        opt,
        b["images"],
        b["cls_targets"],
        b["box_targets"],
        amp_dtype=amp_dtype,
        scaler=scaler,
        memory_format=memory_format,
    )


@pytest.mark.parametrize("amp", ["fp32", "bf16", "fp16-scaler"])
def test_train_step_makes_no_host_sync(amp):
    amp_dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16-scaler": torch.float16}[amp]
    net, batches, opt = _setup(amp_dtype)
    scaler = torch.amp.GradScaler("cpu") if amp_dtype == torch.float16 else None
    _step(net, opt, batches[0], amp_dtype, scaler)  # first step: lazy state (momentum buffers, scaler)
    with count_syncs() as calls:
        losses = _step(net, opt, batches[0], amp_dtype, scaler)
    assert calls == []
    assert losses.shape == (3,) and losses.dtype == torch.float32 and torch.isfinite(losses).all()


def test_train_step_catches_a_sync():
    """The counter itself: a ``.item()`` or a boolean mask inside the step is seen."""
    with count_syncs() as calls:
        t = torch.arange(5.0)
        t.sum().item()
        _ = t[t > 2]
        bool(t.any())
    assert calls == ["_local_scalar_dense", "index with a boolean mask", "_local_scalar_dense"]


def test_channels_last_step_equals_nchw():
    results = []
    for fmt in (torch.contiguous_format, torch.channels_last):
        net, batches, opt = _setup()
        net.to(memory_format=fmt)
        losses = _step(net, opt, batches[0], memory_format=fmt)
        grads = torch.cat([p.grad.flatten() for p in net.parameters() if p.grad is not None])
        weights = torch.cat([p.detach().flatten() for p in net.parameters()])
        results.append((losses, grads, weights))
    (l0, g0, w0), (l1, g1, w1) = results
    torch.testing.assert_close(l1, l0, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(g1, g0, rtol=1e-3, atol=1e-5)
    torch.testing.assert_close(w1, w0, rtol=1e-4, atol=1e-6)
    assert step_memory_format(torch.device("cpu"), None) == torch.channels_last
    assert step_memory_format(torch.device("cuda"), None) == torch.contiguous_format
    assert step_memory_format(torch.device("cuda"), torch.float16) == torch.channels_last
    # VGG in float32 on a CPU without AVX-512 trains in NCHW; under autocast NHWC stays
    assert step_memory_format(torch.device("cpu"), None, nchw_fp32_cpu=True) == torch.contiguous_format
    assert step_memory_format(torch.device("cpu"), torch.bfloat16, nchw_fp32_cpu=True) == torch.channels_last


def _conv_sgd(momentum_layout):
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(4, 8, 3)
    opt = torch.optim.SGD(conv.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4, fused=True)
    for p in conv.parameters():
        p.grad = torch.randn_like(p)
        layout = momentum_layout if p.dim() == 4 else torch.contiguous_format
        opt.state[p]["momentum_buffer"] = torch.randn_like(p).contiguous(memory_format=layout)
    return conv, opt


def test_momentum_in_another_layout_than_its_weights_is_given_theirs():
    """A checkpoint's NHWC momentum loaded for NCHW weights: fused SGD on CPU would read the two as flat memory
    and mix up elements; after ``match_state_layouts`` the step equals the one with buffers in the weights' layout."""
    ref, ref_opt = _conv_sgd(torch.contiguous_format)
    conv, opt = _conv_sgd(torch.channels_last)
    buf = opt.state[conv.weight]["momentum_buffer"]
    assert buf.stride() != conv.weight.stride()
    match_state_layouts(opt)
    moved = opt.state[conv.weight]["momentum_buffer"]
    assert moved.stride() == conv.weight.stride() and torch.equal(moved, buf)
    ref_opt.step()
    opt.step()
    torch.testing.assert_close(conv.weight, ref.weight, rtol=0, atol=0)
    torch.testing.assert_close(conv.bias, ref.bias, rtol=0, atol=0)


def test_bf16_step_learns_and_stays_close_to_fp32():
    net, batches, opt = _setup(torch.bfloat16)
    ref_net, _, ref_opt = _setup()
    first = _step(net, opt, batches[0], torch.bfloat16)
    ref = _step(ref_net, ref_opt, batches[0])
    torch.testing.assert_close(first, ref, rtol=0.05, atol=0.02)  # bf16 rounding of the convs only
    for _ in range(15):
        last = _step(net, opt, batches[0], torch.bfloat16)
    assert last[0] < 0.7 * first[0]
    assert all(p.dtype == torch.float32 for p in net.parameters())  # autocast keeps fp32 master weights


def test_fp16_grad_scaler_skips_a_step_with_inf_gradients():
    net, batches, opt = _setup(torch.float16)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    before = [p.detach().clone() for p in net.parameters()]
    _step(net, opt, batches[0], torch.float16, scaler)
    assert any(not torch.equal(a, p) for a, p in zip(before, net.parameters()))
    assert scaler.get_scale() == 2.0**10
    # a huge scale overflows fp16 gradients: the fused optimizer skips the update and the scaler halves the scale
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**60)
    before = [p.detach().clone() for p in net.parameters()]
    _step(net, opt, batches[0], torch.float16, scaler)
    assert all(torch.equal(a, p) for a, p in zip(before, net.parameters()))
    assert scaler.get_scale() == 2.0**59


def _epoch_syncs(n_batches, log_interval, amp_dtype=None, size=SIZE):
    net, batches, opt = _setup(amp_dtype, n_batches=n_batches, size=size)
    scaler = torch.amp.GradScaler("cpu") if amp_dtype == torch.float16 else None
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda it: 1.0)
    logs = []
    with count_syncs() as calls:
        stats = train_one_epoch(
            net,
            batches,
            ssdkit.SSDMultiBoxLoss(),
            opt,
            sched,
            torch.device("cpu"),
            0,
            scaler=scaler,
            amp_dtype=amp_dtype,
            log_interval=log_interval,
            on_log=lambda s, v: logs.append(s),
            progress=False,
        )
    assert logs == list(range(log_interval, n_batches + 1, log_interval))
    assert stats["steps"] == n_batches
    return len(calls)


@pytest.mark.parametrize("amp", ["fp32", "fp16-scaler"])
def test_train_one_epoch_syncs_only_when_it_logs(amp):
    """Twice the steps between the same number of log points costs no extra host sync: none inside the step."""
    amp_dtype = torch.float16 if amp == "fp16-scaler" else None
    size = 32 if amp_dtype == torch.float16 else SIZE  # float16 convolutions are slow on CPU; the syncs are the same
    few = _epoch_syncs(n_batches=2, log_interval=1, amp_dtype=amp_dtype, size=size)
    many = _epoch_syncs(n_batches=4, log_interval=2, amp_dtype=amp_dtype, size=size)
    assert few == many
    assert few <= 2 * 2 + 8  # a handful per log point and at the end of the epoch, not one per step


@pytest.mark.parametrize("overflow_steps", [(0,), (0, 2)])
def test_fused_sgd_with_zeroed_momentum_equals_plain_sgd_after_skipped_steps(overflow_steps):
    """A first step skipped for inf gradients must not leave garbage momentum in a fused SGD."""
    weights = {}
    for fused in (True, False):
        w = torch.nn.Parameter(torch.ones(4))
        opt = torch.optim.SGD([w], lr=0.1, momentum=0.9, weight_decay=5e-4, fused=fused or None)
        zero_momentum_buffers(opt)
        assert ("momentum_buffer" in opt.state[w]) == fused
        scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
        for i in range(4):
            g = torch.tensor([0.0, 1.0, 2.0, float("inf") if i in overflow_steps else 3.0])
            opt.zero_grad()
            scaler.scale((w * g).sum()).backward()
            scaler.step(opt)
            scaler.update()
        weights[fused] = w.detach().clone()
    torch.testing.assert_close(weights[True], weights[False], rtol=0, atol=1e-7)
    assert not torch.equal(weights[True], torch.ones(4))


def test_compile_option_reaches_the_config():
    from ssdkit.cli import build_parser, config_from_args

    parser = build_parser()
    assert config_from_args(parser.parse_args(["train", "--compile"])).compile is True
    assert config_from_args(parser.parse_args(["train"])).compile is False


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@needs_cuda
@pytest.mark.parametrize("amp", ["fp32", "bf16", "fp16-scaler"])
def test_cuda_step_never_waits_for_the_device(amp):
    """CUDA's own sync check (``set_sync_debug_mode("error")``) raises on any device-to-host copy or wait."""
    amp_dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16-scaler": torch.float16}[amp]
    net, batches, opt = _setup(amp_dtype, device="cuda")
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None
    _step(net, opt, batches[0], amp_dtype, scaler)  # first step: lazy state (momentum buffers, scaler, cuDNN)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):
            losses = _step(net, opt, batches[0], amp_dtype, scaler)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert losses.device.type == "cuda" and torch.isfinite(losses.cpu()).all()


@needs_cuda
def test_cuda_fp32_step_equals_cpu():
    """Same batch, same weights: the float32 step on the GPU (TF32 off) equals the CPU's."""
    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        results = []
        for device in ("cpu", "cuda"):
            net, batches, opt = _setup(device=device)
            losses = [_step(net, opt, batches[0]).cpu() for _ in range(2)]
            weights = torch.cat([p.detach().flatten().cpu() for p in net.parameters()])
            results.append((torch.stack(losses), weights))
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before
    (l_cpu, w_cpu), (l_gpu, w_gpu) = results
    torch.testing.assert_close(l_gpu, l_cpu, rtol=1e-4, atol=1e-5)
    # two SGD steps on reductions summed in another order (an H200 differed by up to 2.3e-4 from this CPU)
    torch.testing.assert_close(w_gpu, w_cpu, rtol=1e-3, atol=1e-3)


@needs_cuda
def test_cuda_fp16_step_learns_with_a_settling_scale():
    """float16 + GradScaler from the default scale (2**16, which overflows at first): the loss still falls."""
    net, batches, opt = _setup(torch.float16, device="cuda")
    scaler = torch.amp.GradScaler("cuda")
    losses = [_step(net, opt, batches[0], torch.float16, scaler) for _ in range(25)]
    first, last = losses[0].cpu(), losses[-1].cpu()
    assert torch.isfinite(last).all() and last[0] < 0.7 * first[0]
    assert all(torch.isfinite(p).all() for p in net.parameters())


@needs_cuda
@pytest.mark.parametrize("amp", ["fp16", "bf16"])
def test_cuda_compiled_vgg_step_equals_eager(amp):
    """SSD300-VGG16 (with its L2Norm scale) under ``torch.compile`` and CUDA autocast, channels-last: the backward
    runs and the gradients equal the eager step's."""
    import copy

    amp_dtype = torch.float16 if amp == "fp16" else torch.bfloat16
    device = torch.device("cuda")
    torch.manual_seed(0)
    net = ssdkit.get_model("ssd_300_vgg16_atrous_voc", pretrained_base=False).to(device).train()
    net.to(memory_format=torch.channels_last)
    images = torch.randn(2, 3, 300, 300, device=device).contiguous(memory_format=torch.channels_last)
    gt_boxes = torch.tensor([[[30.0, 40.0, 200.0, 220.0]], [[100.0, 20.0, 160.0, 90.0]]])
    gt_ids = torch.tensor([[3.0], [11.0]])
    anchors = net.anchors_for_input(300, 300).cpu()
    cls_t, box_t = ssdkit.SSDTargetGenerator(negative_mining_ratio=-1)(anchors, None, gt_boxes, gt_ids)[:2]
    grads = []
    for model in (copy.deepcopy(net), torch.compile(net)):
        with torch.autocast("cuda", dtype=amp_dtype):
            cls_p, box_p, _ = model(images)
        ssdkit.SSDMultiBoxLoss()(cls_p, box_p, cls_t.to(device), box_t.to(device))[0].sum().backward()
        grads.append(torch.cat([p.grad.float().flatten() for p in model.parameters()]))
    eager, compiled = grads
    assert torch.isfinite(compiled).all()
    assert float((compiled - eager).norm() / eager.norm()) < 2e-2
