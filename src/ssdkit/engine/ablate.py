"""``ssdkit ablate``: the seed tutorial's three tips measured with paired runs, each arm at its best learning rate.

Each tip has two arms that differ in one switch only; runs of the same seed share data, seed and every other
setting. With ``lr_sweep`` every arm trains at every learning rate and seed; each arm's rate (``best_lr``) is the
one with the best mean mAP on the *selection* split, and the arms are compared by their mAP on the disjoint
*report* split at that rate, paired by seed (see :mod:`.study`). The decoder tip trains nothing of its own: it
evaluates the default runs both ways. Runs live in ``run-<loss_norm>-<init>-lr<lr>-seed<seed>-<config hash>``
folders and are reused when the study runs again, so it can run in parts (a tip, a seed or a rate at a time).
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import os
import statistics
from dataclasses import dataclass
from typing import Callable, Sequence

from .config import INITS, ConfigError, TrainConfig, resolve_config
from .study import choose_lr, evaluate_split, mean_ci, paired_stats, t_quantile_975, verdict

__all__ = [
    "TIPS",
    "Tip",
    "paired_stats",
    "t_quantile_975",
    "arm_configs",
    "run_ablation",
    "markdown_table",
    "ABLATE_SYNTHETIC_DEFAULTS",
    "StudyStopped",
]


@dataclass(frozen=True)
class Tip:
    name: str
    field: str
    better: str  # the arm the seed tutorial says wins
    worse: str
    claim: str


TIPS: dict[str, Tip] = {
    "loss-norm": Tip(
        "loss-norm", "loss_norm", "batch", "sample", "batch-wise normalization beats sample-wise by 1-2 mAP"
    ),
    "init": Tip(
        "init",
        "init",
        "xavier_gaussian_out",
        "uniform",
        "Xavier (gaussian, out, magnitude 2) beats Uniform(0.07) for the added layers by about 1 mAP",
    ),
    "decoder": Tip("decoder", "decoder", "per_class", "argmax", "per-class decoding beats argmax by 0.5-0.8 mAP"),
}

# the budget of an ablation on the built-in data set, applied where the user set nothing: the default recipe
# (4000 new images an epoch, 500 validation images) for 8 of its 16 epochs, decays scaled to epochs 6 and 7; no time
# budget: the paired arms must train the same images. The model is the one the published study
# (docs/tips.md) trained, the 64-channel stem, so that its finished runs stay the runs `ssdkit ablate` would train.
# GluonCV's loss (every positive anchor weighed alike) and optimizer (SGD, at the synthetic set's SGD rates unless
# --lr / --lr-sweep say otherwise), whose tips the study measures, not the tiny model's or the synthetic set's default
ABLATE_SYNTHETIC_DEFAULTS = dict(
    epochs=8, time_budget=0, model="ssd_tiny_synthetic", positive_weights="anchor", optimizer="sgd"
)


def arm_configs(
    base: TrainConfig, tip: Tip, seed_index: int, lr: float | None = None, arms: Sequence[str] | None = None
) -> dict[str, TrainConfig]:
    """The resolved configs of ``arms`` (default: the tip's two) for one seed and learning rate, identical but
    for the tip's field. The decoder tip's arms all train the default config (the decoder acts at evaluation)."""
    seeded = dataclasses.replace(base, seed=base.seed + seed_index, resume=None, output=None, progress=False)
    if lr is not None:
        seeded = dataclasses.replace(seeded, lr=lr)
    arms = list(arms or (tip.better, tip.worse))
    if tip.name == "decoder":
        train_cfg = resolve_config(dataclasses.replace(seeded, decoder="per_class"))
        return {arm: train_cfg for arm in arms}
    return {arm: resolve_config(dataclasses.replace(seeded, **{tip.field: arm})) for arm in arms}


# Settings that leave a finished run's weights as they are when at these values: checkpoint cadence, the guard's
# patience (a finished run never reached it), no budget, eager mode, every synthetic image at full size (as every
# run before --synthetic-dense-scale). Left out of the key at these values so that a study's runs keep their folders
# when such an option is added or set to its default.
_KEY_NEUTRAL = {
    "checkpoint_steps": 0,
    "max_bad_steps": 10,
    "time_budget": 0,
    "compile": False,
    "synthetic_dense_scale": 1.0,
    "positive_weights": "anchor",
}


def config_key(cfg: TrainConfig) -> str:
    """A hash of every setting of ``cfg`` that changes what the run trains (10 hex digits)."""
    d = cfg.to_dict()
    for k in ("output", "resume", "progress", "num_workers", "device", "log_interval", "decoder"):
        d.pop(k, None)
    for k, neutral in _KEY_NEUTRAL.items():
        if d.get(k) == neutral:
            d.pop(k)
    return hashlib.sha1(json.dumps(d, sort_keys=True).encode()).hexdigest()[:10]


def run_folder(folder: str, cfg: TrainConfig) -> str:
    """The run folder of ``cfg`` (one per loss norm, init, lr and seed; the hash covers every other setting)."""
    return os.path.join(
        folder, f"run-{cfg.loss_norm}-{cfg.init or 'default'}-lr{cfg.lr:g}-seed{cfg.seed}-{config_key(cfg)}"
    )


class StudyStopped(Exception):
    """A signal stopped one of the study's runs; its state is in the run's ``last.pt``."""


def _train_or_reuse(cfg: TrainConfig, run: str, say: Callable[[str], None]) -> str:
    """Train ``cfg`` into ``run`` unless a finished run is there (an interrupted one resumes from ``last.pt``)."""
    from .trainer import fit

    done = os.path.join(run, "finished.json")
    if os.path.exists(done):
        say(f"  reusing finished run {run}")
        return run
    last = os.path.join(run, "last.pt")
    cfg = dataclasses.replace(cfg, output=run, resume=last if os.path.exists(last) else None)
    try:
        result = fit(cfg, say=lambda m: None)
    except FloatingPointError as err:  # a diverged arm is a result too: it scores 0 and is reported
        os.makedirs(run, exist_ok=True)
        with open(done, "w") as f:
            json.dump({"diverged": str(err)}, f)
        say(f"  {run} diverged: {err}; counted as mAP 0")
        return run
    if result.stopped:  # not finished: the next command resumes it from last.pt
        raise StudyStopped(f"{run} stopped by {result.stopped}; run the same command again to resume it")
    with open(done, "w") as f:
        json.dump({"best_map": result.best_map, "last_map": result.last_map, "seconds": result.seconds}, f)
    say(f"  trained {run}: final mAP {result.last_map:.4f} ({result.seconds / 60:.1f} min)")
    return run


def _diverged(run: str) -> bool:
    done = os.path.join(run, "finished.json")
    if not os.path.exists(done):
        return False
    with open(done) as f:
        return "diverged" in json.load(f)


def _split_map(run: str, split: str, decoder: str) -> float:
    """The final checkpoint's mAP on ``split`` with ``decoder`` (cached in the run folder; 0 if it diverged)."""
    if _diverged(run):
        return 0.0
    cache = os.path.join(run, f"eval_{split}_{decoder}.json")
    if os.path.exists(cache):
        with open(cache) as f:
            return float(json.load(f)["map"])
    value = evaluate_split(os.path.join(run, "last.pt"), split, decoder)
    with open(cache, "w") as f:
        json.dump({"map": value}, f)
    return value


def _pct(stats: dict, key: str) -> str:
    return f"{100 * stats[key]:.2f}"


def markdown_table(rows: list[dict]) -> str:
    """The paired comparison of each tip (report split, each arm at its best_lr) and every arm's grid."""
    lines = [
        "| tip | arm (claimed better) @ best_lr | report mAP mean ± sd | arm (claimed worse) @ best_lr | "
        "report mAP mean ± sd | paired diff [95% CI] | seed's claim |",
        "|---|---|---|---|---|---|---|",
    ]

    def arm(r: dict, key: str) -> str:
        failed = r.get(f"diverged_{key}", 0)
        note = f" ({failed} of {r['n']} diverged)" if failed else ""
        return f"{r[key]} @ {r[f'{key}_lr']:g}{note}"

    for r in rows:
        lines.append(
            f"| {r['tip']} | {arm(r, 'better')} | {_pct(r, 'better_mean')} ± {_pct(r, 'better_std')} | "
            f"{arm(r, 'worse')} | {_pct(r, 'worse_mean')} ± {_pct(r, 'worse_std')} | "
            f"{100 * r['diff_mean']:+.2f} [{100 * r['ci_low']:+.2f}, {100 * r['ci_high']:+.2f}] | {r['verdict']} |"
        )
    lines += [
        "",
        "| tip | arm | selection mAP by lr (mean over seeds) | best_lr | report mAP at best_lr: mean "
        "[95% CI] | per seed |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        for a in r["arms"]:
            by_lr = ", ".join(f"{lr:g}: {100 * m:.2f}" for lr, m in zip(a["lrs"], a["selection_by_lr"]))
            s = a["report"]
            lines.append(
                f"| {r['tip']} | {a['arm']} | {by_lr} | {a['best_lr']:g} | {_pct(s, 'mean')} "
                f"[{_pct(s, 'ci_low')}, {_pct(s, 'ci_high')}] | "
                f"{', '.join(f'{100 * m:.2f}' for m in a['report_maps'])} |"
            )
    lines += [
        "",
        "mAP in percent (final VOC07 mAP of each run); a diverged run (NaN loss) counts as 0. Each arm's "
        "best_lr is chosen on the selection split; the report split gives the compared numbers.",
    ]
    return "\n".join(lines)


def _plot(rows: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(rows) + 1, figsize=(4.2 * (len(rows) + 1), 4), squeeze=False)
    for ax, r in zip(axes[0], rows):
        for a in r["arms"]:
            sds = [100 * (statistics.stdev(v) if len(v) > 1 else 0) for v in a["selection_maps"]]
            ax.errorbar(
                a["lrs"],
                [100 * m for m in a["selection_by_lr"]],
                yerr=sds,
                marker="o",
                capsize=3,
                label=f"{a['arm']} (best {a['best_lr']:g})",
            )
        ax.set_xscale("log")
        ax.set_xlabel("learning rate")
        ax.set_ylabel("selection-split mAP (%)")
        ax.set_title(f"{r['tip']}: mean ± sd over seeds", fontsize=9)
        ax.legend(fontsize=7)
    ax = axes[0][-1]
    diffs = [100 * r["diff_mean"] for r in rows]
    err = [
        [100 * (r["diff_mean"] - r["ci_low"]) if r["n"] > 1 else 0 for r in rows],
        [100 * (r["ci_high"] - r["diff_mean"]) if r["n"] > 1 else 0 for r in rows],
    ]
    ax.errorbar(range(len(rows)), diffs, yerr=err, fmt="o", capsize=6)
    ax.axhline(0, color="gray", lw=0.8)
    ax.set_xticks(range(len(rows)), [r["tip"] for r in rows])
    ax.set_ylabel("claimed better - worse (report mAP points)")
    ax.set_title("paired difference at best_lr, 95% CI", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _study_base(base: TrainConfig) -> TrainConfig:
    if base.dataset == "synthetic":
        defaults = TrainConfig()
        for k, v in ABLATE_SYNTHETIC_DEFAULTS.items():
            if getattr(base, k) in (None, getattr(defaults, k)):
                base = dataclasses.replace(base, **{k: v})
    if base.val_interval is None and base.epochs is not None:  # evaluate once, at the end
        base = dataclasses.replace(base, val_interval=base.epochs)
    return base


def _run_tip(
    base: TrainConfig,
    t: Tip,
    seeds: int,
    lrs: Sequence[float],
    extra: Sequence[str],
    folder: str,
    grid: list[dict],
    say: Callable[[str], None],
) -> dict:
    """Train and score every arm of ``t`` at every rate and seed; returns the tip's row, appends to ``grid``."""

    def score(arm_names: Sequence[str], rates: Sequence[float]) -> dict[str, dict]:
        out = {
            arm: {"arm": arm, "lrs": list(rates), "selection_maps": [], "report_by_lr": {}, "diverged": {}}
            for arm in arm_names
        }
        for lr in rates:
            for s in range(seeds):
                cfgs = arm_configs(base, t, s, lr, arm_names)
                for arm in arm_names:
                    run = _train_or_reuse(cfgs[arm], run_folder(folder, cfgs[arm]), say)
                    decoder = arm if t.name == "decoder" else "per_class"
                    grid.append(
                        {
                            "tip": t.name,
                            "arm": arm,
                            "lr": lr,
                            "seed": cfgs[arm].seed,
                            "selection_map": _split_map(run, "selection", decoder),
                            "report_map": _split_map(run, "report", decoder),
                            "diverged": _diverged(run),
                            "run": os.path.basename(run),
                        }
                    )
            for arm in arm_names:
                cells = [g for g in grid if g["tip"] == t.name and g["arm"] == arm and g["lr"] == lr]
                out[arm]["selection_maps"].append([g["selection_map"] for g in cells])
                out[arm]["report_by_lr"][lr] = [g["report_map"] for g in cells]
                out[arm]["diverged"][lr] = sum(g["diverged"] for g in cells)
        for a in out.values():  # the choice reads the selection split only
            a["best_lr"] = choose_lr(dict(zip(a["lrs"], a["selection_maps"])))
            a["selection_by_lr"] = [statistics.fmean(v) for v in a["selection_maps"]]
            a["report_maps"] = a["report_by_lr"][a["best_lr"]]
            a["report"] = mean_ci(a["report_maps"])
        return out

    arms = score((t.better, t.worse), lrs)
    if extra:  # more arms, at the rate of the best swept arm
        top = max(arms.values(), key=lambda a: max(a["selection_by_lr"]))
        say(f"  tip {t.name}: {', '.join(extra)} at lr {top['best_lr']:g} (best_lr of {top['arm']})")
        arms.update(score(extra, [top["best_lr"]]))
    better, worse = arms[t.better], arms[t.worse]
    stats = paired_stats(better["report_maps"], worse["report_maps"])
    for a in arms.values():
        a["diverged_at_best_lr"] = a["diverged"][a["best_lr"]]
        a.pop("report_by_lr")
        a["diverged"] = {f"{lr:g}": n for lr, n in a["diverged"].items()}
    return {
        "tip": t.name,
        "better": t.better,
        "worse": t.worse,
        "better_lr": better["best_lr"],
        "worse_lr": worse["best_lr"],
        **stats,
        "verdict": verdict(stats),
        "diverged_better": better["diverged_at_best_lr"],
        "diverged_worse": worse["diverged_at_best_lr"],
        "claim": t.claim,
        "better_maps": better["report_maps"],
        "worse_maps": worse["report_maps"],
        "arms": list(arms.values()),
    }


def run_ablation(
    base: TrainConfig,
    tip: str = "all",
    seeds: int = 3,
    lr_sweep: Sequence[float] | None = None,
    extra_inits: Sequence[str] = (),
    say: Callable[[str], None] = print,
) -> list[dict]:
    """Train and evaluate the arms of ``tip`` (one, a comma-separated list, or ``"all"``) over ``seeds`` paired
    seeds and the rates of ``lr_sweep`` (default: the recipe's rate); ``extra_inits`` adds init schemes to the init
    tip at the rate of its best arm. Writes ``ablation.md``, ``ablation.json`` (tip rows and the whole grid),
    ``ablation.csv``, ``ablation_grid.csv`` and ``ablation.png`` into the output folder."""
    if seeds < 1:
        raise ConfigError(f"--seeds must be at least 1, got {seeds}")
    if lr_sweep is not None and (not lr_sweep or any(not lr > 0 for lr in lr_sweep)):
        raise ConfigError(f"--lr-sweep must list positive learning rates, got {list(lr_sweep)}")
    tips = list(TIPS) if tip == "all" else [t.strip() for t in tip.split(",") if t.strip()]
    if not tips or any(t not in TIPS for t in tips):
        raise ConfigError(f"--tip must be all or a comma-separated list of {', '.join(TIPS)}, got {tip!r}")
    unknown = [i for i in extra_inits if i not in INITS or i in (TIPS["init"].better, TIPS["init"].worse)]
    if unknown:
        raise ConfigError(f"--extra-inits: {', '.join(unknown)} not among {', '.join(INITS)} (or already an arm)")
    if extra_inits and "init" not in tips:
        raise ConfigError("--extra-inits needs the init tip (--tip init or --tip all)")
    base = _study_base(base)
    lrs = sorted(set(lr_sweep)) if lr_sweep is not None else [resolve_config(base).lr]
    folder = base.output or os.path.join("runs", f"ablate-{base.dataset}")
    os.makedirs(folder, exist_ok=True)
    rows, grid = [], []
    for name in tips:
        t = TIPS[name]
        say(f"tip {name}: {t.claim}")
        rows.append(_run_tip(base, t, seeds, lrs, list(extra_inits) if name == "init" else [], folder, grid, say))
    table = markdown_table(rows)
    say(table)
    with open(os.path.join(folder, "ablation.md"), "w") as f:
        f.write(table + "\n")
    with open(os.path.join(folder, "ablation.json"), "w") as f:
        json.dump({"rows": rows, "grid": grid}, f, indent=2)
    _write_csv(
        os.path.join(folder, "ablation.csv"),
        [{k: v for k, v in r.items() if not k.endswith("_maps") and k != "arms"} for r in rows],
    )
    _write_csv(os.path.join(folder, "ablation_grid.csv"), grid)
    _plot(rows, os.path.join(folder, "ablation.png"))
    say(f"results in {folder}/ablation.{{md,csv,json,png}} and ablation_grid.csv")
    return rows


def _write_csv(path: str, rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
