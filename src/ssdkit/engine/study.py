"""The statistics and the data splits of ``ssdkit ablate``.

Statistics: mean, standard deviation and a 95% Student-t confidence interval, for one arm over seeds and for the
paired difference of two arms. Splits: every trained run is scored on two disjoint sets of validation images.
The *selection* split chooses each arm's learning rate; the *report* split gives the numbers the arms are compared
by, so the choice never sees them.

- Built-in synthetic data: the selection split is the run's own validation split (generator seed
  ``seed + 1_000_003``); the report split is a validation split of the same size from another generator seed
  (``seed + REPORT_SEED_OFFSET + 1_000_003``), whose images no training or selection split of any seed shares.
- VOC-format data (``voc``, ``voc-folder``): the validation images are split by their id, ``image_id`` in the
  selection split when the first byte of ``sha1(str(image_id))`` is even, else in the report split (about half
  each, stable across machines and runs).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import statistics
from typing import Mapping, Sequence

from .config import ConfigError, TrainConfig

__all__ = [
    "SPLITS",
    "REPORT_SEED_OFFSET",
    "t_quantile_975",
    "mean_ci",
    "paired_stats",
    "verdict",
    "split_of_id",
    "split_indices",
    "split_config",
    "choose_lr",
    "evaluate_split",
]

SPLITS = ("selection", "report")
REPORT_SEED_OFFSET = 2_000_003

# two-sided 95% Student t quantiles, df = 1..30
_T975 = (
    12.706,
    4.303,
    3.182,
    2.776,
    2.571,
    2.447,
    2.365,
    2.306,
    2.262,
    2.228,
    2.201,
    2.179,
    2.160,
    2.145,
    2.131,
    2.120,
    2.110,
    2.101,
    2.093,
    2.086,
    2.080,
    2.074,
    2.069,
    2.064,
    2.060,
    2.056,
    2.052,
    2.048,
    2.045,
    2.042,
)


def t_quantile_975(df: int) -> float:
    """0.975 quantile of Student's t with ``df`` degrees of freedom (table to 30, then a series expansion)."""
    if df < 1:
        return float("nan")
    if df <= len(_T975):
        return _T975[df - 1]
    z = 1.959964
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


def mean_ci(values: Sequence[float]) -> dict[str, float]:
    """``n``, ``mean``, ``std`` (sample sd) and the 95% CI of the mean (``ci_low``, ``ci_high``; nan for n = 1)."""
    if not values:
        raise ValueError("mean_ci needs at least one value")
    n = len(values)
    mean = statistics.fmean(values)
    sd = statistics.stdev(values) if n > 1 else float("nan")
    half = t_quantile_975(n - 1) * sd / math.sqrt(n) if n > 1 else float("nan")
    return {"n": n, "mean": mean, "std": sd, "ci_low": mean - half, "ci_high": mean + half}


def paired_stats(better: Sequence[float], worse: Sequence[float]) -> dict[str, float]:
    """Mean and standard deviation of each arm, and the paired difference ``better - worse`` with a 95% CI."""
    if len(better) != len(worse) or not better:
        raise ValueError("paired_stats needs two equally long, non-empty lists")
    b, w = mean_ci(better), mean_ci(worse)
    d = mean_ci([x - y for x, y in zip(better, worse)])
    return {
        "n": d["n"],
        "better_mean": b["mean"],
        "better_std": b["std"],
        "worse_mean": w["mean"],
        "worse_std": w["std"],
        "diff_mean": d["mean"],
        "diff_std": d["std"],
        "ci_low": d["ci_low"],
        "ci_high": d["ci_high"],
    }


def verdict(stats: Mapping[str, float]) -> str:
    """The seed tutorial's claim ("better" wins) against the paired difference's CI."""
    if stats.get("n", 2) < 2:
        return "one seed: no CI"
    if not math.isnan(stats["ci_low"]) and stats["ci_low"] > 0:
        return "holds (CI above 0)"
    if not math.isnan(stats["ci_high"]) and stats["ci_high"] < 0:
        return "reversed (CI below 0)"
    if stats["diff_mean"] > 0:
        return "same direction, not significant"
    return "not supported"


def split_of_id(image_id) -> str:
    """``"selection"`` or ``"report"`` for a validation image of VOC-format data, from a hash of its id."""
    return SPLITS[hashlib.sha1(str(image_id).encode()).digest()[0] % 2]


def split_indices(image_ids: Sequence, split: str) -> list[int]:
    """Positions of the images of ``split`` in ``image_ids``."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return [i for i, image_id in enumerate(image_ids) if split_of_id(image_id) == split]


def split_config(cfg: TrainConfig, split: str) -> TrainConfig:
    """The config whose validation split holds ``split``'s images (for synthetic data: its generator seed)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if cfg.dataset == "coco":
        raise ConfigError(
            "ssdkit ablate splits the validation images of synthetic, voc and voc-folder data only "
            "(COCO's metric scores every annotated image)"
        )
    if cfg.dataset == "synthetic" and split == "report":
        return dataclasses.replace(cfg, seed=cfg.seed + REPORT_SEED_OFFSET)
    return cfg


def choose_lr(selection: Mapping[float, Sequence[float]]) -> float:
    """The learning rate with the highest mean selection-split mAP over seeds (ties: the smaller rate).

    ``selection`` maps each rate to its runs' selection-split mAPs; nothing of the report split enters."""
    if not selection:
        raise ValueError("choose_lr needs at least one learning rate")
    return max(sorted(selection), key=lambda lr: (statistics.fmean(selection[lr]), -lr))


def evaluate_split(checkpoint: str, split: str, decoder: str, device: str = "auto") -> float:
    """mAP of ``checkpoint`` on ``split`` of its data set's validation images with ``decoder``."""
    from torch.utils.data import Subset

    from .builders import build_datasets, build_loader, build_metric, select_device
    from .config import resolve_config
    from .evaluation import load_trained_model
    from .trainer import evaluate

    dev = select_device(device)
    net, cfg, ckpt = load_trained_model(checkpoint, dev, decoder)
    cfg = split_config(resolve_config(dataclasses.replace(cfg, num_workers=0, device=device, resume=None)), split)
    data_shape = int(ckpt.get("data_shape") or cfg.data_shape or net.data_shape)
    _, val_set, classes = build_datasets(cfg, data_shape, train=False, val=True)
    if cfg.dataset != "synthetic":
        val_set = Subset(val_set, split_indices(val_set.image_ids, split))
    loader = build_loader(val_set, cfg, train=False)
    metric = build_metric(cfg, classes, val_set, data_shape)
    _, values = evaluate(net, loader, metric, dev, decoder=decoder)
    return float(values[-1])
