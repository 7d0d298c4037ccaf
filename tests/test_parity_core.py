"""Parity of ssdkit's SSD core with GluonCV 0.10.5 on stored reference fixtures.

The fixtures (``tests/data/core_*.npz``, ``core_tutorial.json``) are written by
``tools/make_reference_fixtures.py`` under the GluonCV virtualenv; this file needs only numpy and torch. Large
inputs are rebuilt from stored seeds with the pure-NumPy generators of ``tools/reference_inputs.py`` (imported
below). Tolerances: anchors 1e-4, class targets / masks / ids exact, box targets 1e-5, losses
relative 1e-5, box decoding 1e-4, class scores 1e-6, post-processing scores 1e-5 and boxes 1e-4.

Shape legend: B batch, A anchors, G ground truths, C foreground classes, K output rows.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import load_tool

DATA = Path(__file__).parent / "data"


gen = load_tool("reference_inputs")


def _npz(name):
    path = DATA / name
    if not path.exists():
        pytest.fail(
            f"missing fixture {path}; regenerate with "
            ".venv-gluoncv/bin/python tools/make_reference_fixtures.py "
            "(tools/make_gluoncv_venv.sh makes the venv)"
        )
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


@pytest.fixture(scope="module")
def anchors_fx():
    return _npz("core_anchors.npz")


@pytest.fixture(scope="module")
def anchors300(anchors_fx):
    """GluonCV's ssd_300 anchors ``Tensor[1, A, 4]`` (cx, cy, w, h): every other test's input."""
    return torch.from_numpy(anchors_fx["ssd_300_vgg16_atrous_voc"])[None]


@pytest.fixture(scope="module")
def targets_fx():
    return _npz("core_targets.npz")


def _describe_mismatch(got, want, what, limit=5):
    bad = np.argwhere(got != want)
    head = ", ".join(
        f"{tuple(int(i) for i in idx)}: ssdkit {got[tuple(idx)]} gluoncv {want[tuple(idx)]}" for idx in bad[:limit]
    )
    return f"{what}: {len(bad)} of {got.size} differ; first {head}"


# --------------------------------------------------------------------------------------- anchors


@pytest.mark.parametrize("name", gen.ZOO_MODELS)
def test_zoo_anchor_presets_match_gluoncv(anchors_fx, name):
    from ssdkit.anchors import ssd_anchors
    from ssdkit.models import PRESETS

    want = anchors_fx[name]
    shapes = [tuple(int(v) for v in s) for s in anchors_fx[name + "/feature_shapes"]]
    got = ssd_anchors(PRESETS[name].anchor_spec, shapes)[0].numpy()
    assert got.shape == want.shape
    assert np.abs(got - want).max() < 1e-4


@pytest.mark.slow
@pytest.mark.parametrize(
    "name",
    ["ssd_300_vgg16_atrous_voc", "ssd_512_vgg16_atrous_coco", "ssd_512_resnet50_v1_voc", "ssd_512_mobilenet1.0_coco"],
)
def test_zoo_network_anchors_and_shapes_match_gluoncv(anchors_fx, name):
    """One network per backbone: its own forward gives GluonCV's feature sizes, anchors and head widths."""
    from ssdkit.models import get_model

    torch.manual_seed(0)
    net = get_model(name, pretrained=False, pretrained_base=False).eval()
    size = 300 if name.startswith("ssd_300") else 512
    with torch.no_grad():
        cls_preds, box_preds, anchors = net(torch.zeros(1, 3, size, size))
    want = anchors_fx[name]
    assert anchors.shape == (1, *want.shape)
    assert cls_preds.shape == (1, want.shape[0], int(anchors_fx[name + "/num_classes"]) + 1)
    assert box_preds.shape == (1, want.shape[0], 4)
    assert np.abs(anchors[0].numpy() - want).max() < 1e-4


# --------------------------------------------------------------------------------------- targets


def _target_cases():
    with np.load(DATA / "core_targets.npz") as z:
        batches = [str(b) for b in z["batches"]]
    return [(b, v) for b in batches for v in ("naive", "ohem")]


@pytest.mark.parametrize("batch,variant", _target_cases())
def test_target_generator_matches_gluoncv(targets_fx, anchors300, batch, variant):
    from ssdkit.targets import SSDTargetGenerator

    gt_boxes = targets_fx[batch + "/gt_boxes"]
    gt_ids = targets_fx[batch + "/gt_ids"]
    b, a = gt_boxes.shape[0], anchors300.shape[1]
    if variant == "ohem":
        logits = gen.normal_logits(int(targets_fx[f"{batch}/ohem/logit_seed"]), (b, a, gen.NUM_FG + 1))
        generator = SSDTargetGenerator(negative_mining_ratio=3)
        cls_preds = torch.from_numpy(logits)
    else:
        generator = SSDTargetGenerator(negative_mining_ratio=-1)
        cls_preds = None
    ct, bt, bm = generator(anchors300, cls_preds, torch.from_numpy(gt_boxes), torch.from_numpy(gt_ids))
    want_ct, want_bt, want_bm = gen.unpack_targets(targets_fx, f"{batch}/{variant}/", b, a)
    got_ct = ct.numpy().astype(np.int64)
    assert got_ct.shape == want_ct.shape
    assert np.array_equal(got_ct, want_ct), _describe_mismatch(got_ct, want_ct, "cls_targets")
    assert np.array_equal(bm.numpy(), want_bm), _describe_mismatch(bm.numpy(), want_bm, "box_masks")
    diff = np.abs(bt.numpy() - want_bt)
    assert diff.max() <= 1e-5 + 1e-6 * np.abs(want_bt).max(), f"box_targets max diff {diff.max():.3g}"


# --------------------------------------------------------------------------------------- loss


def _loss_cases():
    with np.load(DATA / "core_loss.npz") as z:
        return [str(c) for c in z["cases"]]


@pytest.fixture(scope="module")
def loss_fx():
    return _npz("core_loss.npz")


def _loss_inputs(loss_fx, targets_fx, case, n_anchors):
    seed = int(loss_fx[case + "/seed"])
    key = str(loss_fx[case + "/targets"])
    if key.startswith("nopos"):
        batch = 2
        cls_targets = np.zeros((batch, n_anchors), np.int64)
        box_targets = np.zeros((batch, n_anchors, 4), np.float32)
    else:
        name, variant = key.split("/")
        batch = targets_fx[name + "/gt_boxes"].shape[0]
        cls_targets, box_targets, _ = gen.unpack_targets(targets_fx, f"{name}/{variant}/", batch, n_anchors)
    cls_preds = gen.normal_logits(seed, (batch, n_anchors, gen.NUM_FG + 1), scale=1.5)
    box_preds = gen.normal_logits(seed + 7, (batch, n_anchors, 4))
    return [torch.from_numpy(v) for v in (cls_preds, box_preds, cls_targets, box_targets)]


@pytest.mark.parametrize("case", _loss_cases())
@pytest.mark.parametrize("normalization", ["batch", "sample"])
def test_multibox_loss_matches_gluoncv(loss_fx, targets_fx, anchors300, case, normalization):
    """``batch`` is GluonCV's loss on the batch; ``sample`` is GluonCV's loss called on one image at a time.

    OHEM targets hold -1 (ignore). GluonCV's loss reads -1 as background (``pick`` in clip mode) and mines those
    anchors like any negative; ssdkit excludes them by default (documented deviation) and matches GluonCV with
    ``ignore_label=None``. Targets without -1 (the training pipeline's) are compared with the defaults.
    """
    from ssdkit.loss import SSDMultiBoxLoss

    kwargs = json.loads(str(loss_fx[case + "/kwargs"]))
    if "/ohem" in case:
        kwargs["ignore_label"] = None
    inputs = _loss_inputs(loss_fx, targets_fx, case, anchors300.shape[1])
    got = SSDMultiBoxLoss(normalization=normalization, **kwargs)(*inputs)
    want = loss_fx[f"{case}/{normalization}"]  # [3, B]: sum, cls, box
    for name, g, w in zip(("sum", "cls", "box"), got, want):
        np.testing.assert_allclose(g.detach().numpy(), w, rtol=1e-5, atol=1e-6, err_msg=f"{name} loss, {case}")


def test_multibox_loss_default_ignores_minus_one_targets(loss_fx, targets_fx, anchors300):
    """The default ``ignore_label=-1`` leaves ignored anchors out of the mined negatives, so on OHEM targets it
    gives a smaller classification loss than GluonCV (guards the documented deviation from silently flipping)."""
    from ssdkit.loss import SSDMultiBoxLoss

    inputs = _loss_inputs(loss_fx, targets_fx, "tutorial/ohem", anchors300.shape[1])
    assert bool((inputs[2] == -1).any())
    _, cls_loss, box_loss = SSDMultiBoxLoss()(*inputs)
    want = loss_fx["tutorial/ohem/batch"]
    assert np.all(cls_loss.numpy() < want[1] - 1e-3)
    np.testing.assert_allclose(box_loss.numpy(), want[2], rtol=1e-5)


# --------------------------------------------------------------------------------------- coders


@pytest.fixture(scope="module")
def coders_fx():
    return _npz("core_coders.npz")


def test_box_decoder_matches_gluoncv(coders_fx, anchors300):
    from ssdkit.coder import NormalizedBoxCenterDecoder

    scale = coders_fx["box/scale"]
    preds = gen.normal_logits(int(coders_fx["box/seed"]), (2, anchors300.shape[1], 4))
    preds = preds * scale[:, None, None]
    got = NormalizedBoxCenterDecoder((0.1, 0.1, 0.2, 0.2))(torch.from_numpy(preds), anchors300).numpy()
    want = coders_fx["box/decoded"]
    assert got.shape == want.shape
    assert np.abs(got - want).max() < 1e-4


def test_argmax_class_decoder_matches_gluoncv(coders_fx):
    from ssdkit.coder import MultiClassDecoder

    probs = torch.from_numpy(gen.class_decoder_probs(int(coders_fx["cls/seed"])))
    ids, scores = MultiClassDecoder(thresh=0.01)(probs)
    want_ids = coders_fx["cls/argmax_ids"].astype(np.int64)
    got_ids = ids.numpy().astype(np.int64)
    assert np.array_equal(got_ids, want_ids), _describe_mismatch(got_ids, want_ids, "argmax ids")
    assert np.abs(scores.numpy() - coders_fx["cls/argmax_scores"]).max() <= 1e-6


def test_per_class_decoder_matches_gluoncv(coders_fx):
    from ssdkit.coder import MultiPerClassDecoder

    probs = torch.from_numpy(gen.class_decoder_probs(int(coders_fx["cls/seed"])))
    ids, scores = MultiPerClassDecoder(gen.NUM_FG + 1, thresh=0.01)(probs)
    want_ids = coders_fx["cls/per_class_ids"].astype(np.int64)
    got_ids = ids.numpy().astype(np.int64)
    assert np.array_equal(got_ids, want_ids), _describe_mismatch(got_ids, want_ids, "per-class ids")
    want_scores = np.zeros(want_ids.size, np.float32)
    want_scores[coders_fx["cls/per_class_score_index"]] = coders_fx["cls/per_class_score_values"]
    assert np.abs(scores.numpy().reshape(-1) - want_scores).max() <= 1e-6


# --------------------------------------------------------------------------------------- post-processing


@pytest.fixture(scope="module")
def post_fx():
    return _npz("core_postprocess.npz")


@pytest.fixture(scope="module")
def post_inputs(post_fx, anchors300):
    cls_logits, box_preds = gen.postprocess_inputs(
        int(post_fx["seed"]), anchors300[0].numpy(), batch=int(post_fx["batch"])
    )
    return torch.from_numpy(cls_logits), torch.from_numpy(box_preds)


def _post_configs():
    with np.load(DATA / "core_postprocess.npz") as z:
        return [str(c) for c in z["configs"]]


@pytest.mark.parametrize("config", _post_configs())
def test_postprocess_matches_gluoncv(post_fx, post_inputs, anchors300, config):
    from ssdkit.postprocess import PostProcessor

    cfg = json.loads(str(post_fx[config + "/config"]))
    pp = PostProcessor(gen.NUM_FG, **cfg)
    ids, scores, bboxes = pp(*post_inputs, anchors300)
    want_ids = post_fx[config + "/ids"].astype(np.int64)
    got_ids = ids[..., 0].numpy().astype(np.int64)
    assert got_ids.shape == want_ids.shape
    assert np.array_equal(got_ids, want_ids), _describe_mismatch(got_ids, want_ids, f"{config} ids")
    assert np.abs(scores[..., 0].numpy() - post_fx[config + "/scores"]).max() <= 1e-5
    assert np.abs(bboxes.numpy() - post_fx[config + "/bboxes"]).max() <= 1e-4


def test_postprocess_fixture_exercises_the_cutoffs(post_fx):
    """The stored case must keep testing top-k, post_nms truncation and -1 padding (guards a regeneration)."""
    ids = post_fx["per_class/ids"]
    valid = (ids >= 0).sum(axis=1)
    assert valid.max() == ids.shape[1] and valid.min() < ids.shape[1]
    assert np.all(post_fx["per_class/scores"][ids < 0] == -1)
    assert not np.array_equal(post_fx["per_class/ids"], post_fx["argmax/ids"])


# --------------------------------------------------------------------------------------- tutorial numbers


@pytest.fixture(scope="module")
def tutorial():
    with open(DATA / "core_tutorial.json") as f:
        return json.load(f)


def test_tutorial_numbers_recorded_from_gluoncv(tutorial):
    """GluonCV (as recorded by the fixture script) agrees with the numbers the seed tutorial prints."""
    assert tutorial["num_positive_batch"] == 36
    assert tutorial["num_positive_sample"] == [13, 23]
    assert tutorial["ohem_negatives"] == [39, 69]
    assert tutorial["num_anchors"]["ssd_300_vgg16_atrous_voc"] == 8732
    assert tutorial["num_anchors"]["ssd_512_vgg16_atrous_coco"] == 24564
    assert tutorial["num_anchors"]["ssd_512_mobilenet1.0_voc"] == 6132


def test_tutorial_numbers_reproduced_by_ssdkit(tutorial, anchors300):
    from ssdkit.targets import SSDTargetGenerator

    gt_boxes, gt_ids = (torch.from_numpy(v) for v in gen.tutorial_batch())
    logits = torch.from_numpy(gen.normal_logits(tutorial["ohem_logit_seed"], (2, anchors300.shape[1], gen.NUM_FG + 1)))
    ct, _, _ = SSDTargetGenerator()(anchors300, logits, gt_boxes, gt_ids)
    assert int((ct > 0).sum()) == tutorial["num_positive_batch"]
    assert (ct > 0).sum(1).tolist() == tutorial["num_positive_sample"]
    assert (ct == 0).sum(1).tolist() == tutorial["ohem_negatives"]
    assert (ct == -1).sum(1).tolist() == tutorial["ohem_ignored"]
    assert sorted(set(ct[0][ct[0] > 0].tolist())) == tutorial["positive_labels_image0"]
    naive, _, _ = SSDTargetGenerator(negative_mining_ratio=-1)(anchors300, None, gt_boxes, gt_ids)
    assert (naive == 0).sum(1).tolist() == tutorial["naive_background"]
    sm = torch.softmax(torch.tensor(tutorial["softmax_input"]), dim=-1)
    np.testing.assert_allclose(sm.numpy(), tutorial["softmax"], atol=1e-6)
    np.testing.assert_allclose(anchors300[0, :5].numpy(), tutorial["first_anchors_ssd_300"], atol=5e-3)


def test_core_fixtures_stay_small():
    total = sum(os.path.getsize(p) for p in DATA.glob("core_*"))
    assert total < 5 * 2**20
