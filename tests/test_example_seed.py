"""examples/train_ssd_advanced.py prints the seed tutorial's deterministic numbers."""
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def output():
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "examples", "train_ssd_advanced.py")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_num_positive(output):
    assert "batch-wise num_positive: 36.0" in output
    assert "sample-wise num_positive: [13.0, 23.0]" in output


def test_shapes(output):
    assert "class prediction shape: (2, 8732, 21)" in output
    assert re.search(r"predictor\S*weight Parameter \(84, 512, 3, 3\)", output)


def test_softmax_values(output):
    expected = {"bg": 0.000274, "apple": 0.000101, "orange": 0.014965, "person": 0.040679, "dog": 0.495571,
                "cat": 0.448411}
    for name, value in expected.items():
        m = re.search(rf"^{name} ([0-9.e-]+)$", output, re.M)
        assert m, name
        assert float(m.group(1)) == pytest.approx(value, abs=1e-6)


def test_batch_and_sample_losses_relate(output):
    # sample-wise = batch-wise * 36 / [13, 23], for both the conf and the loc loss
    def values(label):
        return [float(v) for v in re.search(rf"{label}: \[([^\]]+)\]", output).group(1).split(",")]
    for kind in ("conf", "loc"):
        b = values(f"batch-wise norm {kind} loss")
        s = values(f"sample-wise norm {kind} loss")
        assert s[0] == pytest.approx(b[0] * 36 / 13, rel=1e-4)
        assert s[1] == pytest.approx(b[1] * 36 / 23, rel=1e-4)
