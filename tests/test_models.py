"""Model zoo: construction, forward / backward, anchors, reset_class and weight loading.

Parameter counts are GluonCV's (mxnet 1.9.1 / gluoncv 0.10.5, ``pretrained_base=False``, every parameter
except anchors, ``init_scale`` and BN running statistics; fixed BN gammas included; counted by
``tools/make_model_fixtures.py`` into ``tests/data/model_gluon_names.json``), so they check the architecture
against the original, not against this implementation.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from ssdkit.anchors import ssd_anchors
from ssdkit.models import COCO_CLASSES, DEFAULT_SYNTHETIC_CLASSES, VOC_CLASSES, WeightsError, get_model, list_models
from ssdkit.models.feature_expander import FixedGammaBatchNorm2d
from ssdkit.models.tiny import TinyExtractor
from ssdkit.models.vgg_atrous import L2Norm

ARCHS = ("ssd_300_vgg16_atrous", "ssd_512_vgg16_atrous", "ssd_512_resnet50_v1", "ssd_512_mobilenet1.0")
ZOO = tuple(f"{a}_{d}" for a in ARCHS for d in ("voc", "coco", "custom"))
CUSTOM3 = ("a", "b", "c")

# written by tools/make_model_fixtures.py from GluonCV itself
GLUONCV_PARAMS = json.loads((Path(__file__).parent / "data" / "model_gluon_names.json").read_text())["param_counts"]
# GluonCV feature-map sides at the native input (spec §1.2-§1.4)
NATIVE_MAPS = {
    "ssd_300_vgg16_atrous": (300, (38, 19, 10, 5, 3, 1), 8732),
    "ssd_512_vgg16_atrous": (512, (64, 32, 16, 8, 4, 2, 1), 24564),
    "ssd_512_resnet50_v1": (512, (32, 16, 8, 4, 2, 1), 6132),
    "ssd_512_mobilenet1.0": (512, (32, 16, 8, 4, 2, 1), 6132),
}
# smaller inputs still giving every layer (VGG: ceil-mode pools; ResNet/MobileNet: stride-2 pad-1 extras)
SMALL_MAPS = {
    "ssd_300_vgg16_atrous": (264, (33, 17, 9, 5, 3, 1)),
    "ssd_512_vgg16_atrous": (264, (33, 17, 9, 5, 3, 2, 1)),
    "ssd_512_resnet50_v1": (96, (6, 3, 2, 1, 1, 1)),
    "ssd_512_mobilenet1.0": (96, (6, 3, 2, 1, 1, 1)),
}

_CACHE: dict[str, nn.Module] = {}


def build(name: str) -> nn.Module:
    """Zoo models are costly to build; share one instance per name (tests must not mutate it)."""
    if name not in _CACHE:
        torch.manual_seed(0)
        _CACHE[name] = get_model(name, classes=CUSTOM3 if name.endswith("_custom") else None)
    return _CACHE[name]


def arch_of(name: str) -> str:
    return name.rsplit("_", 1)[0]


def expected_anchor_count(name: str, sides) -> int:
    per_pos = build(name).anchor_spec.anchors_per_position()
    return sum(s * s * k for s, k in zip(sides, per_pos))


def forward_with_maps(net, x):
    maps = []
    hook = net.features.register_forward_hook(lambda m, i, o: maps.extend(tuple(f.shape[-2:]) for f in o))
    try:
        out = net(x)
    finally:
        hook.remove()
    return out, maps


# ----------------------------------------------------------------------------------------------- zoo
def test_list_models_has_zoo():
    names = set(list_models())
    assert set(ZOO) <= names
    assert {"ssd_tiny_synthetic", "ssd_tiny_custom", "ssd_tiny48_synthetic", "ssd_tiny48_custom"} <= names


@pytest.mark.parametrize("name", ZOO)
def test_parameter_count_matches_gluoncv(name):
    net = build(name)
    assert sum(p.numel() for p in net.parameters()) == GLUONCV_PARAMS[name]


@pytest.mark.parametrize("arch", ARCHS)
def test_forward_native_size(arch):
    name = f"{arch}_voc"
    net = build(name).eval()
    size, sides, count = NATIVE_MAPS[arch]
    with torch.no_grad():
        (cls_preds, box_preds, anchors), maps = forward_with_maps(net, torch.randn(1, 3, size, size))
    assert maps == [(s, s) for s in sides]
    assert cls_preds.shape == (1, count, 21)
    assert box_preds.shape == (1, count, 4)
    assert anchors.shape == (1, count, 4)
    assert expected_anchor_count(name, sides) == count
    assert torch.isfinite(cls_preds).all() and torch.isfinite(box_preds).all()
    assert net.data_shape == size and net.name == name and net.num_classes == 20


@pytest.mark.parametrize("name", [n for n in ZOO if not n.endswith("_voc")])
def test_forward_other_variants_small_input(name):
    net = build(name).eval()
    size, sides = SMALL_MAPS[arch_of(name)]
    with torch.no_grad():
        (cls_preds, box_preds, anchors), maps = forward_with_maps(net, torch.randn(1, 3, size, size))
    count = expected_anchor_count(name, sides)
    assert maps == [(s, s) for s in sides]
    assert cls_preds.shape == (1, count, net.num_classes + 1)
    assert box_preds.shape == (1, count, 4) and anchors.shape == (1, count, 4)
    # anchors follow the feature sizes with the preset's (training) steps and sizes
    torch.testing.assert_close(anchors, ssd_anchors(net.anchor_spec, [(s, s) for s in sides]))


@pytest.mark.parametrize("arch", ARCHS)
def test_backward_reaches_first_conv(arch):
    net = build(f"{arch}_voc")
    net.train()
    size, _ = SMALL_MAPS[arch]
    batch = 1 if "vgg" in arch else 2  # BatchNorm in train mode needs > 1 value per channel
    net.zero_grad(set_to_none=True)
    cls_preds, box_preds, _ = net(torch.randn(batch, 3, size, size))
    (cls_preds.logsumexp(-1).mean() + box_preds.square().mean()).backward()
    first = next(m for m in net.features.modules() if isinstance(m, nn.Conv2d))
    assert first.weight.grad is not None and first.weight.grad.abs().sum() > 0
    missing = [n for n, p in net.named_parameters() if p.requires_grad and p.grad is None]
    assert missing == []
    net.zero_grad(set_to_none=True)
    net.eval()


@pytest.mark.parametrize("name", ["ssd_tiny_synthetic", "ssd_tiny48_synthetic"])
def test_tiny_forward_backward_train_eval_structure(name):
    torch.manual_seed(0)
    net = get_model(name)
    assert net.classes == DEFAULT_SYNTHETIC_CLASSES and net.data_shape == 128
    x = torch.randn(4, 3, 128, 128)
    net.train()
    train_out = net(x)
    train_out[0].logsumexp(-1).mean().add(train_out[1].square().mean()).backward()
    assert net.features.stem[0].weight.grad.abs().sum() > 0
    net.eval()
    with torch.no_grad():
        eval_out = net(x)
    assert isinstance(train_out, tuple) and isinstance(eval_out, tuple) and len(train_out) == len(eval_out) == 3
    for a, b in zip(train_out, eval_out):
        assert a.shape == b.shape and a.dtype == b.dtype
    assert train_out[0].shape == (4, 2730, 7)
    torch.testing.assert_close(train_out[2], eval_out[2])


def test_tiny48_differs_from_tiny_in_the_stem_width_only():
    """The default synthetic model narrows the stride-4 stem to 48 channels; every other layer, the anchors and the
    heads past the first are those of ``ssd_tiny_synthetic``."""
    wide, narrow = get_model("ssd_tiny_synthetic"), get_model("ssd_tiny48_synthetic")
    assert narrow.features.out_channels == (48, 128, 192, 128, 128, 128)
    assert wide.features.out_channels == (64, 128, 192, 128, 128, 128)
    wide_shapes = {k: v.shape for k, v in wide.state_dict().items()}
    narrow_shapes = {k: v.shape for k, v in narrow.state_dict().items()}
    assert wide_shapes.keys() == narrow_shapes.keys()
    differ = sorted(k for k in wide_shapes if wide_shapes[k] != narrow_shapes[k])
    first_layers = ("features.stem.", "features.stage3.0.", "class_predictors.0.", "box_predictors.0.")
    assert differ and all(k.startswith(first_layers) for k in differ), differ
    assert narrow.features.stem[3].weight.shape == (48, 32, 3, 3) and narrow.features.stage3[0].weight.shape[1] == 48
    assert sum(p.numel() for p in narrow.parameters()) < sum(p.numel() for p in wide.parameters())
    with pytest.raises(ValueError, match="stem_channels"):
        TinyExtractor(stem_channels=0)


def test_vgg300_heads_and_first_anchors():
    net = build("ssd_300_vgg16_atrous_voc")
    cls_shapes = [tuple(h.predictor.weight.shape) for h in net.class_predictors]
    box_shapes = [tuple(h.predictor.weight.shape) for h in net.box_predictors]
    assert cls_shapes == [
        (84, 512, 3, 3),
        (126, 1024, 3, 3),
        (126, 512, 3, 3),
        (126, 256, 3, 3),
        (84, 256, 3, 3),
        (84, 256, 3, 3),
    ]
    assert box_shapes == [
        (16, 512, 3, 3),
        (24, 1024, 3, 3),
        (24, 512, 3, 3),
        (24, 256, 3, 3),
        (16, 256, 3, 3),
        (16, 256, 3, 3),
    ]
    anchors = net.anchors_for([(38, 38), (19, 19), (10, 10), (5, 5), (3, 3), (1, 1)])
    expected = torch.tensor(
        [[4, 4, 30, 30], [4, 4, 42.4264, 42.4264], [4, 4, 42.4264, 21.2132], [4, 4, 21.2132, 42.4264], [12, 4, 30, 30]]
    )
    torch.testing.assert_close(anchors[0, :5], expected, atol=1e-3, rtol=0)
    assert anchors[0, -1].tolist() == pytest.approx([150, 150, 264 / math.sqrt(2), 264 * math.sqrt(2)], abs=1e-3)


def test_class_lists():
    assert len(VOC_CLASSES) == 20 and VOC_CLASSES[0] == "aeroplane" and VOC_CLASSES[14] == "person"
    assert len(COCO_CLASSES) == 80 and COCO_CLASSES[0] == "person" and COCO_CLASSES[-1] == "toothbrush"
    assert build("ssd_512_resnet50_v1_coco").classes == COCO_CLASSES


def test_anchor_cache_and_other_sizes():
    torch.manual_seed(0)
    net = get_model("ssd_tiny_synthetic").eval()
    with torch.no_grad():
        a1 = net(torch.randn(1, 3, 128, 128))[2]
        a2 = net(torch.randn(2, 3, 128, 128))[2]
        a3 = net(torch.randn(1, 3, 96, 160))[2]
    assert a1 is a2  # cached
    net.train()
    running = net.features.stem[1].running_mean.clone()
    assert net.anchors_for_input() is a1 and net.training
    assert torch.equal(net.features.stem[1].running_mean, running)  # no BN statistics touched
    sides = [(math.ceil(96 / s), math.ceil(160 / s)) for s in (4, 8, 16, 32, 64, 128)]
    assert a3.shape == (1, sum(h * w * 2 for h, w in sides), 4)
    grid = net.anchor_grid_for_input(96, 160)
    assert [(h, w) for h, w, _ in grid.layers] == sides and grid.num_anchors == a3.shape[1]


def test_resnet_is_gluoncv_v1_layout():
    body = build("ssd_512_resnet50_v1_voc").features.body
    assert isinstance(body.layer1[0], torchvision.models.resnet.Bottleneck)
    for layer in (body.layer2, body.layer3, body.layer4):
        assert layer[0].conv1.stride == (2, 2) and layer[0].conv2.stride == (1, 1)
        assert layer[0].downsample[0].stride == (2, 2)
        assert layer[0].conv1.bias is not None and layer[0].conv3.bias is not None  # Gluon BottleneckV1 biases
    assert body.layer1[0].conv1.stride == (1, 1)


def test_fixed_gamma_batchnorm_ignores_gamma():
    torch.manual_seed(0)
    bn = FixedGammaBatchNorm2d(5)
    ref = nn.BatchNorm2d(5, eps=1e-3)
    with torch.no_grad():
        bn.bias.uniform_(-1, 1)
        ref.bias.copy_(bn.bias)
        bn.weight.fill_(3.0)  # MXNet fix_gamma: the stored gamma does not matter
    x = torch.randn(4, 5, 3, 3)
    torch.testing.assert_close(bn(x), ref(x))
    torch.testing.assert_close(bn.running_var, ref.running_var)
    bn.eval(), ref.eval()
    torch.testing.assert_close(bn(x), ref(x))
    state = bn.state_dict()
    state["weight"] = torch.full((5,), 0.03)
    bn.load_state_dict(state)
    assert bool((bn.weight == 1).all())


def test_l2norm_scale_is_flat_and_loads_gluoncv_shape():
    torch.manual_seed(0)
    norm = L2Norm(6, initial=20.0)
    assert tuple(norm.scale.shape) == (6,)
    x = torch.randn(2, 6, 3, 4)
    want = x / x.pow(2).sum(1, keepdim=True).add(1e-5).sqrt() * 20.0
    torch.testing.assert_close(norm(x), want)
    scale = torch.arange(1.0, 7.0)
    norm.load_state_dict({"scale": scale.reshape(1, 6, 1, 1)})  # GluonCV's layout, older checkpoints
    torch.testing.assert_close(norm.scale.detach(), scale)
    with pytest.raises(RuntimeError, match="size mismatch"):
        norm.load_state_dict({"scale": torch.ones(1, 5, 1, 1)})
    # the gradient has the parameter's shape, also when compiled under autocast on channels-last input
    compiled = torch.compile(norm)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = compiled(x.contiguous(memory_format=torch.channels_last).requires_grad_())
    out.float().sum().backward()
    assert tuple(norm.scale.grad.shape) == (6,)


# ----------------------------------------------------------------------------------------------- API
def test_get_model_argument_errors():
    with pytest.raises(ValueError, match="classes"):
        get_model("ssd_300_vgg16_atrous_custom")
    with pytest.raises(ValueError, match="custom"):
        get_model("ssd_512_mobilenet1.0_voc", classes=["cat"])
    with pytest.raises(ValueError, match="unknown model"):
        get_model("ssd_999")
    with pytest.raises(ValueError, match="download"):
        get_model("ssd_tiny_synthetic", pretrained=True)
    with pytest.raises(ValueError, match="init"):
        get_model("ssd_tiny_synthetic", init="zeros")
    with pytest.raises(ValueError, match="needs pretrained"):
        get_model("ssd_512_mobilenet1.0_custom", classes=["cat"], transfer="voc")


def test_detect_and_settings():
    torch.manual_seed(0)
    net = get_model("ssd_tiny_custom", classes=["a", "b"], decoder="argmax", post_nms=50)
    assert net.postprocessor.decoder == "argmax" and net.postprocessor.post_nms == 50
    net.set_nms(nms_thresh=0.3, nms_topk=200, post_nms=20)
    net.set_decoder("per_class")
    assert (net.postprocessor.nms_thresh, net.postprocessor.nms_topk, net.postprocessor.post_nms) == (0.3, 200, 20)
    assert net.postprocessor.decoder == "per_class"
    with pytest.raises(ValueError):
        net.set_decoder("softmax")
    net.eval()
    ids, scores, boxes = net.detect(torch.randn(2, 3, 128, 128))
    assert ids.shape == (2, 20, 1) and scores.shape == (2, 20, 1) and boxes.shape == (2, 20, 4)
    assert float(ids.max()) < 2


def test_reset_class_reuses_rows():
    torch.manual_seed(0)
    net = get_model("ssd_tiny_synthetic")  # circle, square, triangle, star, cross, ring
    old_cls = [h.predictor.weight.detach().clone() for h in net.class_predictors]
    old_bias = [h.predictor.bias.detach().clone() for h in net.class_predictors]
    old_box = [h.predictor.weight.detach().clone() for h in net.box_predictors]
    net.reset_class(["square", "hexagon", "circle"], reuse_weights={"square": "square", 2: 0})
    assert net.classes == ("square", "hexagon", "circle") and net.num_classes == 3
    assert net.postprocessor.num_classes == 3
    for head, w_old, b_old in zip(net.class_predictors, old_cls, old_bias):
        w, b = head.predictor.weight.detach(), head.predictor.bias.detach()
        assert w.shape[0] == 2 * 4  # 2 anchors per position x (3 + 1)
        torch.testing.assert_close(w[0::4], w_old[0::7])  # background
        torch.testing.assert_close(w[1::4], w_old[2::7])  # square (old index 1)
        torch.testing.assert_close(w[3::4], w_old[1::7])  # circle (old index 0)
        torch.testing.assert_close(b[1::4], b_old[2::7])
        assert not any(torch.equal(w[2::4], w_old[k::7]) for k in range(7))  # hexagon is new
    for head, w_old in zip(net.box_predictors, old_box):
        assert torch.equal(head.predictor.weight, w_old)
    assert net(torch.randn(2, 3, 128, 128))[0].shape == (2, 2730, 4)

    with pytest.warns(UserWarning, match="zzz"):
        net.reset_class(["circle", "zzz"], reuse_weights=["circle", "zzz"])
    with pytest.raises(ValueError, match="not found"):
        net.reset_class(["a"], reuse_weights={"a": "nope"})
    with pytest.raises(ValueError, match="out of bounds"):
        net.reset_class(["a"], reuse_weights={0: 5})
    assert net.classes == ("circle", "zzz")  # failed calls changed nothing


# ----------------------------------------------------------------------------------------------- weights
def test_pretrained_base_vgg_from_torchvision(tmp_path):
    torch.manual_seed(1)
    vgg_features = torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["D"])
    state = {f"features.{k}": v for k, v in vgg_features.state_dict().items()}
    state["classifier.6.bias"] = torch.zeros(1000)  # torchvision's classifier keys are ignored
    path = tmp_path / "vgg16.pth"
    torch.save(state, path)
    torch.manual_seed(0)
    fresh = get_model("ssd_300_vgg16_atrous_voc")
    fc6_before = fresh.features.stages[5][0].weight.clone()
    torch.manual_seed(0)
    net = get_model("ssd_300_vgg16_atrous_voc", pretrained_base=path)
    stages = net.features.stages
    assert torch.equal(stages[0][0].weight, state["features.0.weight"])
    assert torch.equal(stages[2][4].bias, state["features.14.bias"])
    assert torch.equal(stages[4][4].weight, state["features.28.weight"])
    assert torch.equal(stages[5][0].weight, fc6_before)  # no classifier.0/3 in this file: fc6 keeps its init

    bad = dict(state)
    bad["features.28.weight"] = torch.zeros(512, 256, 3, 3)
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(WeightsError, match=r"bad\.pth.*stages\.4\.4\.weight.*\(512, 256, 3, 3\)"):
        get_model("ssd_300_vgg16_atrous_voc", pretrained_base=tmp_path / "bad.pth")
    with pytest.raises(WeightsError, match=r"vgg16\.pth.*(missing|unexpected)"):
        get_model("ssd_512_mobilenet1.0_voc", pretrained_base=path)


def test_pretrained_base_resnet_from_torchvision(tmp_path):
    torch.manual_seed(1)
    state = torchvision.models.resnet50(weights=None).state_dict()
    path = tmp_path / "resnet50.pth"
    torch.save(state, path)
    net = get_model("ssd_512_resnet50_v1_voc", pretrained_base=path)
    body = net.features.body
    assert torch.equal(body.layer3[5].conv2.weight, state["layer3.5.conv2.weight"])
    assert torch.equal(body.layer2[0].bn1.running_var, state["layer2.0.bn1.running_var"])
    assert bool((body.layer1[0].conv1.bias == 0).all())
    assert body.layer2[0].conv1.stride == (2, 2)  # still the GluonCV v1 layout
    with pytest.raises(WeightsError, match="resnet50.pth"):
        get_model("ssd_300_vgg16_atrous_voc", pretrained_base=path)


def test_pretrained_base_mobilenet_own_and_gluon_names(tmp_path):
    torch.manual_seed(1)
    source = get_model("ssd_512_mobilenet1.0_voc").features.body
    state = source.state_dict()
    torch.save(state, tmp_path / "mnet.pth")
    net = get_model("ssd_512_mobilenet1.0_voc", pretrained_base=tmp_path / "mnet.pth")
    assert torch.equal(net.features.body.features[78].weight, state["features.78.weight"])
    # Gluon's mobilenet1.0 names (gamma/beta) exported as .npz, plus its classifier
    gluon = {}
    for k, v in state.items():
        if k.endswith("num_batches_tracked"):
            continue
        layer = source.features[int(k.split(".")[1])]
        if isinstance(layer, nn.BatchNorm2d):
            k = k.replace(".weight", ".gamma").replace(".bias", ".beta")
        gluon[k] = v.numpy()
    gluon["output.weight"] = np.zeros((1000, 1024), np.float32)
    np.savez(tmp_path / "mnet_gluon.npz", **gluon)
    net2 = get_model("ssd_512_mobilenet1.0_coco", pretrained_base=tmp_path / "mnet_gluon.npz")
    assert torch.equal(net2.features.body.features[1].weight, state["features.1.weight"])


def test_pretrained_checkpoint_roundtrip(tmp_path):
    torch.manual_seed(0)
    net = get_model("ssd_tiny_custom", classes=["x", "y"]).eval()
    torch.save({"model": net.state_dict(), "classes": list(net.classes), "epoch": 3}, tmp_path / "ckpt.pt")
    torch.save(net.state_dict(), tmp_path / "plain.pt")
    torch.save({"model": {"module." + k: v for k, v in net.state_dict().items()}}, tmp_path / "ddp.pt")
    x = torch.randn(1, 3, 128, 128)
    loaded = get_model("ssd_tiny_custom", pretrained=tmp_path / "ckpt.pt").eval()  # classes from the checkpoint
    assert loaded.classes == ("x", "y")
    loaded2 = get_model("ssd_tiny_custom", classes=["x", "y"], pretrained=tmp_path / "plain.pt").eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(x)[0], net(x)[0])
        torch.testing.assert_close(loaded2(x)[1], net(x)[1])
        ddp = get_model("ssd_tiny_custom", classes=["x", "y"], pretrained=tmp_path / "ddp.pt").eval()
        torch.testing.assert_close(ddp(x)[0], net(x)[0])
    with pytest.raises(WeightsError, match=r"plain\.pt.*class_predictors\.0\.predictor\.weight"):
        get_model("ssd_tiny_custom", classes=["x", "y", "z"], pretrained=tmp_path / "plain.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="junk.pt"):
        get_model("ssd_tiny_synthetic", pretrained=tmp_path / "junk.pt")
    with pytest.raises(WeightsError, match="does not exist"):
        get_model("ssd_tiny_synthetic", pretrained=tmp_path / "nothing.pt")
    with pytest.raises(WeightsError, match="no ImageNet backbone"):
        get_model("ssd_tiny_synthetic", pretrained_base=tmp_path / "plain.pt")


def test_custom_transfer_reuses_shared_classes(tmp_path):
    torch.manual_seed(0)
    voc = build("ssd_512_mobilenet1.0_voc")
    torch.save({"model": voc.state_dict()}, tmp_path / "voc.pt")
    net = get_model(
        "ssd_512_mobilenet1.0_custom", classes=["person", "unicorn"], transfer="voc", pretrained=tmp_path / "voc.pt"
    )
    assert net.classes == ("person", "unicorn") and net.name == "ssd_512_mobilenet1.0_custom"
    w_new = net.class_predictors[0].predictor.weight
    w_old = voc.class_predictors[0].predictor.weight
    torch.testing.assert_close(w_new[1::3], w_old[15::21])  # person: VOC index 14
    assert torch.equal(net.features.extras[0][0].weight, voc.features.extras[0][0].weight)
