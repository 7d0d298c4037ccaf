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
