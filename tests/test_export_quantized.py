"""Int8Detector and the ceil-mode pool rewrite it needs: exact rewrite, int8 network close to float32, all anchors."""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import ssdkit
from ssdkit.export.quantized import Int8Detector, _extra_padding, explicit_ceil_pools

pytest.importorskip("torchao")


@settings(max_examples=60, deadline=None)
@given(
    size=st.integers(1, 40),
    kernel=st.integers(1, 4),
    stride=st.integers(1, 3),
    padding=st.integers(0, 2),
    dilation=st.integers(1, 2),
)
def test_zero_padding_and_floor_mode_equal_ceil_mode_on_non_negative_maps(size, kernel, stride, padding, dilation):
    if 2 * padding > kernel or dilation * (kernel - 1) + 1 > size + 2 * padding:
        return  # PyTorch rejects these pools
    torch.manual_seed(size)
    x = torch.rand(1, 2, size, size + 1)
    extra_h = _extra_padding(size, kernel, stride, padding, dilation)
    extra_w = _extra_padding(size + 1, kernel, stride, padding, dilation)
    ceil = F.max_pool2d(x, kernel, stride, padding, dilation, ceil_mode=True)
    floor = F.max_pool2d(F.pad(x, (0, extra_w, 0, extra_h)), kernel, stride, padding, dilation, ceil_mode=False)
    torch.testing.assert_close(floor, ceil, rtol=0, atol=0)


class _Pools(torch.nn.Module):
    def __init__(self, relu_first: bool = True):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.relu_first = relu_first

    def forward(self, x):
        y = self.conv(x)
        y = torch.relu(y) if self.relu_first else y
        y = F.max_pool2d(y, 2, 2, ceil_mode=True)  # 75 -> 38: needs a padded row and column
        return F.max_pool2d(torch.relu(y), 3, 1, 1, ceil_mode=True)  # 38 -> 38: ceil and floor agree


def test_explicit_ceil_pools_rewrites_an_exported_graph_exactly():
    module = _Pools().eval()
    x = torch.randn(2, 3, 75, 75)
    graph = torch.export.export(module, (x,)).module()
    assert explicit_ceil_pools(graph) == 2
    pools = [n for n in graph.graph.nodes if n.target == torch.ops.aten.max_pool2d.default]
    assert all(n.args[5] is False for n in pools)
    assert sum(n.target == torch.ops.aten.constant_pad_nd.default for n in graph.graph.nodes) == 1
    torch.testing.assert_close(graph(x), module(x), rtol=0, atol=0)
    assert graph(x).shape[-2:] == (38, 38)


def test_explicit_ceil_pools_refuses_a_pool_that_may_see_negative_values():
    graph = torch.export.export(_Pools(relu_first=False).eval(), (torch.randn(1, 3, 75, 75),)).module()
    with pytest.raises(ValueError, match="does not follow a ReLU"):
        explicit_ceil_pools(graph)


def _raw(detector: Int8Detector, x: torch.Tensor):
    import torch._inductor.config as inductor_config

    with torch.no_grad(), inductor_config.patch(freezing=True):
        return detector._forward(detector._layout(x))


def test_int8_tiny_network_is_close_to_float32_at_two_batch_sizes():
    torch.manual_seed(0)
    net = ssdkit.get_model("ssd_tiny_synthetic").eval()
    size = net.data_shape
    detector = Int8Detector(net, [torch.rand(4, 3, size, size) for _ in range(2)])
    for batch in (1, 3):
        x = torch.rand(batch, 3, size, size)
        with torch.no_grad():
            ref = net(x)
        out = _raw(detector, x)
        for got, want in zip(out[:2], ref[:2]):
            assert got.shape == want.shape
            # 8-bit activations and weights: errors of about 1 % of the outputs' spread, not float rounding
            error = (got.float() - want).abs().mean() / want.std()
            assert 1e-5 < error < 0.05
        torch.testing.assert_close(out[2], ref[2])  # the anchors are a constant
        ids, scores, boxes = detector.detect(x)
        ref_ids, ref_scores, ref_boxes = net.detect(x)
        assert ids.shape == ref_ids.shape and scores.shape == ref_scores.shape and boxes.shape == ref_boxes.shape
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules()) > 0  # the original is untouched


def test_int8_ssd300_keeps_every_anchor():
    # VGG16's ceil-mode pool (75 -> 38): without the rewrite Inductor's int8 pool gives 37 x 37 and 8096 anchors
    torch.manual_seed(0)
    net = ssdkit.get_model("ssd_300_vgg16_atrous_voc").eval()
    x = torch.rand(1, 3, 300, 300)
    cls_preds, box_preds, anchors = _raw(Int8Detector(net, [x]), x)
    assert cls_preds.shape == (1, 8732, 21) and box_preds.shape == (1, 8732, 4) and anchors.shape == (1, 8732, 4)


def test_int8_needs_calibration_images():
    with pytest.raises(ValueError, match="at least one batch"):
        Int8Detector(ssdkit.get_model("ssd_tiny_synthetic").eval(), [])


def test_reduced_range_where_int8_convolutions_have_no_vnni(monkeypatch):
    from ssdkit.export import quantized

    monkeypatch.setattr(torch.cpu, "_is_vnni_supported", lambda: True)
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    assert not quantized.int8_needs_reduced_range()
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_VNNI")
    assert not quantized.int8_needs_reduced_range()
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "avx2")  # oneDNN held to AVX2: vpmaddubsw, 16-bit pair sums
    assert quantized.int8_needs_reduced_range()
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA")
    monkeypatch.setattr(torch.cpu, "_is_vnni_supported", lambda: False)
    assert quantized.int8_needs_reduced_range()


@pytest.mark.parametrize("reduce_range, quant_max", [(True, 127), (False, 255)])
def test_int8_activation_range(reduce_range, quant_max):
    torch.manual_seed(0)
    net = ssdkit.get_model("ssd_tiny_synthetic").eval()
    detector = Int8Detector(net, [torch.rand(2, 3, 128, 128)], reduce_range=reduce_range)
    activation_max = {
        node.args[4]
        for node in detector.quantized.graph.nodes
        if node.target == torch.ops.quantized_decomposed.quantize_per_tensor.default
    }
    assert activation_max == {quant_max}
