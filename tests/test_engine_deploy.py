"""`ssdkit export` and `predict --onnx` without the optional ONNX packages: one line naming what to install, exit
code 2, nothing written; TorchScript export needs none of them. The packages are hidden through ``sys.modules``
(an entry of None makes ``import`` fail), so these tests run whether or not ``ssdkit[onnx]`` is installed."""

import contextlib
import io
import json
import sys

import pytest

from ssdkit.cli import main
from ssdkit.export import ONNX_EXPORT_NEEDS, ONNX_RUN_NEEDS, missing_modules


def run(capsys, *args):
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def hide(monkeypatch, *names):
    for name in names:
        monkeypatch.setitem(sys.modules, name, None)


def test_missing_modules(monkeypatch):
    assert missing_modules(("json", "os")) == []
    hide(monkeypatch, "onnxscript")
    assert missing_modules(("json", "onnxscript")) == ["onnxscript"]
    assert "onnxscript" in ONNX_EXPORT_NEEDS and "onnxruntime" in ONNX_RUN_NEEDS


@pytest.mark.parametrize("hidden", [("onnx",), ("onnxscript",), ("onnx", "onnxscript")])
def test_onnx_export_without_packages_is_one_line(hidden, monkeypatch, capsys, tmp_path):
    hide(monkeypatch, *hidden)
    out = tmp_path / "m.onnx"
    code, _, err = run(capsys, "export", "--model", "ssd_tiny_synthetic", "--output", str(out))
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert f"pip install {' '.join(hidden)} " in err and ".[onnx]" in err and "Traceback" not in err
    assert not out.exists()


def test_torchscript_export_needs_no_onnx(monkeypatch, capsys, tmp_path):
    hide(monkeypatch, *ONNX_EXPORT_NEEDS, *ONNX_RUN_NEEDS)
    out = tmp_path / "m.pt"
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        code = main(["export", "--model", "ssd_tiny_synthetic", "--format", "torchscript", "--output", str(out)])
    assert code == 0 and out.stat().st_size > 0
    assert json.loads(printed.getvalue())["format"] == "torchscript"


def test_predict_onnx_without_runtime_names_the_package(monkeypatch, capsys, tmp_path):
    model = tmp_path / "m.onnx"
    model.write_bytes(b"any bytes: the packages are checked before the file is read")
    hide(monkeypatch, "onnxruntime")
    code, _, err = run(capsys, "predict", "--onnx", str(model), str(tmp_path / "photo.png"))
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "pip install onnxruntime " in err and ".[onnx]" in err and "not a readable ONNX file" not in err
