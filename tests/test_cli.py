"""The command line, end to end: a one-epoch run on a tiny synthetic set, eval, predict, and clear errors."""

import csv
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from torchvision.io import write_png

CLI = [sys.executable, "-m", "ssdkit"]


def run(*args, timeout=600):
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout)


def test_console_script_installed():
    assert shutil.which("ssdkit"), "pip install -e . should put the `ssdkit` command on PATH"


def test_help_reads_well():
    out = run("train", "--help").stdout
    for flag in (
        "--model",
        "--dataset",
        "--data-root",
        "--train-splits",
        "--val-splits",
        "--classes",
        "--epochs",
        "--batch-size",
        "--lr",
        "--device",
        "--output",
        "--seed",
        "--resume",
        "--num-workers",
        "--loss-norm",
        "--init",
        "--decoder",
        "--on-bad-sample",
        "--procs",
    ):
        assert flag in out
    assert "synthetic" in run("--help").stdout


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    proc = run(
        "train",
        "--epochs",
        "1",
        "--synthetic-train-size",
        "32",
        "--synthetic-val-size",
        "8",
        "--batch-size",
        "16",
        "--num-workers",
        "0",
        "--no-progress",
        "--output",
        str(out),
    )
    assert proc.returncode == 0, proc.stderr
    return out, proc


def test_train_one_epoch(trained_run):
    out, proc = trained_run
    assert "voc07_map" in proc.stdout and "| mAP" in proc.stdout
    for name in ("best.pt", "last.pt", "metrics.csv", "config.json", "loss.png", "map.png"):
        assert (out / name).exists(), name
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert len(rows) == 1 and rows[0]["epoch"] == "1" and 0 <= float(rows[0]["voc07_map"]) <= 1


def test_eval_json_equals_training_metric(trained_run):
    out, _ = trained_run
    proc = run("eval", "--checkpoint", str(out / "best.pt"), "--json")
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads(proc.stdout)
    row = list(csv.DictReader(open(out / "metrics.csv")))[0]
    assert metrics["mAP"] == pytest.approx(float(row["voc07_map"]), abs=1e-9)
    table = run("eval", "--checkpoint", str(out / "best.pt"))
    assert table.returncode == 0 and "| mAP" in table.stdout


def test_eval_int8(trained_run):
    pytest.importorskip("torchao")
    out, _ = trained_run
    proc = run("eval", "--checkpoint", str(out / "best.pt"), "--int8", "16", "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    assert "int8 calibrated on 16 training images" in proc.stdout
    int8 = float(next(line for line in proc.stdout.splitlines() if line.startswith("| mAP")).split("|")[2])
    # the float32 mAP: what `ssdkit eval --json` gives (test_eval_json_equals_training_metric)
    fp32 = float(list(csv.DictReader(open(out / "metrics.csv")))[0]["voc07_map"])
    assert abs(int8 - fp32) < 0.05  # int8 rounding moves scores a little, not the ranking of most detections


def test_predict(trained_run, tmp_path):
    out, _ = trained_run
    img = tmp_path / "photo.png"
    write_png(torch.randint(0, 255, (3, 90, 160), dtype=torch.uint8), str(img))
    proc = run(
        "predict",
        "--checkpoint",
        str(out / "best.pt"),
        str(img),
        "--score-thresh",
        "0.0",
        "--output",
        str(tmp_path / "pred"),
    )
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout)
    assert res[0]["image"] == str(img) and os.path.exists(res[0]["picture"])
    for det in res[0]["detections"]:
        x1, y1, x2, y2 = det["box_xyxy"]
        assert 0 <= x1 <= x2 <= 160 and 0 <= y1 <= y2 <= 90
    # a bad file among good ones: reported on stderr and in the JSON, the others still detected, exit code 1
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG truncated")
    proc = run("predict", "--checkpoint", str(out / "best.pt"), str(bad), str(img), "--output", str(tmp_path / "p2"))
    assert proc.returncode == 1
    res = json.loads(proc.stdout)
    assert res[0]["image"] == str(bad) and "cannot decode image" in res[0]["error"]
    assert res[1]["image"] == str(img) and os.path.exists(res[1]["picture"])
    assert f"{bad}: cannot decode image" in proc.stderr and "1 of 2 images could not be read" in proc.stderr


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_train_and_eval_on_cuda(tmp_path):
    """The GPU path end to end: float16 autocast with a GradScaler, pinned batches, evaluation on the GPU."""
    out = tmp_path / "run"
    proc = run(
        "train", "--device", "cuda", "--epochs", "2", "--synthetic-train-size", "64", "--synthetic-val-size", "16",
        "--batch-size", "16", "--num-workers", "2", "--no-progress", "--output", str(out),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    config = json.load(open(out / "config.json"))
    assert str(config["device"]).startswith("cuda")
    maps = [float(r["voc07_map"]) for r in csv.DictReader(open(out / "metrics.csv"))]
    assert len(maps) == 2 and all(0 <= m <= 1 for m in maps)
    proc = run("eval", "--checkpoint", str(out / "best.pt"), "--device", "cuda", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["mAP"] == pytest.approx(max(maps), abs=0.01)  # cuDNN may pick other kernels


@pytest.mark.parametrize(
    "args,needle",
    [
        (["train", "--model", "ssd_999_nonsense"], "unknown model"),
        (["train", "--dataset", "voc", "--data-root", "/nonexistent/VOCdevkit"], "/nonexistent/VOCdevkit"),
        (["train", "--dataset", "voc"], "--data-root"),
        (["train", "--classes", "circle,hexagon", "--epochs", "1"], "hexagon"),
        (["train", "--procs", "3", "--batch-size", "16"], "--procs 3"),
        (["eval", "--checkpoint", "/nonexistent/best.pt"], "/nonexistent/best.pt"),
        (["predict", "--checkpoint", "/nonexistent/best.pt", "x.jpg"], "/nonexistent/best.pt"),
    ],
)
def test_user_errors_are_one_line_exit_2(args, needle):
    proc = run(*args, timeout=120)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    assert needle in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_bad_split_is_one_line(tmp_path):
    root = tmp_path / "VOCdevkit" / "VOC2007"
    (root / "ImageSets" / "Main").mkdir(parents=True)
    (root / "Annotations").mkdir()
    (root / "JPEGImages").mkdir()
    proc = run(
        "train",
        "--dataset",
        "voc",
        "--data-root",
        str(tmp_path / "VOCdevkit"),
        "--train-splits",
        "2007_trainvall",
        timeout=120,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "trainvall" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_amp_flag_is_three_way():
    from ssdkit.cli import build_parser, config_from_args

    parser = build_parser()
    assert config_from_args(parser.parse_args(["train"])).amp is None  # auto: the preset / device decides
    assert config_from_args(parser.parse_args(["train", "--amp"])).amp is True
    assert config_from_args(parser.parse_args(["train", "--no-amp"])).amp is False
    assert config_from_args(parser.parse_args(["train"])).batch_size is None  # from the data set's preset


def test_synthetic_fresh_flag_and_help_shows_the_presets(capsys):
    from ssdkit.cli import build_parser, config_from_args
    from ssdkit.engine.config import SYNTHETIC_RATES, preset

    parser = build_parser()
    assert config_from_args(parser.parse_args(["train"])).synthetic_fresh is True
    assert config_from_args(parser.parse_args(["train", "--no-synthetic-fresh"])).synthetic_fresh is False
    assert config_from_args(parser.parse_args(["train", "--match-iou", "0.5"])).match_iou == 0.5
    assert config_from_args(
        parser.parse_args(["train", "--synthetic-train-objects", "2,5"])
    ).synthetic_train_objects == [2, 5]
    assert config_from_args(parser.parse_args(["train"])).synthetic_train_objects is None  # resolved to the default
    assert config_from_args(parser.parse_args(["train", "--synthetic-dense-epochs", "3"])).synthetic_dense_epochs == 3
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    syn = preset("synthetic")
    for flag, key in (("--epochs", "epochs"), ("--batch-size", "batch_size")):
        assert f"synthetic: {syn[key]:g}" in text, flag  # help texts follow the presets, never stale numbers
    for name, rates in SYNTHETIC_RATES.items():  # --lr and --wd: per optimizer, left None for the preset to fill
        assert f"{name}: lr {rates['lr']:g}, wd {rates['wd']:g}, LR decay x{rates['lr_decay']:g}" in text, name
    assert config_from_args(parser.parse_args(["train"])).wd is None
    assert config_from_args(parser.parse_args(["train", "--wd", "1e-4"])).wd == 1e-4
    assert config_from_args(parser.parse_args(["train"])).lr_decay is None
    assert config_from_args(parser.parse_args(["train", "--lr-decay", "0.5"])).lr_decay == 0.5
    assert f"synthetic: {','.join(map(str, syn['lr_decay_epochs']))}" in text


@pytest.mark.parametrize("bad", ["image", "annotation"])
def test_on_bad_sample_error_is_one_line_exit_2_for_images_and_annotations(bad, tmp_path, capsys):
    """An undecodable image (met while training) and a malformed annotation (met while the split is read) stop
    the run alike: one line naming the file and the policy, exit code 2."""
    from test_engine_builders_data import make_folder

    from ssdkit.cli import main

    make_folder(tmp_path)
    split = tmp_path / "ImageSets" / "Main" / "trainbad.txt"
    if bad == "image":
        split.write_text("img0\nbad\nimg1\n")
        culprit = "bad.jpg"
    else:
        (tmp_path / "Annotations" / "img2.xml").write_text("<annotation><size><width>32</width>")
        split.write_text("img0\nimg2\n")
        culprit = "img2.xml"
    args = ["train", "--dataset", "voc-folder", "--data-root", str(tmp_path), "--model", "ssd_tiny_custom"]
    args += ["--train-splits", "trainbad", "--val-splits", "val", "--epochs", "1", "--batch-size", "2", "--procs", "1"]
    args += ["--num-workers", "0", "--no-progress", "--on-bad-sample", "error", "--output", str(tmp_path / "run")]
    code = main(args)
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "bad sample, stopping (--on-bad-sample error)" in err and culprit in err
