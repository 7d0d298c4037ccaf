"""examples/train_ssd_advanced.py prints the seed tutorial's deterministic numbers."""

import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def output():
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "examples", "train_ssd_advanced.py")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_num_positive(output):
    assert "batch-wise num_positive: 36.0" in output
    assert "sample-wise num_positive: [13.0, 23.0]" in output


def test_shapes(output):
    assert "class prediction shape: (2, 8732, 21)" in output
    assert re.search(r"predictor\S*weight Parameter \(84, 512, 3, 3\)", output)


def test_decoders_keep_the_tutorials_scores(output):
    """The tutorial's class scores (GluonCV's softmax values) come out of ssdkit's argmax and per-class decoders."""
    m = re.search(r"^argmax decoder keeps: \[\[(\d+)\]\] \[\[([0-9.e-]+)\]\]$", output, re.M)
    assert m and int(m.group(1)) == 3  # dog, the best foreground class
    assert float(m.group(2)) == pytest.approx(0.495571, abs=1e-6)
    m = re.search(r"^per-class decoder keeps: \[\[\[([^\]]+)\]\]\] \[\[\[([^\]]+)\]\]\]$", output, re.M)
    assert m
    assert [int(v) for v in m.group(1).split(",")] == [-1, 1, 2, 3, 4]  # apple (0.000101) is below 0.01
    scores = [float(v) for v in m.group(2).split(",")]
    assert scores == pytest.approx([0.0, 0.014965, 0.040679, 0.495571, 0.448411], abs=6e-5)  # printed rounded


def test_batch_and_sample_losses_relate(output):
    # sample-wise = batch-wise * 36 / [13, 23], for both the conf and the loc loss
    def values(label):
        return [float(v) for v in re.search(rf"{label}: \[([^\]]+)\]", output).group(1).split(",")]

    for kind in ("conf", "loc"):
        b = values(f"batch-wise norm {kind} loss")
        s = values(f"sample-wise norm {kind} loss")
        assert s[0] == pytest.approx(b[0] * 36 / 13, rel=1e-4)
        assert s[1] == pytest.approx(b[1] * 36 / 23, rel=1e-4)
