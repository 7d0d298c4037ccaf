"""ONNX and TorchScript export of the tiny model: ONNX Runtime and a fresh process (no ssdkit) give net.detect's
detections; `ssdkit export` / `predict --onnx` end to end; bad input is one line with exit code 2."""

import contextlib
import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import ssdkit
from ssdkit.cli import main
from ssdkit.engine.checkpoint import save_checkpoint
from ssdkit.engine.config import TrainConfig

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")
from ssdkit.export import export_onnx, read_onnx_metadata  # noqa: E402


def run(capsys, *args):
    """``ssdkit ARGS`` in this process: ``(exit code, stdout, stderr)``."""
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def calm_heads(net, x, logit_std=2.0, box_std=0.5):
    """Random weights give saturated class scores (near-ties in float rounding) and boxes thousands of pixels
    wide; scale the heads so that logits and box offsets have moderate spreads."""
    cls_preds, box_preds, _ = net(x)
    with torch.no_grad():
        for heads, std, target in (
            (net.class_predictors, cls_preds.std(), logit_std),
            (net.box_predictors, box_preds.std(), box_std),
        ):
            for head in heads:
                head.predictor.weight.mul_(target / std)
                head.predictor.bias.mul_(target / std)
    return net


def assert_same_detections(ref, got, count=None):
    """``net.detect``'s ``[N, P, 1]`` rows against an export's ``[N, P]``: same ids, scores within 1e-4, boxes
    within 1e-3."""
    ids, scores, boxes = (t.numpy() if hasattr(t, "numpy") else t for t in ref)
    got_ids, got_scores, got_boxes = (np.asarray(t) for t in got)
    np.testing.assert_array_equal(got_ids, ids[..., 0])
    np.testing.assert_allclose(got_scores, scores[..., 0], atol=1e-4, rtol=0)
    np.testing.assert_allclose(got_boxes, boxes, atol=1e-3, rtol=0)
    if count is not None:
        assert ((got_ids >= 0).sum(axis=1) == count).all()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny model in a training checkpoint, exported to ONNX by the command line."""
    folder = tmp_path_factory.mktemp("export")
    torch.manual_seed(0)
    net = ssdkit.get_model("ssd_tiny_synthetic").eval()
    calm_heads(net, (torch.rand(4, 3, net.data_shape, net.data_shape) - 0.45) / 0.225)  # as normalised images
    ckpt = str(folder / "best.pt")
    save_checkpoint(
        ckpt,
        {
            "model": net.state_dict(),
            "config": TrainConfig(model="ssd_tiny_synthetic").to_dict(),
            "classes": list(net.classes),
            "model_name": net.name,
            "data_shape": net.data_shape,
        },
    )
    path = str(folder / "tiny.onnx")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["export", "--checkpoint", ckpt, "--output", path]) == 0
    return net, ckpt, path, json.loads(out.getvalue())


def test_export_reports_and_checks(tiny):
    net, _, path, summary = tiny
    assert summary["outputs"] == ["ids", "scores", "boxes"] and summary["classes"] == list(net.classes)
    model = onnx.load(path)
    onnx.checker.check_model(model, full_check=True)
    assert any(n.op_type == "NonMaxSuppression" for n in model.graph.node)
    meta = read_onnx_metadata(path)
    assert meta["classes"] == list(net.classes) and meta["input_size"] == [net.data_shape] * 2
    assert meta["mean"] == pytest.approx([0.485, 0.456, 0.406]) and meta["std"] == pytest.approx([0.229, 0.224, 0.225])
    assert meta["decoder"] == "per_class" and meta["post_nms"] == 100


@pytest.mark.parametrize("batch", [1, 3])
def test_onnx_runtime_equals_detect(tiny, batch):
    net, _, path, _ = tiny
    torch.manual_seed(batch)
    x = torch.rand(batch, 3, net.data_shape, net.data_shape)
    sess = ort.InferenceSession(path)
    got = sess.run(["ids", "scores", "boxes"], {"images": x.numpy()})
    # random weights: every candidate scores above 0.01 and more than 100 survive NMS
    assert_same_detections(net.detect(x), got, count=100)


def test_all_padding_and_argmax(tmp_path):
    """Nothing above the score threshold: every row is -1; the argmax decoder is exported as such."""
    torch.manual_seed(1)
    net = ssdkit.get_model("ssd_tiny_synthetic", decoder="argmax").eval()
    x = torch.rand(2, 3, net.data_shape, net.data_shape)
    calm_heads(net, x)
    with torch.no_grad():
        for head in net.class_predictors:
            head.predictor.bias[0 :: net.num_classes + 1] += 12.0  # background wins everywhere for one image
    x[1] = (x[1] - 0.5) * 2  # a wider input: a few candidates pass the threshold
    ref = net.detect(x)
    path = export_onnx(net, str(tmp_path / "argmax.onnx"))
    got = ort.InferenceSession(path).run(None, {"images": x.numpy()})
    assert_same_detections(ref, got)
    assert read_onnx_metadata(path)["decoder"] == "argmax"
    counts = (got[0] >= 0).sum(axis=1)
    assert counts.min() == 0 and (got[1][counts.argmin()] == -1).all() and (got[2][counts.argmin()] == -1).all()
    assert counts.max() > 0


def test_predict_onnx_equals_checkpoint(tiny, tmp_path, capsys):
    from torchvision.io import write_png

    from ssdkit.engine.evaluation import predict_images

    _, ckpt, path, _ = tiny
    images = []
    for i, (h, w) in enumerate(((90, 160), (200, 120))):
        images.append(str(tmp_path / f"img{i}.png"))
        write_png(
            torch.randint(0, 255, (3, h, w), dtype=torch.uint8, generator=torch.Generator().manual_seed(i)), images[-1]
        )
    by_ckpt = predict_images(ckpt, images, score_thresh=0.05, output=str(tmp_path / "a"), device="cpu")
    code, out, err = run(
        capsys, "predict", "--onnx", path, *images, "--score-thresh", "0.05", "--output", str(tmp_path / "b")
    )
    assert code == 0, err
    by_onnx = json.loads(out)
    assert len(by_onnx) == 2
    for a, b in zip(by_ckpt, by_onnx):
        assert a["detections"] and [d["label"] for d in a["detections"]] == [d["label"] for d in b["detections"]]
        for da, db in zip(a["detections"], b["detections"]):
            assert da["score"] == pytest.approx(db["score"], abs=1e-4)
            assert da["box_xyxy"] == pytest.approx(db["box_xyxy"], abs=0.11)  # rounded to 0.1 px
        assert os.path.getsize(b["picture"]) > 1000


def test_torchscript_in_fresh_process_without_ssdkit(tiny, tmp_path, capsys):
    net, ckpt, _, _ = tiny
    path = str(tmp_path / "tiny.ts")
    code, _, err = run(capsys, "export", "--checkpoint", ckpt, "--output", path, "--format", "torchscript")
    assert code == 0, err
    x = torch.rand(3, 3, net.data_shape, net.data_shape, generator=torch.Generator().manual_seed(5))
    torch.save(x, tmp_path / "x.pt")
    code = (
        "import sys, json; sys.modules['ssdkit'] = None; sys.modules['torchvision'] = None\n"
        "import torch, numpy as np, warnings\nwarnings.simplefilter('ignore')\n"
        f"files = {{'ssdkit.json': ''}}\nm = torch.jit.load({path!r}, _extra_files=files)\n"
        f"out = m(torch.load({str(tmp_path / 'x.pt')!r}))\n"
        f"np.savez({str(tmp_path / 'out.npz')!r}, *[t.numpy() for t in out])\n"
        "print(json.loads(files['ssdkit.json'])['classes'])\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env, cwd=str(tmp_path)
    )
    assert proc.returncode == 0, proc.stderr
    assert eval(proc.stdout.strip()) == list(net.classes)
    got = np.load(tmp_path / "out.npz")
    assert_same_detections(net.detect(x), [got[f"arr_{i}"] for i in range(3)], count=100)


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit.load's deprecation notice
@pytest.mark.parametrize("raw", [False, True])
def test_torchscript_refuses_another_input_size(tiny, tmp_path, raw):
    """The anchors inside the file are made for one size: a smaller image must not decode against them silently,
    a larger one must not fail with an index error from inside the decoding."""
    net, _, _, _ = tiny
    path = str(tmp_path / "tiny.ts")
    ssdkit.export.export_torchscript(net, path, raw=raw)
    m = torch.jit.load(path)
    s = net.data_shape
    assert len(m(torch.rand(2, 3, s, s))) == 3
    for shape in ((1, 3, s - 32, s - 32), (1, 3, s + 32, s), (1, 3, s, s + 32), (1, 1, s, s)):
        with pytest.raises(Exception, match=rf"exported for images of shape \[N, 3, {s}, {s}\], got \[{shape[0]}, "):
            m(torch.rand(*shape))


def test_raw_export(tiny, tmp_path, capsys):
    net, ckpt, _, _ = tiny
    path = export_onnx(net, str(tmp_path / "raw.onnx"), raw=True)
    x = torch.rand(2, 3, net.data_shape, net.data_shape)
    cls_preds, box_preds, anchors = ort.InferenceSession(path).run(None, {"images": x.numpy()})
    ref = net(x)
    np.testing.assert_allclose(cls_preds, ref[0].detach().numpy(), atol=1e-4)
    np.testing.assert_allclose(box_preds, ref[1].detach().numpy(), atol=1e-4)
    np.testing.assert_array_equal(anchors, ref[2][0].numpy())
    assert read_onnx_metadata(path)["outputs"] == "raw"
    code, _, err = run(capsys, "predict", "--onnx", path, str(tmp_path / "photo.png"))  # checked before the image
    assert code == 2 and err.count(path) == 1 and "export it again without --raw" in err, err


@pytest.mark.parametrize(
    "args,needle",
    [
        (["export", "--checkpoint", "/nonexistent/best.pt", "--output", "m.onnx"], "/nonexistent/best.pt"),
        (["export", "--model", "ssd_999_nonsense", "--output", "m.onnx"], "unknown model"),
        (["predict", "--onnx", "/nonexistent/m.onnx", "x.png"], "/nonexistent/m.onnx"),
    ],
)
def test_bad_input_one_line(args, needle, capsys):
    code, _, err = run(capsys, *args)
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, err


def test_not_a_checkpoint_and_unwritable_folder(tiny, tmp_path, capsys):
    _, ckpt, _, _ = tiny
    junk = tmp_path / "junk.pt"
    junk.write_text("not a checkpoint")
    for args, needle in (
        (["--checkpoint", str(junk), "--output", "m.onnx"], str(junk)),
        (["--checkpoint", ckpt, "--output", str(junk / "sub" / "m.onnx")], str(junk)),
        (["--checkpoint", ckpt, "--output", str(tmp_path)], str(tmp_path)),
    ):
        code, _, err = run(capsys, "export", *args)
        assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, err
    code, _, err = run(capsys, "predict", "--onnx", str(junk), str(junk))
    assert code == 2 and str(junk) in err and len(err.strip().splitlines()) == 1, err
