"""Initialisation schemes (ssdkit.init) and the default initialisation of the zoo models.

Reference numbers are GluonCV's, measured with mxnet 1.9.1 / gluoncv 0.10.5 (spec §1.1-§1.3): max |w| of the
first SSD-300 class head 0.027307; std of the first VGG extra 1x1 conv 0.0884.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from ssdkit.init import INIT_SCHEMES, init_added_layers, init_weights
from ssdkit.models import get_model
from ssdkit.models.feature_expander import FixedGammaBatchNorm2d


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _fans(shape):
    receptive = math.prod(shape[2:]) if len(shape) > 2 else 1
    return shape[1] * receptive, shape[0] * receptive


def test_xavier_bound_matches_mxnet_formula():
    conv = nn.Conv2d(512, 84, 3)
    init_weights(conv, "xavier")
    fan_in, fan_out = _fans(conv.weight.shape)
    bound = math.sqrt(2.0 / ((fan_in + fan_out) / 2.0))
    w = conv.weight.detach()
    assert w.abs().max() <= bound + 1e-7
    assert w.abs().max() > 0.995 * bound  # 387k draws reach the edge
    assert w.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.02)  # uniform std
    assert bool((conv.bias == 0).all())


def test_xavier_gaussian_out_and_kaiming_std():
    for scheme in ("xavier_gaussian_out", "kaiming_fan_out"):
        conv = nn.Conv2d(128, 256, 3)
        init_weights(conv, scheme)
        _, fan_out = _fans(conv.weight.shape)
        w = conv.weight.detach()
        assert w.std().item() == pytest.approx(math.sqrt(2.0 / fan_out), rel=0.02)
        assert abs(w.mean().item()) < 0.05 * w.std().item()
        assert bool((conv.bias == 0).all())


def test_uniform_range():
    conv = nn.Conv2d(64, 64, 3)
    init_weights(conv, "uniform")
    w = conv.weight.detach()
    assert w.abs().max() <= 0.07
    assert w.abs().max() > 0.069
    assert w.std().item() == pytest.approx(0.07 / math.sqrt(3), rel=0.03)


def test_batchnorm_init_and_fixed_gamma_quirk():
    seq = nn.Sequential(nn.Conv2d(3, 8, 1), nn.BatchNorm2d(8), FixedGammaBatchNorm2d(300))
    with torch.no_grad():
        for bn in (seq[1], seq[2]):
            bn.bias.fill_(3.0)
            bn.running_mean.fill_(2.0)
            bn.running_var.fill_(5.0)
        seq[1].weight.fill_(7.0)
    init_weights(seq, "uniform")
    assert bool((seq[1].weight == 1).all()) and bool((seq[1].bias == 0).all())
    fixed = seq[2]
    assert bool((fixed.weight == 1).all())
    assert fixed.bias.abs().max() <= 0.07 and fixed.bias.abs().max() > 0.05  # GluonCV: beta ~ U(-0.07, 0.07)
    for bn in (seq[1], seq[2]):  # running statistics reset (see the init module docstring)
        assert bool((bn.running_mean == 0).all()) and bool((bn.running_var == 1).all())
    init_weights(seq, "xavier")
    assert bool((fixed.bias == 0).all())


def test_unknown_scheme():
    with pytest.raises(ValueError, match="unknown init scheme"):
        init_weights(nn.Conv2d(1, 1, 1), "he")
    assert set(INIT_SCHEMES) == {"xavier", "xavier_gaussian_out", "uniform", "kaiming_fan_out"}


def test_vgg300_default_init_matches_gluoncv():
    net = get_model("ssd_300_vgg16_atrous_voc")
    head = net.class_predictors[0].predictor.weight
    assert tuple(head.shape) == (84, 512, 3, 3)
    assert head.abs().max().item() == pytest.approx(0.027307, abs=2e-4)  # GluonCV run value
    extra0 = net.features.extras[0][0].weight
    assert extra0.std().item() == pytest.approx(0.0884, rel=0.02)  # GluonCV run value
    fc6 = net.features.stages[5][0].weight
    assert fc6.std().item() == pytest.approx(math.sqrt(2.0 / (1024 * 9)), rel=0.02)
    conv1 = net.features.stages[0][0].weight
    assert conv1.std().item() == pytest.approx(math.sqrt(2.0 / (64 * 9)), rel=0.1)
    assert bool((net.features.norm4.scale == 20).all())
    assert all(bool((m.bias == 0).all()) for m in net.modules() if isinstance(m, nn.Conv2d))


def test_mobilenet_extras_uniform_and_init_override():
    net = get_model("ssd_512_mobilenet1.0_voc")
    extra_conv = net.features.extras[0][0].weight
    assert extra_conv.abs().max() <= 0.07 and extra_conv.abs().max() > 0.069
    bn = net.features.extras[0][1]
    assert isinstance(bn, FixedGammaBatchNorm2d) and bn.eps == 1e-3 and not bn.weight.requires_grad
    assert bn.bias.abs().max() <= 0.07 and bn.bias.abs().max() > 0.05
    body_conv = net.features.body.features[0].weight  # torchvision-style Kaiming fan_out
    assert body_conv.std().item() == pytest.approx(math.sqrt(2.0 / (32 * 9)), rel=0.15)

    net2 = get_model("ssd_512_mobilenet1.0_voc", init="xavier_gaussian_out")
    w = net2.features.extras[0][0].weight
    assert w.std().item() == pytest.approx(math.sqrt(2.0 / 512), rel=0.02)
    assert bool((net2.features.extras[0][1].bias == 0).all())
    head = net2.box_predictors[1].predictor.weight  # (24, 1024, 3, 3)
    assert head.std().item() == pytest.approx(math.sqrt(2.0 / (24 * 9)), rel=0.02)


def test_init_added_layers_touches_only_extras_and_heads():
    net = get_model("ssd_tiny_synthetic")
    before = {k: v.clone() for k, v in net.state_dict().items()}
    init_added_layers(net, "uniform")
    after = net.state_dict()
    added = {id(p) for m in net.added_layers() for p in m.parameters()}
    names_added = {n for n, p in net.named_parameters() if id(p) in added}
    assert any(n.startswith("features.extras.") for n in names_added)
    assert any(n.startswith("class_predictors.") for n in names_added)
    assert any(n.startswith("box_predictors.") for n in names_added)
    for name, p in net.named_parameters():
        if name in names_added:
            if name.endswith(".weight") and p.dim() == 4:
                assert p.abs().max() <= 0.07 and not torch.equal(p, before[name]), name
        else:
            assert torch.equal(after[name], before[name]), name
    with pytest.raises(ValueError):
        init_added_layers(nn.Conv2d(1, 1, 1), "xavier")
