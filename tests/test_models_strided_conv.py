"""models/strided_conv.py: the extras' 3x3/2 conv gives a plain conv's output everywhere, and on a 1 x 1 map the
right weight gradient in bfloat16 too (oneDNN's AMX kernel returns garbage for the outer taps there)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ssdkit.models.strided_conv import StridedConv2d


def _pair(seed=0):
    torch.manual_seed(seed)
    ours = StridedConv2d(16, 24, 3, 2)
    plain = nn.Conv2d(16, 24, 3, 2, 1, bias=False)
    plain.load_state_dict(ours.state_dict())
    return ours, plain


@pytest.mark.parametrize("size", [1, 2, 3, 5])
def test_same_output_and_gradient_as_a_plain_conv(size):
    ours, plain = _pair()
    assert list(ours.state_dict()) == ["weight"]
    x = torch.randn(2, 16, size, size)
    out, ref = ours(x), plain(x)
    torch.testing.assert_close(out, ref)
    g = torch.randn_like(ref)
    out.backward(g)
    ref.backward(g)
    torch.testing.assert_close(ours.weight.grad, plain.weight.grad)
    if size == 1:  # the outer taps see only padding
        outer = ours.weight.grad.clone()
        outer[:, :, 1, 1] = 0
        assert torch.count_nonzero(outer) == 0


def test_bf16_channels_last_gradient_of_a_1x1_map_is_right():
    """The case oneDNN gets wrong on AMX CPUs (wrong in most calls there); repeated, as it is not deterministic."""
    torch.manual_seed(0)
    conv = StridedConv2d(64, 128, 3, 2).to(memory_format=torch.channels_last)
    x = torch.randn(8, 64, 1, 1).contiguous(memory_format=torch.channels_last)
    g = torch.randn(8, 128, 1, 1)
    ref_w = conv.weight.detach().to(torch.bfloat16).float()[:, :, 1, 1]
    expected = torch.einsum(
        "bk,bc->kc", g.to(torch.bfloat16).float()[:, :, 0, 0], x.to(torch.bfloat16).float()[:, :, 0, 0]
    )
    assert ref_w.shape == expected.shape
    for _ in range(20):
        conv.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = conv(x)
        out.backward(g.to(out.dtype))
        grad = conv.weight.grad
        assert torch.isfinite(grad).all()
        outer = grad.clone()
        outer[:, :, 1, 1] = 0
        assert torch.count_nonzero(outer) == 0
        torch.testing.assert_close(grad[:, :, 1, 1], expected, rtol=0.02, atol=0.05)


def test_even_kernels_are_refused():
    with pytest.raises(ValueError, match="odd kernel"):
        StridedConv2d(3, 3, 2, 2)
