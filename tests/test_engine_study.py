"""engine/study.py: statistics on known numbers, the selection and report splits, the choice of the rate."""

import math
import statistics

import pytest

from ssdkit.engine.config import ConfigError, TrainConfig, resolve_config
from ssdkit.engine.study import (
    REPORT_SEED_OFFSET,
    SPLITS,
    choose_lr,
    mean_ci,
    paired_stats,
    split_config,
    split_indices,
    split_of_id,
    t_quantile_975,
    verdict,
)


def test_mean_ci_known_numbers():
    s = mean_ci([0.80, 0.82, 0.84, 0.86])
    # mean 0.83, sd sqrt(0.002 / 3), t(3) = 3.182
    sd = math.sqrt(0.002 / 3)
    assert s["n"] == 4 and s["mean"] == pytest.approx(0.83) and s["std"] == pytest.approx(sd)
    assert s["ci_low"] == pytest.approx(0.83 - 3.182 * sd / 2) and s["ci_high"] == pytest.approx(0.83 + 3.182 * sd / 2)
    one = mean_ci([0.5])
    assert one["mean"] == 0.5 and math.isnan(one["std"]) and math.isnan(one["ci_low"])
    with pytest.raises(ValueError):
        mean_ci([])


def test_paired_stats_known_numbers():
    better = [0.80, 0.82, 0.81]
    worse = [0.78, 0.79, 0.80]
    s = paired_stats(better, worse)
    # differences 0.02, 0.03, 0.01: mean 0.02, sd 0.01, t(2) = 4.303
    assert s["diff_mean"] == pytest.approx(0.02) and s["diff_std"] == pytest.approx(0.01)
    assert s["ci_low"] == pytest.approx(0.02 - 4.303 * 0.01 / math.sqrt(3))
    assert s["ci_high"] == pytest.approx(0.02 + 4.303 * 0.01 / math.sqrt(3))
    assert s["better_mean"] == pytest.approx(0.81) and s["worse_std"] == pytest.approx(0.01)
    assert verdict(s) == "same direction, not significant"
    assert verdict(paired_stats([0.9, 0.91, 0.92], [0.8, 0.8, 0.81])) == "holds (CI above 0)"
    assert verdict(paired_stats([0.7, 0.71, 0.7], [0.8, 0.8, 0.81])) == "reversed (CI below 0)"
    assert verdict(paired_stats([0.7, 0.70], [0.71, 0.72])) == "not supported"
    assert verdict(paired_stats([0.9], [0.1])) == "one seed: no CI"
    with pytest.raises(ValueError):
        paired_stats([0.1, 0.2], [0.1])


def test_t_quantiles():
    assert t_quantile_975(1) == 12.706 and t_quantile_975(30) == 2.042
    assert 1.96 < t_quantile_975(1000) < 1.963
    assert abs(t_quantile_975(31) - 2.0395) < 2e-3
    assert math.isnan(t_quantile_975(0))


def test_id_splits_are_disjoint_stable_and_about_half_each():
    ids = [f"VOC2007/{i:06d}" for i in range(2000)]
    sel, rep = split_indices(ids, "selection"), split_indices(ids, "report")
    assert not set(sel) & set(rep) and sorted(sel + rep) == list(range(len(ids)))
    assert 900 < len(sel) < 1100
    assert split_indices(list(reversed(ids)), "report") == sorted(len(ids) - 1 - i for i in rep)
    assert {split_of_id(i) for i in ids} == set(SPLITS) and split_of_id(17) == split_of_id("17")
    with pytest.raises(ValueError):
        split_indices(ids, "test")


def test_synthetic_report_split_is_another_generator_seed_of_the_same_size():
    from ssdkit.engine.builders import build_datasets

    cfg = resolve_config(TrainConfig(synthetic_val_size=3, synthetic_train_size=2))
    assert split_config(cfg, "selection") is cfg
    report = split_config(cfg, "report")
    assert report.seed == cfg.seed + REPORT_SEED_OFFSET and report.synthetic_val_size == cfg.synthetic_val_size
    _, sel_set, _ = build_datasets(cfg, 64, train=False)
    _, rep_set, _ = build_datasets(report, 64, train=False)
    assert len(sel_set) == len(rep_set) == 3
    for i in range(3):
        assert not (sel_set[i][0] == rep_set[i][0]).all()
    # no seed of a study (training or selection split, seeds 233-332) makes the report images of another
    seeds = range(233, 333)
    used = set(seeds) | {s + 1_000_003 for s in seeds}
    assert not used & {s + REPORT_SEED_OFFSET + 1_000_003 for s in seeds}
    with pytest.raises(ConfigError, match="COCO"):
        split_config(TrainConfig(dataset="coco"), "report")


def test_choose_lr_reads_the_selection_numbers_only():
    selection = {0.04: [0.70, 0.72], 0.08: [0.80, 0.78], 0.16: [0.79, 0.79]}
    assert choose_lr(selection) == 0.08
    assert choose_lr({0.1: [0.5], 0.05: [0.5]}) == 0.05  # a tie: the smaller rate
    assert choose_lr({0.1: [statistics.fmean([0.2, 0.4])]}) == 0.1
    with pytest.raises(ValueError):
        choose_lr({})
