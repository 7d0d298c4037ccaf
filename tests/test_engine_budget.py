import csv
import json
import time

import pytest

from ssdkit.engine import budget
from ssdkit.engine.config import ConfigError, TrainConfig, resolve_config


def test_budget_config():
    assert resolve_config(TrainConfig()).time_budget == 10.0  # the synthetic preset's
    assert resolve_config(TrainConfig(dataset="voc", data_root="/d")).time_budget is None  # real data: unchanged
    with pytest.raises(ConfigError, match="--time-budget"):
        resolve_config(TrainConfig(dataset="voc", data_root="/d", time_budget=5))
    with pytest.raises(ConfigError, match="--time-budget"):
        resolve_config(TrainConfig(time_budget=-1))
    cfg = resolve_config(TrainConfig(time_budget=0))
    assert budget.apply_time_budget(cfg, print, 0, 1) is cfg  # 0: no budget, nothing measured
    half = budget.SMALL_RECIPE_IMAGES // 4
    small = resolve_config(TrainConfig(time_budget=0.01, epochs=2, synthetic_train_size=half))
    assert budget.apply_time_budget(small, print, 0, 1) is small  # a small recipe runs as it is


def test_the_cli_option():
    from ssdkit.cli import build_parser, config_from_args

    parser = build_parser()
    assert config_from_args(parser.parse_args(["train", "--time-budget", "2.5"])).time_budget == 2.5
    assert config_from_args(parser.parse_args(["train"])).time_budget is None  # resolved to the preset's


def test_a_run_ends_within_a_small_budget(tmp_path):
    """A minute for a recipe of 16 epochs of 100 000 images in the default two processes: the run measures itself and
    trains what fits. (Half a minute was too little on a 2-core machine in a slow spell: its probe alone took 23 s
    there, and the run rightly refused to start with 7 s left.)"""
    from ssdkit.engine.trainer import fit

    said = []
    cfg = TrainConfig(
        time_budget=1.0,
        synthetic_train_size=100_000,
        synthetic_val_size=32,
        progress=False,
        output=str(tmp_path / "run"),
    )
    start = time.time()
    result = fit(cfg, say=said.append)
    elapsed = time.time() - start
    plan = next(s for s in said if s.startswith("time budget 1 min"))
    assert "fits" in plan and "of the recipe's 1,600,000 training images" in plan
    assert "training images/s in the dense epochs" in plan  # float32: dense images drawn smaller, timed apart
    assert result.epochs_run >= 1 and result.last_map == result.last_map  # it trained and evaluated
    assert elapsed <= 60.0 + 10.0, (elapsed, said)


def test_a_run_that_slows_down_is_shortened_after_an_epoch(tmp_path, monkeypatch):
    """The keeper finds little time left after its first epochs (as if the machine had become busy): the run leaves
    out the epoch still ahead of the decays, trains the last one at the twice-decayed rate, evaluates and records
    the shorter plan."""
    import json

    from ssdkit.engine.builders import run as run_module
    from ssdkit.engine.trainer import fit

    real = budget.BudgetKeeper.for_run

    def busy_keeper(*args, **kwargs):
        keeper = real(*args, **kwargs)
        if keeper is not None:
            keeper.started = time.time() - keeper.budget_s + 5.0  # 5 s left from the first epoch on
        return keeper

    monkeypatch.setattr(run_module.BudgetKeeper, "for_run", busy_keeper)
    monkeypatch.setattr(budget, "SMALL_RECIPE_IMAGES", 0)  # measure and plan even this small recipe
    said = []
    cfg = TrainConfig(
        time_budget=10,
        procs=1,
        amp=False,
        epochs=4,
        lr_decay_epochs=[2, 3],
        synthetic_train_size=64,
        synthetic_val_size=16,
        data_shape=64,
        batch_size=16,
        progress=False,
        output=str(tmp_path / "run"),
    )
    result = fit(cfg, say=said.append)
    assert any(s.startswith("time budget 10 min") and "the whole recipe fits" in s for s in said), said
    change = next(s for s in said if s.startswith("time budget:"))
    # the keeper acts after two timed epochs
    assert "leaving out 1 epoch(s): the run now ends after epoch 3 (LR decay at epoch 2, 2)" in change, said
    assert result.epochs_run == 3 and result.last_map == result.last_map
    rows = (tmp_path / "run" / "epochs.csv").read_text().splitlines()[1:]
    assert len(rows) == 3
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    # the last epoch: both decays (the recipe's factor, x0.25 with AdamW)
    assert saved["lr_decay"] == 0.25 and float(rows[2].split(",")[1]) == pytest.approx(saved["lr"] * 0.25**2)
    assert saved["epochs"] == 3 and saved["lr_decay_epochs"] == [2, 2]


def test_one_slow_epoch_does_not_shorten_the_run(tmp_path):
    """The keeper plans with the median epoch so far: a single epoch slowed by a passing job leaves the plan alone,
    a machine that stays slow gets a shorter run."""
    from types import SimpleNamespace

    cfg = TrainConfig(
        time_budget=10, epochs=16, synthetic_train_size=4000, lr_decay_epochs=[12, 14], synthetic_dense_epochs=12,
        val_interval=8, output=str(tmp_path),
        extra={budget.START_KEY: time.time(), budget.EVAL_KEY: 5.0},
    )  # fmt: skip
    plan, scheduler = SimpleNamespace(epochs=16), SimpleNamespace(decay_epochs=[12, 14])
    keeper = budget.BudgetKeeper(cfg, plan, scheduler, {}, rank=0, world=1)
    keeper.started = time.time() - 3 * 30.0  # three epochs of 30 s done: 510 s left for 13 epochs
    assert keeper.after_epoch(1, 90.0) is None  # one epoch alone is never enough to shorten a run
    keeper.dense_times = []
    assert keeper.after_epoch(1, 30.0) is None and keeper.after_epoch(2, 30.0) is None
    assert keeper.after_epoch(3, 70.0) is None and plan.epochs == 16  # median 30 s: 13 x 30 + 2 evals fit
    assert keeper.after_epoch(4, 70.0) is not None  # median 50 s: they no longer fit
    assert plan.epochs < 16 and cfg.epochs == plan.epochs and scheduler.decay_epochs == cfg.lr_decay_epochs


def test_a_run_with_time_left_is_lengthened_up_to_the_recipe(tmp_path):
    """A cautious first plan (the probe measured dense images on a machine still warming up) leaves time over: after
    two epochs the keeper adds epochs before the first decay, and never grows past the recipe's images."""
    from types import SimpleNamespace

    cfg = TrainConfig(
        time_budget=10, epochs=16, synthetic_train_size=1600, lr_decay_epochs=[12, 14], synthetic_dense_epochs=12,
        val_interval=7, output=str(tmp_path),
        extra={budget.START_KEY: time.time(), budget.EVAL_KEY: 5.0, budget.RECIPE_KEY: 64_000},
    )  # fmt: skip
    plan, scheduler = SimpleNamespace(epochs=16), SimpleNamespace(decay_epochs=[12, 14])
    meta: dict = {}
    keeper = budget.BudgetKeeper(cfg, plan, scheduler, meta, rank=0, world=1)
    keeper.started = (
        time.time() - 60.0
    )  # two epochs of 25 s and the start: 540 s left: 18 more epochs of 25 s and 3 evaluations fit in 88 %
    assert keeper.after_epoch(1, 25.0) is None  # one epoch alone is never enough to change the plan
    change = keeper.after_epoch(2, 25.0)
    assert change is not None and "adding 4 epoch(s): the run now ends after epoch 20" in change, change
    assert plan.epochs == cfg.epochs == 20 and scheduler.decay_epochs == cfg.lr_decay_epochs == [16, 18]
    assert cfg.synthetic_dense_epochs == 16 and meta["config"]["epochs"] == 20
    assert (tmp_path / "config.json").exists()
    keeper.started -= 25.0  # the third epoch took its 25 s: the grown plan still fits, nothing changes
    assert keeper.after_epoch(3, 25.0) is None


def test_after_the_dense_epochs_the_keeper_times_the_sparse_ones(tmp_path):
    """Sparse epochs cost differently from dense ones (larger images, fewer objects): the keeper times each kind
    apart, a sparse epoch by the probe's ratio to a dense one until two sparse epochs have run, then by their
    median, so the time they save is trained (before the last decay) instead of left, and one slow sparse epoch
    cuts nothing."""
    from types import SimpleNamespace

    cfg = TrainConfig(
        time_budget=10, epochs=16, synthetic_train_size=1600, lr_decay_epochs=[12, 14], synthetic_dense_epochs=12,
        val_interval=8, output=str(tmp_path),
        extra={budget.START_KEY: time.time(), budget.EVAL_KEY: 5.0, budget.RECIPE_KEY: 64_000,
               budget.SPARSE_KEY: 0.625},
    )  # fmt: skip
    plan, scheduler = SimpleNamespace(epochs=16), SimpleNamespace(decay_epochs=[12, 14])
    keeper = budget.BudgetKeeper(cfg, plan, scheduler, {}, rank=0, world=1)
    keeper.dense_times = [40.0] * 12  # twelve dense epochs of 40 s: a sparse one is expected to take 0.625 x 40 s
    assert keeper.epoch_seconds() == (40.0, 25.0)
    # after the first sparse epoch (27 s; one alone does not replace the probe's estimate), 140 s are left for 3
    # epochs, an evaluation and the finish: at the dense epochs' 40 s they need 131 s and nothing would be added;
    # at 25 s one more epoch fits in the 91 % (127.4 s): 4 x 25 + 5 + 6 = 111 s, 5 x 25 + two evaluations + 6 = 141 s
    # would not
    keeper.started = time.time() - (600.0 - 140.0)
    change = keeper.after_epoch(13, 27.0)
    assert change is not None and "adding 1 epoch(s): the run now ends after epoch 17" in change, change
    assert "at 25.0 s per epoch" in change  # the log names the time the growth was planned with
    assert scheduler.decay_epochs == [12, 15] and cfg.synthetic_dense_epochs == 12
    assert keeper.sparse_times == [27.0] and keeper.dense_times == [40.0] * 12
    keeper.after_epoch(14, 29.0)
    assert keeper.epoch_seconds() == (40.0, 28.0)  # two sparse epochs: their median
    # one slow sparse epoch does not shorten a run
    keeper = budget.BudgetKeeper(cfg, plan, scheduler, {}, rank=0, world=1)
    cfg.epochs, plan.epochs, cfg.lr_decay_epochs = 16, 16, [12, 14]
    keeper.dense_times = [48.0] * 12
    # 115 s left for 3 epochs, an evaluation and the finish: 3 x 30 + 5 + 6 = 101 s fit in the 94 % (108.1 s); at
    # the slow sparse epoch's 45 s they would not (146 s)
    keeper.started = time.time() - (600.0 - 115.0)
    assert keeper.after_epoch(13, 45.0) is None and plan.epochs == 16


def test_the_keeper_plans_dense_and_sparse_epochs_at_their_own_cost(tmp_path):
    """Dense epochs drawn smaller run faster than the sparse ones at full size: leaving out epochs while dense ones
    remain counts the sparse ones at their (probe-scaled) cost, so the run still ends in time."""
    from types import SimpleNamespace

    cfg = TrainConfig(
        time_budget=10, epochs=16, synthetic_train_size=1600, lr_decay_epochs=[12, 14], synthetic_dense_epochs=12,
        val_interval=16, output=str(tmp_path),
        extra={budget.START_KEY: time.time(), budget.EVAL_KEY: 5.0, budget.SPARSE_KEY: 1.5},
    )  # fmt: skip
    plan, scheduler = SimpleNamespace(epochs=16), SimpleNamespace(decay_epochs=[12, 14])
    keeper = budget.BudgetKeeper(cfg, plan, scheduler, {}, rank=0, world=1)
    # after two dense epochs of 20 s: 10 dense (200 s) + 4 sparse (4 x 30 s) + an evaluation + finish = 331 s; with
    # 330 s left (310.2 usable) two dense epochs are left out (one alone: 311 s; two: 291 s); timed at 20 s for
    # every epoch the rest would need 291 s and look as if it fit
    keeper.dense_times = [20.0]
    keeper.started = time.time() - (600.0 - 330.0)
    change = keeper.after_epoch(2, 20.0)
    assert change is not None and "leaving out 2 epoch(s)" in change, change
    assert "20.0 s per dense epoch, 30.0 s per later one" in change
    assert plan.epochs == 14 and cfg.lr_decay_epochs == [10, 12] and cfg.synthetic_dense_epochs == 10


def test_before_the_last_epoch_the_keeper_sizes_it_to_its_deadline(tmp_path):
    """Whole epochs leave time over at the end: the last one trains until its deadline (the budget's end less 1.25x
    the last evaluation, the finish and a margin). Before it the keeper sets the deadline and gives the epoch twice
    the images that fit until then (a machine that speeds up trains on), at most the recipe's images; the other
    epochs have no deadline."""
    from types import SimpleNamespace

    def keeper_with(left_s: float, recipe_images: int, decay=(14, 15)):
        cfg = TrainConfig(
            time_budget=10, epochs=16, synthetic_train_size=2000, lr_decay_epochs=list(decay),
            synthetic_dense_epochs=14, val_interval=8, batch_size=16, output=str(tmp_path),
            extra={budget.START_KEY: time.time(), budget.EVAL_KEY: 8.0, budget.RECIPE_KEY: recipe_images},
        )  # fmt: skip
        plan, scheduler = SimpleNamespace(epochs=16), SimpleNamespace(decay_epochs=list(decay))
        keeper = budget.BudgetKeeper(cfg, plan, scheduler, {}, rank=0, world=1)
        keeper.dense_times, keeper.sparse_times = [30.0] * 14, [40.0]
        keeper.started = time.time() - (600.0 - left_s)
        return keeper, cfg

    # 100 s left after epoch 15: the reserve is 1.25 x 8 + 6 + 5 = 21 s, so 79 s less 0.5 s train 3,920 images
    keeper, cfg = keeper_with(100.0, 64_000)
    assert keeper.time_up(14) is None  # no deadline before it is set
    change = keeper.after_epoch(15, 40.0)
    assert change is not None and "21 s before the end" in change, change
    assert "about 3,920 images at 40.0 s per epoch of 2,000 (at most 7,840)" in change, change
    assert cfg.extra[budget.LAST_KEY] == [15, 7840] and cfg.epochs == 16
    assert budget.epoch_images(cfg, 15) == 7840 and budget.epoch_images(cfg, 14) == 2000
    assert json.loads((tmp_path / "config.json").read_text())["extra"][budget.LAST_KEY] == [15, 7840]
    assert keeper.deadline == pytest.approx(keeper.started + 600.0 - 21.0)
    assert keeper.time_up(14) is None and keeper.time_up(15)() is False
    keeper.deadline = time.time() - 1.0
    assert keeper.time_up(15)() is True
    cfg.epochs = 20  # continued with more epochs: the new ones train the usual images
    assert budget.epoch_images(cfg, 19) == 2000 and budget.epoch_images(cfg, 15) == 7840
    # the recipe's images cap it: 64,000 less 15 epochs of 2,000 trained
    keeper, cfg = keeper_with(100.0, 32_000)
    assert "up to 2,000" not in (keeper.after_epoch(15, 40.0) or "") and budget.LAST_KEY not in cfg.extra
    keeper, cfg = keeper_with(100.0, 33_008)
    keeper.after_epoch(15, 40.0)
    assert cfg.extra[budget.LAST_KEY] == [15, 3008]
    # too little time (8.5 s, twice that is 850 images): the size stays, the deadline is set (and will stop it)
    keeper, cfg = keeper_with(30.0, 64_000)
    assert keeper.after_epoch(15, 40.0) is None and budget.LAST_KEY not in cfg.extra and keeper.deadline is not None
    # a decay point at the last epoch's end would fall inside a longer last epoch: its size stays
    keeper, cfg = keeper_with(100.0, 64_000, decay=(14, 16))
    assert keeper.after_epoch(15, 40.0) is None and budget.LAST_KEY not in cfg.extra


def test_the_last_epoch_trains_until_its_deadline(tmp_path, monkeypatch):
    """End to end: with 5 s left before the last of three epochs (and no finish or margin to keep), the last epoch
    trains more images than the other epochs, and the run ends within a few seconds of those 5 s."""
    from ssdkit.engine.builders import run as run_module
    from ssdkit.engine.trainer import fit

    real = budget.BudgetKeeper.for_run
    marks: dict = {}

    def keeper_with_5_s_before_the_last(*args, **kwargs):
        keeper = real(*args, **kwargs)
        if keeper is None:  # the probe's throwaway run
            return None
        after_epoch = keeper.after_epoch

        def timed(done, epoch_s, eval_s=None):
            if done == 2:  # the recipe may grow from here on (not earlier: no epochs are added)
                keeper.started, keeper.max_images = time.time() - keeper.budget_s + 5.0, 10**6
                marks["left_5_s"] = time.time()
            return after_epoch(done, epoch_s, eval_s)

        keeper.after_epoch = timed
        return keeper

    monkeypatch.setattr(run_module.BudgetKeeper, "for_run", keeper_with_5_s_before_the_last)
    monkeypatch.setattr(budget, "SMALL_RECIPE_IMAGES", 0)
    monkeypatch.setattr(budget, "FINISH_SECONDS", 0.0)
    monkeypatch.setattr(budget, "DEADLINE_MARGIN_S", 0.0)
    said: list[str] = []
    cfg = TrainConfig(
        time_budget=10, procs=1, amp=False, epochs=3, lr_decay_epochs=[1, 2], synthetic_train_size=64,
        synthetic_val_size=16, data_shape=64, batch_size=16, val_interval=3, progress=False,
        output=str(tmp_path / "run"),
    )  # fmt: skip
    result = fit(cfg, say=said.append)
    ended = time.time()
    grown = next(s for s in said if "the last epoch trains until its deadline" in s)
    rows = list(csv.DictReader(open(tmp_path / "run" / "epochs.csv")))
    assert [int(float(r["images"])) for r in rows[:2]] == [64, 64]
    last_epoch, planned = json.loads((tmp_path / "run" / "config.json").read_text())["extra"][budget.LAST_KEY]
    assert last_epoch == 2
    assert f"(at most {planned:,})" in grown and planned > 64
    assert 64 < int(float(rows[2]["images"])) <= planned and result.epochs_run == 3
    assert ended - marks["left_5_s"] <= 5.0 + 3.0, said  # the deadline, then the evaluation of 16 images


def test_the_probe_alternates_the_kinds_of_epochs_so_a_slowdown_moves_both(monkeypatch):
    """The probe trains its dense and sparse steps in alternating rounds. Here the machine becomes 3x slower 4 s into
    the probe, in its third round (a fake clock; a dense step costs 0.2 s and a sparse one 0.1 s while fast): each
    round's two kinds ran at one speed but in that one, so the median of the rounds' ratios keeps the machine's 2,
    where timing all dense steps first and then all sparse ones would have read a sparse step as 1.5x a dense one
    instead of half."""
    from ssdkit.engine import trainer

    now = [0.0]

    class Clock:
        @staticmethod
        def perf_counter():
            return now[0]

    steps_seen = []

    def fake_epoch(parts, epoch, log_interval, on_step=None, **kw):
        dense = parts.train_set.max_objects == 20
        steps = len(parts.train_loader)
        steps_seen.append(("dense" if dense else "sparse", parts.train_set.image_size, steps))
        for _ in range(steps):
            slow = 3.0 if now[0] >= 4.0 else 1.0
            now[0] += (0.2 if dense else 0.1) * slow
            on_step(None)
        return {}

    monkeypatch.setattr(budget, "time", Clock)
    monkeypatch.setattr(trainer, "train_parts_epoch", fake_epoch)
    cfg = resolve_config(
        TrainConfig(synthetic_val_size=16, progress=False, amp=False, batch_size=4, synthetic_dense_scale=0.75)
    )
    dense_ips, sparse_ips, _ = budget.measure_speed(cfg, rank=0, world=1)
    kinds = [kind for kind, _, _ in steps_seen]
    assert kinds == ["dense", "sparse"] * budget.PROBE_ROUNDS
    assert {size for kind, size, _ in steps_seen if kind == "dense"} == {(96, 96)}  # dense images drawn smaller
    assert {size for kind, size, _ in steps_seen if kind == "sparse"} == {(128, 128)}
    timed = sum(steps - budget.PROBE_WARMUP_STEPS for kind, _, steps in steps_seen if kind == "dense")
    assert timed == budget.PROBE_STEPS
    assert sparse_ips / dense_ips == pytest.approx(2.0, rel=0.01)
