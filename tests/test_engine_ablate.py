import dataclasses
import math

import pytest

from ssdkit.engine.ablate import TIPS, arm_configs, paired_stats, t_quantile_975, verdict
from ssdkit.engine.config import TrainConfig


def test_paired_stats_known_numbers():
    better = [0.80, 0.82, 0.81]
    worse = [0.78, 0.79, 0.80]
    s = paired_stats(better, worse)
    # differences 0.02, 0.03, 0.01: mean 0.02, sd 0.01, t(2) = 4.303 -> half width 0.024843
    assert s["diff_mean"] == pytest.approx(0.02)
    assert s["diff_std"] == pytest.approx(0.01)
    assert s["ci_low"] == pytest.approx(0.02 - 4.303 * 0.01 / math.sqrt(3))
    assert s["ci_high"] == pytest.approx(0.02 + 4.303 * 0.01 / math.sqrt(3))
    assert s["better_mean"] == pytest.approx(0.81) and s["worse_std"] == pytest.approx(0.01)
    assert verdict(s) == "same direction, not significant"
    assert verdict(paired_stats([0.9, 0.91, 0.92], [0.8, 0.8, 0.81])) == "holds (CI above 0)"
    assert verdict(paired_stats([0.7, 0.71, 0.7], [0.8, 0.8, 0.81])) == "reversed (CI below 0)"
    one = paired_stats([0.5], [0.4])
    assert one["diff_mean"] == pytest.approx(0.1) and math.isnan(one["ci_low"])


def test_t_quantiles():
    assert t_quantile_975(1) == 12.706 and t_quantile_975(30) == 2.042
    assert 1.96 < t_quantile_975(1000) < 1.963
    assert abs(t_quantile_975(31) - 2.0395) < 2e-3


@pytest.mark.parametrize("tip", ["loss-norm", "init", "decoder"])
def test_arms_differ_only_in_their_switch(tip):
    base = TrainConfig(epochs=3, synthetic_train_size=100)
    arms = arm_configs(base, TIPS[tip], seed_index=1)
    a, b = (arms[TIPS[tip].better].to_dict(), arms[TIPS[tip].worse].to_dict())
    diff = {k for k in a if a[k] != b[k]}
    assert diff == (set() if tip == "decoder" else {TIPS[tip].field})
    assert a["seed"] == base.seed + 1
    # every other seed gives other runs, the same pairing
    other = arm_configs(base, TIPS[tip], seed_index=2)[TIPS[tip].better]
    assert other.seed == base.seed + 2 and dataclasses.replace(other, seed=a["seed"]).to_dict() == a


def test_ablate_command_tiny_budget(tmp_path):
    """`ssdkit ablate --tip all` end to end on a tiny budget; a rerun reuses every finished arm."""
    import json
    import subprocess
    import sys

    out = tmp_path / "abl"
    cmd = [sys.executable, "-m", "ssdkit.cli", "ablate", "--tip", "all", "--seeds", "2", "--epochs", "1",
           "--synthetic-train-size", "16", "--synthetic-val-size", "8", "--batch-size", "8", "--num-workers", "0",
           "--output", str(out)]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr
    for name in ("ablation.md", "ablation.csv", "ablation.json", "ablation.png"):
        assert (out / name).exists(), name
    rows = json.loads((out / "ablation.json").read_text())
    assert [r["tip"] for r in rows] == ["loss-norm", "init", "decoder"]
    for r in rows:
        assert r["n"] == 2 and len(r["better_maps"]) == 2
        assert r["diff_mean"] == pytest.approx(sum(b - w for b, w in zip(r["better_maps"], r["worse_maps"])) / 2)
    # 4 distinct trainings per seed pair: batch(=default, shared with the decoder tip), sample, xavier, uniform
    assert len([p for p in out.iterdir() if p.name.startswith("run-")]) == 8
    assert "| loss-norm |" in first.stdout
    second = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0 and "trained" not in second.stdout and "reusing" in second.stdout
    assert json.loads((out / "ablation.json").read_text()) == rows


def test_diverged_arm_counts_as_zero_and_is_reported(tmp_path):
    import json

    from ssdkit.engine.ablate import _final_map, markdown_table

    run = tmp_path / "run-x"
    run.mkdir()
    (run / "finished.json").write_text(json.dumps({"diverged": "the loss became nan"}))
    assert _final_map(str(run), "per_class", print) == 0.0
    row = {"tip": "loss-norm", "better": "batch", "worse": "sample", **paired_stats([0.2, 0.3], [0.0, 0.1]),
           "verdict": "x", "diverged_better": 0, "diverged_worse": 1}
    assert "sample (1 of 2 diverged)" in markdown_table([row])
