import dataclasses
import json
import os

import pytest

from ssdkit.engine import ablate
from ssdkit.engine.ablate import TIPS, arm_configs, markdown_table, run_ablation
from ssdkit.engine.config import ConfigError, TrainConfig
from ssdkit.engine.study import paired_stats


@pytest.mark.parametrize("tip", ["loss-norm", "init", "decoder"])
def test_arms_differ_only_in_their_switch(tip):
    base = TrainConfig(epochs=3, synthetic_train_size=100)
    arms = arm_configs(base, TIPS[tip], seed_index=1, lr=0.02)
    a, b = (arms[TIPS[tip].better].to_dict(), arms[TIPS[tip].worse].to_dict())
    diff = {k for k in a if a[k] != b[k]}
    assert diff == (set() if tip == "decoder" else {TIPS[tip].field})
    assert a["seed"] == base.seed + 1 and a["lr"] == 0.02
    # every other seed gives other runs, the same pairing
    other = arm_configs(base, TIPS[tip], seed_index=2, lr=0.02)[TIPS[tip].better]
    assert other.seed == base.seed + 2 and dataclasses.replace(other, seed=a["seed"]).to_dict() == a


def _fake_study(monkeypatch, tmp_path, selection, report):
    """run_ablation with training and evaluation replaced: ``selection``/``report`` map (arm, lr) -> mAP."""

    def train(cfg, run, say):
        os.makedirs(run, exist_ok=True)
        with open(os.path.join(run, "arm.json"), "w") as f:
            json.dump({"arm": cfg.loss_norm, "lr": cfg.lr, "seed": cfg.seed}, f)
        return run

    def split_map(run, split, decoder):
        with open(os.path.join(run, "arm.json")) as f:
            r = json.load(f)
        return (selection if split == "selection" else report)[(r["arm"], r["lr"])] + 0.001 * (r["seed"] - 233)

    monkeypatch.setattr(ablate, "_train_or_reuse", train)
    monkeypatch.setattr(ablate, "_split_map", split_map)
    monkeypatch.setattr(ablate, "_plot", lambda rows, path: None)
    return run_ablation(
        TrainConfig(output=str(tmp_path)), tip="loss-norm", seeds=3, lr_sweep=[0.16, 0.04, 0.08], say=lambda m: None
    )


def test_each_arm_is_chosen_on_the_selection_split_and_judged_on_the_report_split(monkeypatch, tmp_path):
    # the report split would favour other rates: the choice must not follow it
    selection = {
        ("batch", 0.04): 0.5,
        ("batch", 0.08): 0.8,
        ("batch", 0.16): 0.6,
        ("sample", 0.04): 0.7,
        ("sample", 0.08): 0.4,
        ("sample", 0.16): 0.3,
    }
    report = {
        ("batch", 0.04): 0.9,
        ("batch", 0.08): 0.2,
        ("batch", 0.16): 0.9,
        ("sample", 0.04): 0.1,
        ("sample", 0.08): 0.9,
        ("sample", 0.16): 0.9,
    }
    [row] = _fake_study(monkeypatch, tmp_path, selection, report)
    assert row["better_lr"] == 0.08 and row["worse_lr"] == 0.04
    assert row["better_maps"] == pytest.approx([0.2, 0.201, 0.202])
    assert row["worse_maps"] == pytest.approx([0.1, 0.101, 0.102])
    assert row["diff_mean"] == pytest.approx(0.1) and row["verdict"] == "holds (CI above 0)"
    saved = json.loads((tmp_path / "ablation.json").read_text())
    assert len(saved["grid"]) == 2 * 3 * 3  # every arm at every rate and seed
    assert {(g["arm"], g["lr"]) for g in saved["grid"]} == set(selection)
    lines = (tmp_path / "ablation_grid.csv").read_text().splitlines()
    assert lines[0].startswith("tip,arm,lr,seed,selection_map,report_map") and len(lines) == 19
    assert "batch @ 0.08" in (tmp_path / "ablation.md").read_text()


def test_bad_sweeps_are_one_line_errors(tmp_path):
    base = TrainConfig(output=str(tmp_path))
    with pytest.raises(ConfigError, match="--lr-sweep"):
        run_ablation(base, lr_sweep=[0.1, -1])
    with pytest.raises(ConfigError, match="--extra-inits"):
        run_ablation(base, tip="init", extra_inits=["uniform"])
    with pytest.raises(ConfigError, match="--extra-inits needs the init tip"):
        run_ablation(base, tip="loss-norm", extra_inits=["xavier"])
    with pytest.raises(ConfigError, match="--tip"):
        run_ablation(base, tip="loss-norm,colour")


def test_lr_sweep_command_tiny_budget(tmp_path):
    """`ssdkit ablate --lr-sweep` end to end on a tiny budget; a rerun reuses every finished run."""
    from ssdkit.cli import main

    out = tmp_path / "abl"
    argv = [
        "ablate",
        "--tip",
        "loss-norm",
        "--seeds",
        "1",
        "--epochs",
        "1",
        "--lr-sweep",
        "0.01,0.02",
        "--synthetic-train-size",
        "4",
        "--synthetic-val-size",
        "2",
        "--batch-size",
        "4",
        "--procs",
        "1",
        "--no-progress",
        "--no-amp",
        "--output",
        str(out),
    ]
    assert main(argv) == 0
    for name in ("ablation.md", "ablation.csv", "ablation.json", "ablation.png", "ablation_grid.csv"):
        assert (out / name).exists(), name
    saved = json.loads((out / "ablation.json").read_text())
    [row] = saved["rows"]
    assert row["n"] == 1 and row["better_lr"] in (0.01, 0.02) and len(saved["grid"]) == 4
    for arm in row["arms"]:
        assert arm["lrs"] == [0.01, 0.02] and len(arm["selection_maps"]) == 2
        cell = [g for g in saved["grid"] if g["arm"] == arm["arm"] and g["lr"] == arm["best_lr"]]
        assert arm["report_maps"] == [cell[0]["report_map"]]
    assert row["diff_mean"] == pytest.approx(row["better_maps"][0] - row["worse_maps"][0])
    runs = sorted(p.name for p in out.iterdir() if p.name.startswith("run-"))
    assert len(runs) == 4 and runs[0].startswith("run-batch-default-lr0.01-seed233-")
    for run in runs:
        assert {"eval_selection_per_class.json", "eval_report_per_class.json"} <= set(os.listdir(out / run))
    stamp = {run: (out / run / "last.pt").stat().st_mtime_ns for run in runs}
    assert main(argv) == 0
    assert json.loads((out / "ablation.json").read_text()) == saved
    assert stamp == {run: (out / run / "last.pt").stat().st_mtime_ns for run in runs}


def test_diverged_arm_counts_as_zero_and_is_reported(tmp_path):
    run = tmp_path / "run-x"
    run.mkdir()
    (run / "finished.json").write_text(json.dumps({"diverged": "the loss became nan"}))
    assert ablate._split_map(str(run), "report", "per_class") == 0.0
    arm = {
        "arm": "sample",
        "lrs": [0.1],
        "selection_by_lr": [0.0],
        "best_lr": 0.1,
        "report": {"mean": 0.0, "ci_low": 0.0, "ci_high": 0.0},
        "report_maps": [0.0, 0.0],
    }
    row = {
        "tip": "loss-norm",
        "better": "batch",
        "worse": "sample",
        **paired_stats([0.2, 0.3], [0.0, 0.1]),
        "verdict": "x",
        "diverged_better": 0,
        "diverged_worse": 1,
        "better_lr": 0.1,
        "worse_lr": 0.1,
        "arms": [arm],
    }
    assert "sample @ 0.1 (1 of 2 diverged)" in markdown_table([row])


def test_run_folder_key_covers_training_settings_only():
    base = ablate._study_base(TrainConfig())
    cfg = arm_configs(base, TIPS["loss-norm"], 0, 0.08)["batch"]
    assert cfg.model == "ssd_tiny_synthetic"  # the study's model, not the train command's default
    assert cfg.positive_weights == "anchor"  # and GluonCV's loss, not the tiny model's
    key = ablate.config_key(cfg)
    # a study's finished runs stay reusable when run-control settings are at their neutral values ...
    trimmed = {k: v for k, v in cfg.to_dict().items() if k not in ablate._KEY_NEUTRAL}
    assert ablate.config_key(dataclasses.replace(TrainConfig.from_dict(trimmed), time_budget=0)) == key
    # the key of the published study's first batch-wise run: a change to the study's recipe changes it, and the
    # runs in benchmarks/results/tips-study then no longer describe what `ssdkit ablate` trains
    assert key == "040df6c509"
    for field in ("output", "progress", "log_interval", "decoder"):
        other = {"output": "elsewhere", "progress": False, "log_interval": 7, "decoder": "argmax"}[field]
        assert ablate.config_key(dataclasses.replace(cfg, **{field: other})) == key
    # ... and any setting that changes what is trained, or a non-neutral run-control value, makes a new folder
    for field, other in (
        ("lr", 0.04), ("seed", 234), ("wd", 1e-4), ("time_budget", 5.0), ("compile", True),
        ("synthetic_dense_scale", 0.75), ("positive_weights", "object"),
    ):  # fmt: skip
        assert ablate.config_key(dataclasses.replace(cfg, **{field: other})) != key
    assert ablate.run_folder("s", cfg).startswith(os.path.join("s", "run-batch-default-lr0.08-seed233-"))


def test_a_run_stopped_by_a_signal_is_not_finished(monkeypatch, tmp_path):
    from ssdkit.engine import trainer
    from ssdkit.engine.trainer import FitResult

    def stopped_fit(cfg, say=print):
        os.makedirs(cfg.output, exist_ok=True)
        return FitResult(cfg.output, -1.0, float("nan"), 2, 118.0, stopped="SIGTERM")

    monkeypatch.setattr(trainer, "fit", stopped_fit)
    run = str(tmp_path / "run")
    with pytest.raises(ablate.StudyStopped, match="SIGTERM"):
        ablate._train_or_reuse(TrainConfig(), run, say=lambda m: None)
    assert not os.path.exists(os.path.join(run, "finished.json"))  # the next command resumes it


def test_ablate_cli_exit_code_when_a_run_is_stopped(monkeypatch, capsys):
    from ssdkit import cli

    def stop(*a, **k):
        raise ablate.StudyStopped("runs/x stopped by SIGTERM; run the same command again to resume it")

    monkeypatch.setattr(ablate, "run_ablation", stop)
    assert cli.main(["ablate", "--tip", "loss-norm"]) == 143
    assert "run the same command again" in capsys.readouterr().err
