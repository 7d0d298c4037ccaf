"""Weight files: GluonCV ``.params`` models (whole-network and training-step parity), Gluon name mapping for the
whole zoo and its ImageNet bases, torchvision VGG16's fc6/fc7, bad files and ``ssdkit convert``.

Fixtures come from ``tools/make_model_fixtures.py`` (GluonCV virtualenv). The model files themselves are not
stored: each is rebuilt from its seed by the tool's pure-numpy half and checked against the sha256 of the file
Gluon saved, so the file under test is byte for byte Gluon's, constants (anchors, ``init_scale``) included.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ssdkit.models import PRESETS, WeightsError, get_model
from ssdkit.models.gluon_names import map_gluon_ssd_names
from ssdkit.models.weights import check_gluon_constants, reduce_vgg16_fc

DATA = Path(__file__).parent / "data"
TOOL = Path(__file__).resolve().parents[1] / "tools" / "make_model_fixtures.py"
REGENERATE = "regenerate with .venv-gluoncv/bin/python tools/make_model_fixtures.py"


def _load_tool():
    spec = importlib.util.spec_from_file_location("_model_fixture_generators", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gen = _load_tool()


def _fixture(name: str) -> Path:
    path = DATA / name
    if not path.exists():
        pytest.fail(f"missing fixture {path}; {REGENERATE}")
    return path


NAMES = json.loads(_fixture("model_gluon_names.json").read_text())
with np.load(_fixture("model_outputs.npz")) as _z:
    OUT = {k: _z[k] for k in _z.files}


def classes_of(name: str):
    return list(gen.CUSTOM_CLASSES) if name.endswith("_custom") else None


def gluon_constants(name: str, listing) -> dict[str, np.ndarray]:
    return gen.gluon_constants(listing, PRESETS[name].anchor_spec)


_FILES: dict[str, Path] = {}


@pytest.fixture(scope="module")
def params_file(tmp_path_factory):
    """``params_file(name)``: the fixture model's ``.params`` file, rebuilt and checked against Gluon's sha256."""
    folder = tmp_path_factory.mktemp("params")

    def make(name: str) -> Path:
        if name not in _FILES:
            listing = NAMES["names"][name]
            factors = json.loads(str(OUT[f"{name}/factors"]))
            arrays = gen.random_gluon_params(
                listing, gen.FIXTURE_MODELS[name][0], gluon_constants(name, listing), factors
            )
            path = folder / f"{name}.params"
            gen.write_params(str(path), arrays)
            assert gen.sha256_of(str(path)) == str(OUT[f"{name}/sha256"]), f"{name}: not the file Gluon saved"
            _FILES[name] = path
        return _FILES[name]

    yield make
    _FILES.clear()


# ----------------------------------------------------------------------------------------------- whole network
@pytest.mark.parametrize("name", list(gen.FIXTURE_MODELS))
def test_outputs_equal_gluoncv(name, params_file):
    seed, side = gen.FIXTURE_MODELS[name]
    torch.manual_seed(0)
    net = get_model(name, pretrained=params_file(name), classes=classes_of(name)).eval()
    x = torch.from_numpy(gen.fixed_input(seed, side))
    with torch.no_grad():
        cls, box, anchors = net(x)
        ids, scores, bboxes = net.postprocessor(cls, box, anchors)
    rows = OUT[f"{name}/rows"]
    for got, key in ((cls, "cls"), (box, "box")):
        want, scale = OUT[f"{name}/{key}_rows"], float(OUT[f"{name}/{key}_scale"])
        assert abs(float(got.abs().max()) - scale) <= 1e-4 * scale
        diff = float(np.abs(got[:, rows].numpy() - want).max())
        assert diff <= 1e-4 * scale, f"{name} {key}_preds: max |diff| {diff:.3g} vs scale {scale:.3g}"
    np.testing.assert_allclose(anchors[0].numpy(), OUT[f"{name}/anchors"], rtol=1e-6, atol=1e-4)
    _assert_same_detections(name, ids[0].numpy(), scores[0].numpy(), bboxes[0].numpy())


def _assert_same_detections(name, ids, scores, bboxes, score_tol=2e-5, box_tol=2e-3):
    """Equal detections; entries whose scores are within ``score_tol`` may come in either order, and the
    last slots may differ where the 100-detection cut falls inside such a near-tie."""
    want_ids, want_scores, want_boxes = OUT[f"{name}/ids"], OUT[f"{name}/scores"], OUT[f"{name}/bboxes"]
    np.testing.assert_allclose(scores[:, 0], want_scores[:, 0], atol=score_tol)  # sorted: per-slot scores agree
    valid = want_scores[:, 0] >= 0
    assert (scores[:, 0] >= 0).sum() == valid.sum()
    cut = want_scores[valid, 0].min() + score_tol
    used = np.zeros(len(ids), bool)
    for i in np.flatnonzero(valid & (want_scores[:, 0] > cut)):
        close = (
            ~used
            & (ids[:, 0] == want_ids[i, 0])
            & (np.abs(scores[:, 0] - want_scores[i, 0]) <= score_tol)
            & (np.abs(bboxes - want_boxes[i]).max(axis=1) <= box_tol)
        )
        assert close.any(), (
            f"{name}: GluonCV detection {i} (class {want_ids[i, 0]:.0f}, score "
            f"{want_scores[i, 0]:.6f}, box {want_boxes[i]}) has no match"
        )
        used[np.flatnonzero(close)[0]] = True


def test_three_sgd_steps_equal_gluoncv(params_file):
    """GluonCV's train_ssd.py recipe: targets without sampling, SSDMultiBoxLoss with hard negatives, SGD."""
    from ssdkit.engine.builders import build_optimizer
    from ssdkit.engine.config import TrainConfig
    from ssdkit.loss import SSDMultiBoxLoss
    from ssdkit.targets import SSDTargetGenerator

    name = gen.TRAIN_MODEL
    net = get_model(name, pretrained=params_file(name)).train()
    x = torch.from_numpy(
        gen.fixed_input(gen.FIXTURE_MODELS[name][0] + 100, gen.TRAIN_SIDE, batch=gen.TRAIN_GT_BOXES.shape[0])
    )
    target = SSDTargetGenerator(iou_thresh=0.5, stds=(0.1, 0.1, 0.2, 0.2), negative_mining_ratio=-1)
    cls_t, box_t, _ = target(
        net.anchors_for_input(gen.TRAIN_SIDE),
        None,
        torch.from_numpy(gen.TRAIN_GT_BOXES),
        torch.from_numpy(gen.TRAIN_GT_IDS),
    )
    np.testing.assert_array_equal(cls_t.numpy(), OUT["train_cls_targets"])
    loss_fn = SSDMultiBoxLoss()
    opt = build_optimizer(
        net, TrainConfig(optimizer="sgd", lr=gen.TRAIN_LR, momentum=gen.TRAIN_MOMENTUM, wd=gen.TRAIN_WD)
    )
    losses = []
    for _ in range(gen.TRAIN_STEPS):
        cls, box, _ = net(x)
        sum_loss, cls_loss, box_loss = loss_fn(cls, box, cls_t, box_t)
        opt.zero_grad()
        sum_loss.sum().backward()
        opt.step()
        losses.append([float(t.detach().sum()) for t in (sum_loss, cls_loss, box_loss)])
    want = OUT["train_losses"]
    assert abs(want[1, 0] - want[0, 0]) > 0.01 * want[0, 0]  # the steps change the loss: the updates are compared too
    np.testing.assert_allclose(np.array(losses), want, rtol=1e-3)


# ----------------------------------------------------------------------------------------------- names
ZOO = [n for n in NAMES["names"] if n.startswith("ssd_")]


@pytest.mark.parametrize("name", ZOO)
def test_every_gluon_name_maps(name):
    listing = NAMES["names"][name]
    mapped, constants, notes, _ = map_gluon_ssd_names({k: tuple(s) for k, s in listing})
    assert not notes
    with torch.device("meta"):  # shapes only: no memory, no initialisation
        net = get_model(name, classes=classes_of(name))
    ours = {k: tuple(v.shape) for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    assert mapped.keys() == ours.keys()
    differ = {k: (mapped[k], ours[k]) for k in ours if mapped[k] != ours[k]}
    if "vgg" in name:  # GluonCV's L2Norm scale is [1, C, 1, 1]; ssdkit's is [C]
        assert differ == {"features.norm4.scale": ((1, 512, 1, 1), (512,))}
    else:
        assert not differ
    assert len(constants) == len(PRESETS[name].anchor_spec.steps) + (1 if "vgg" in name else 0)
    trainable = sum(p.numel() for p in net.parameters())
    assert trainable == NAMES["param_counts"][name]


@pytest.mark.parametrize(
    "base,model",
    [
        ("vgg16_atrous_300", "ssd_300_vgg16_atrous_voc"),
        ("vgg16_atrous_512", "ssd_512_vgg16_atrous_voc"),
        ("resnet50_v1", "ssd_512_resnet50_v1_voc"),
        ("mobilenet1.0", "ssd_512_mobilenet1.0_voc"),
    ],
)
def test_gluon_imagenet_base_params(base, model, tmp_path):
    listing = NAMES["names"][base]
    arrays = {k: (np.full(s, 0.5, np.float32) if k.endswith("var") else np.zeros(s, np.float32)) for k, s in listing}
    first_conv = listing[0][0] if not listing[0][0].endswith("init_scale") else listing[1][0]
    arrays[first_conv] = np.full(arrays[first_conv].shape, 0.25, np.float32)
    path = tmp_path / f"{base}.params"
    gen.write_params(str(path), arrays)
    torch.manual_seed(0)
    net = get_model(model, pretrained_base=path)
    first = next(v for k, v in net.features.state_dict().items() if k.endswith("weight"))
    assert torch.all(first == 0.25)
    bn_vars = [v for k, v in net.features.state_dict().items() if k.endswith("running_var") and "extras" not in k]
    assert all(torch.all(v == 0.5) for v in bn_vars)


def test_torchvision_vgg16_fc6_fc7_reduced(tmp_path):
    import torchvision

    with torch.device("meta"):
        shapes = {k: v.shape for k, v in torchvision.models.vgg16(weights=None).state_dict().items()}
    gen_ = torch.Generator().manual_seed(0)
    state = {k: torch.randn(s, generator=gen_) for k, s in shapes.items()}  # torchvision's keys and shapes
    path = tmp_path / "vgg16.pth"
    torch.save(state, path)
    net = get_model("ssd_300_vgg16_atrous_voc", pretrained_base=path)
    fc6, fc7 = net.features.stages[5][0], net.features.stages[5][2]
    assert fc6.dilation == (6, 6) and tuple(fc6.weight.shape) == (1024, 512, 3, 3)
    w6 = state["classifier.0.weight"].reshape(4096, 512, 7, 7)
    for o, c, y, x in ((0, 0, 0, 0), (1, 7, 2, 1), (1023, 511, 2, 2), (500, 100, 1, 0)):
        assert fc6.weight[o, c, y, x] == w6[4 * o, c, 3 * y, 3 * x]
    assert torch.equal(fc6.bias, state["classifier.0.bias"][0::4])
    assert torch.equal(fc7.weight[:, :, 0, 0], state["classifier.3.weight"][0::4, 0::4])
    assert torch.equal(fc7.bias, state["classifier.3.bias"][0::4])
    assert torch.equal(net.features.stages[4][4].weight, state["features.28.weight"])
    with pytest.raises(ValueError, match="fc6"):
        reduce_vgg16_fc(torch.zeros(10, 10), torch.zeros(10), torch.zeros(4096, 4096), torch.zeros(4096))


# ----------------------------------------------------------------------------------------------- bad files
def _one_line_error(fn, *words):
    with pytest.raises(WeightsError) as e:
        fn()
    msg = str(e.value)
    assert "\n" not in msg, msg
    for w in words:
        assert w in msg, msg
    return msg


def test_bad_files(params_file, tmp_path):
    good = params_file(gen.TRAIN_MODEL)
    truncated = tmp_path / "truncated.params"
    truncated.write_bytes(good.read_bytes()[:5_000_000])
    _one_line_error(lambda: get_model(gen.TRAIN_MODEL, pretrained=truncated), str(truncated), "truncated")
    empty = tmp_path / "empty.params"
    empty.write_bytes(b"")
    _one_line_error(lambda: get_model(gen.TRAIN_MODEL, pretrained=empty), str(empty), "empty")
    # another model's file: VGG300 weights into the VGG512 model
    _one_line_error(lambda: get_model("ssd_512_vgg16_atrous_voc", pretrained=good), str(good), "anchor")
    # COCO classes in a VOC file
    _one_line_error(lambda: get_model("ssd_300_vgg16_atrous_coco", pretrained=good), str(good), "anchor")
    net = get_model(gen.TRAIN_MODEL)
    constants = gluon_constants(gen.TRAIN_MODEL, NAMES["names"][gen.TRAIN_MODEL])
    check_gluon_constants(net, {k: torch.from_numpy(v) for k, v in constants.items()}, "same.params")
    constants["features.init_scale"] = constants["features.init_scale"] / 255  # a 0-1 input scale
    _one_line_error(
        lambda: check_gluon_constants(net, {k: torch.from_numpy(v) for k, v in constants.items()}, "scale.params"),
        "scale.params",
        "init_scale",
    )


def test_old_save_params_names_get_a_hint(tmp_path):
    name = "ssd_512_mobilenet1.0_custom"
    listing = NAMES["names"][name]
    old_style = {"ssd0_" + k.replace(".", "_"): np.zeros(s, np.float32) for k, s in listing}
    path = tmp_path / "old.params"
    gen.write_params(str(path), old_style)
    _one_line_error(lambda: get_model(name, pretrained=path, classes=gen.CUSTOM_CLASSES), "save_parameters")


@pytest.mark.parametrize("change", ["missing", "extra", "shape", "anchors"])
def test_wrong_names_and_shapes(change, tmp_path):
    name = "ssd_512_mobilenet1.0_custom"
    listing = NAMES["names"][name]
    arrays = {k: np.zeros(s, np.float32) for k, s in listing}
    arrays.update(gluon_constants(name, listing))
    key = "features.mobilenet0_conv3_weight"
    if change == "missing":
        del arrays[key]
    elif change == "extra":
        arrays["features.mobilenet0_conv99_weight"] = np.zeros((3, 3), np.float32)
    elif change == "shape":
        arrays[key] = np.zeros((7, 1, 3, 3), np.float32)
    else:
        arrays["anchor_generators.2.anchors"] = arrays["anchor_generators.2.anchors"] + 1
    path = tmp_path / f"{change}.params"
    gen.write_params(str(path), arrays)
    expected = {
        "missing": "features.body.features.9.weight",
        "extra": "mobilenet0_conv99_weight",
        "shape": "features.mobilenet0_conv3_weight (= features.body.features.9.weight)",
        "anchors": "anchor_generators.2.anchors",
    }[change]
    _one_line_error(lambda: get_model(name, pretrained=path, classes=gen.CUSTOM_CLASSES), str(path), expected)


# ----------------------------------------------------------------------------------------------- convert
def test_convert_cli(params_file, tmp_path, capsys):
    from ssdkit.cli import main
    from ssdkit.engine.evaluation import load_trained_model

    name = "ssd_512_mobilenet1.0_custom"
    src = params_file(name)
    out = tmp_path / "converted.pt"
    assert main(["convert", str(src), "--model", name, "--classes", "a,b,c", "--output", str(out)]) == 0
    net, cfg, ckpt = load_trained_model(str(out), torch.device("cpu"))  # what eval and predict do
    assert net.classes == gen.CUSTOM_CLASSES and cfg.model == name and ckpt["data_shape"] == 512
    reference = get_model(name, pretrained=src, classes=gen.CUSTOM_CLASSES)
    for (k, a), b in zip(reference.state_dict().items(), net.state_dict().values()):
        assert torch.equal(a, b), k
    again = get_model(name, pretrained=out)  # train --pretrained: classes come from the checkpoint
    assert again.classes == gen.CUSTOM_CLASSES
    capsys.readouterr()
    bad = tmp_path / "bad.params"
    bad.write_bytes(src.read_bytes()[:1000])
    assert main(["convert", str(bad), "--model", name, "--classes", "a,b,c", "--output", str(tmp_path / "x.pt")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(bad) in err and "truncated" in err
    assert main(["convert", str(src), "--model", "ssd_512_mobilenet1.0_voc", "--output", str(tmp_path / "y.pt")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "class_predictors.0.predictor.weight" in err
    assert not (tmp_path / "x.pt").exists() and not (tmp_path / "y.pt").exists()
    # a custom model's file without --classes, or with too few: the message names the flag, or the class counts
    assert main(["convert", str(src), "--model", name, "--output", str(tmp_path / "z.pt")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--classes a,b,c" in err
    assert main(["convert", str(src), "--model", name, "--classes", "a,b", "--output", str(tmp_path / "z.pt")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "the file predicts 3 classes, the model 2 (a, b)" in err
    # export straight from the .params file, as convert does
    ts = tmp_path / "custom.ts"
    args = ["export", "--model", name, "--pretrained", str(src), "--classes", "a,b,c", "--format", "torchscript"]
    assert main([*args, "--output", str(ts)]) == 0
    assert json.loads(capsys.readouterr().out)["classes"] == list(gen.CUSTOM_CLASSES)
    assert main(["export", "--checkpoint", str(out), "--classes", "a,b,c", "--output", str(tmp_path / "c.ts")]) == 2
    assert "--classes goes with --model" in capsys.readouterr().err
