import dataclasses
import time

import pytest

from ssdkit.engine import budget
from ssdkit.engine.budget import RunShape, count_evals, fit_to_budget, predicted_seconds, probe_seconds
from ssdkit.engine.config import ConfigError, TrainConfig, resolve_config

RECIPE = RunShape(
    epochs=16, images_per_epoch=4000, lr_decay_epochs=(12, 14), dense_epochs=12, val_interval=8, batch_size=16
)


def test_one_slow_probe_step_does_not_set_the_plan():
    """The probe's time is its median step times the steps: one step slowed 7x (a passing burst) changes nothing,
    where the total would have read the machine as 1.8x slower."""
    ends = [0.0, 1.0, 1.1, 1.2, 1.9, 2.0, 2.1]  # warm-up step, then six: 0.1 0.1 0.7 0.1 0.1 0.1
    assert probe_seconds(ends, warmup=1) == pytest.approx(0.6)
    assert probe_seconds([0.0, 0.5, 0.7, 0.9], warmup=2) == pytest.approx(0.4)
    for bad in (([0.0, 1.0], 0), ([0.0], 1), ([0.0, 1.0], 2)):
        with pytest.raises(ValueError, match="untimed"):
            probe_seconds(*bad)


def test_count_evals():
    assert count_evals(16, 8) == 2
    assert count_evals(17, 8) == 3  # the last epoch is always evaluated
    assert count_evals(3, 1) == 3
    assert count_evals(4, 8) == 1


def test_the_whole_recipe_when_it_fits():
    plan = fit_to_budget(RECIPE, 600.0, images_per_s=200.0, eval_s=5.0)
    assert plan.whole_recipe and plan.shape == RECIPE
    assert plan.predicted_s == pytest.approx(predicted_seconds(RECIPE, 200.0, 5.0))
    assert plan.predicted_s <= 600.0


@pytest.mark.parametrize("rate", [40.0, 100.0, 118.0])
def test_a_slower_machine_gets_fewer_images_per_epoch_and_the_same_schedule(rate):
    plan = fit_to_budget(RECIPE, 580.0, images_per_s=rate, eval_s=8.0)
    shape = plan.shape
    assert not plan.whole_recipe
    assert (shape.epochs, shape.lr_decay_epochs, shape.dense_epochs, shape.val_interval) == (16, (12, 14), 12, 8)
    assert shape.images_per_epoch % RECIPE.batch_size == 0 and shape.images_per_epoch < RECIPE.images_per_epoch
    # it fills the usable time: one more batch per epoch would not fit
    usable = 580.0 * (1 - budget.SAFETY)
    assert predicted_seconds(shape, rate, 8.0) <= usable
    bigger = RunShape(16, shape.images_per_epoch + RECIPE.batch_size, (12, 14), 12, 8, 16)
    assert predicted_seconds(bigger, rate, 8.0) > usable
    assert plan.predicted_s == pytest.approx(predicted_seconds(shape, rate, 8.0))


def test_a_very_slow_machine_gets_fewer_epochs_with_scaled_decay_points():
    plan = fit_to_budget(RECIPE, 60.0, images_per_s=30.0, eval_s=3.0)
    shape = plan.shape
    assert shape.epochs < RECIPE.epochs
    assert shape.images_per_epoch >= budget.MIN_STEPS_PER_EPOCH * RECIPE.batch_size
    assert all(1 <= e < shape.epochs for e in shape.lr_decay_epochs) or shape.epochs == 1
    assert shape.dense_epochs <= shape.epochs and shape.val_interval >= 1
    assert predicted_seconds(shape, 30.0, 3.0) <= 60.0 * (1 - budget.SAFETY)
    # one epoch more (of the fewest images allowed) would overrun
    more = budget._with_epochs(RECIPE, shape.epochs + 1, budget.MIN_STEPS_PER_EPOCH * RECIPE.batch_size)
    assert predicted_seconds(more, 30.0, 3.0) > 60.0 * (1 - budget.SAFETY)


def test_no_time_left_is_a_clear_error():
    with pytest.raises(ConfigError, match="--time-budget"):
        fit_to_budget(RECIPE, 5.0, images_per_s=30.0, eval_s=3.0)
    with pytest.raises(ValueError):
        fit_to_budget(RECIPE, 100.0, images_per_s=0.0, eval_s=3.0)


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
    """30 s for a recipe of 16 epochs of 100 000 images in the default two processes: the run measures itself and
    trains what fits."""
    from ssdkit.engine.trainer import fit

    said = []
    cfg = TrainConfig(
        time_budget=0.5,
        synthetic_train_size=100_000,
        synthetic_val_size=32,
        progress=False,
        output=str(tmp_path / "run"),
    )
    start = time.time()
    result = fit(cfg, say=said.append)
    elapsed = time.time() - start
    plan = next(s for s in said if s.startswith("time budget 0.5 min"))
    assert "fits" in plan and "of the recipe's 1,600,000 training images" in plan
    assert result.epochs_run >= 1 and result.last_map == result.last_map  # it trained and evaluated
    assert elapsed <= 30.0 + 10.0, (elapsed, said)


def test_shorten_keeps_a_plan_that_fits():
    assert budget.shorten(RECIPE, 4, 10_000.0, epoch_s=20.0, eval_s=5.0) == RECIPE
    assert budget.shorten(RECIPE, 15, 1.0, epoch_s=20.0, eval_s=5.0) == RECIPE  # one epoch left: nothing to leave out


def test_shorten_leaves_out_the_next_epochs_and_keeps_the_ending():
    # after 4 of 16 epochs, 200 s at 20 s an epoch and 5 s an evaluation: 8 epochs fit (160 + 2 evals + finish)
    new = budget.shorten(RECIPE, 4, 200.0, epoch_s=20.0, eval_s=5.0)
    assert new.epochs == 12 and new.images_per_epoch == RECIPE.images_per_epoch
    assert new.lr_decay_epochs == (8, 10) and new.dense_epochs == 8  # moved back by the 4 epochs left out
    keep = new.epochs - 4
    assert keep * 20.0 + count_evals(new.epochs, 8) * 5.0 + budget.FINISH_SECONDS <= 200.0 * (1 - budget.SAFETY)
    assert (keep + 1) * 20.0 + 2 * 5.0 + budget.FINISH_SECONDS > 200.0 * (1 - budget.SAFETY)  # not one more
    # past the first decay point: only the boundaries still ahead move, never before the epochs done
    late = budget.shorten(RECIPE, 13, 30.0, epoch_s=20.0, eval_s=5.0)
    assert late.epochs == 14 and late.lr_decay_epochs == (12, 13) and late.dense_epochs == 12
    # no time at all: one more epoch, the last one, with every decay already applied
    last = budget.shorten(RECIPE, 2, 0.0, epoch_s=20.0, eval_s=5.0)
    assert last.epochs == 3 and last.lr_decay_epochs == (2, 2) and last.dense_epochs == 2


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
    assert float(rows[2].split(",")[1]) == pytest.approx(saved["lr"] * 0.01)  # the last epoch: both decays
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
    keeper.epoch_times = []
    assert keeper.after_epoch(1, 30.0) is None and keeper.after_epoch(2, 30.0) is None
    assert keeper.after_epoch(3, 70.0) is None and plan.epochs == 16  # median 30 s: 13 x 30 + 2 evals fit
    assert keeper.after_epoch(4, 70.0) is not None  # median 50 s: they no longer fit
    assert plan.epochs < 16 and cfg.epochs == plan.epochs and scheduler.decay_epochs == cfg.lr_decay_epochs


def test_lengthen_adds_epochs_before_the_next_decay_and_keeps_the_ending():
    small = RunShape(
        epochs=16, images_per_epoch=1000, lr_decay_epochs=(12, 14), dense_epochs=12, val_interval=7, batch_size=16
    )
    # after 4 of 16 epochs, 400 s at 20 s an epoch and 5 s an evaluation: 12 epochs + 2 evals need 256 s; less the
    # growth's safety share (364 s usable) 17 epochs + 3 evals + finish fit (361 s), 18 and a fourth eval would not
    new = budget.lengthen(small, 4, 400.0, epoch_s=20.0, eval_s=5.0, max_images=64_000)
    assert new.epochs == 21 and new.images_per_epoch == 1000
    assert new.lr_decay_epochs == (17, 19) and new.dense_epochs == 17  # moved later by the 5 epochs added
    keep = new.epochs - 4
    cost = keep * 20.0 + budget._evals_after(4, new.epochs, 7) * 5.0 + budget.FINISH_SECONDS
    assert cost <= 400.0 * (1 - budget.GROW_SAFETY) < cost + 20.0 + 5.0
    # between the decays: at the once-decayed rate, before the second decay; the dense epochs are over and stay so
    # (200 s, 182 usable: 8 epochs + evaluations after epochs 14 and 20 + finish = 176 s fit, 9 epochs would not)
    later = budget.lengthen(small, 12, 200.0, 20.0, 5.0, max_images=64_000)
    assert later.epochs == 20 and later.lr_decay_epochs == (12, 18) and later.dense_epochs == 12
    # never past the recipe's images, never after the last decay, never without time to spare
    assert budget.lengthen(small, 4, 400.0, 20.0, 5.0, max_images=18_000).epochs == 18
    assert budget.lengthen(small, 4, 400.0, 20.0, 5.0, max_images=16_000) == small
    assert budget.lengthen(small, 14, 10_000.0, 20.0, 5.0, max_images=64_000) == small
    assert budget.lengthen(small, 12, 100.0, 20.0, 5.0, max_images=64_000) == small
    assert budget.lengthen(small, 4, 250.0, 20.0, 5.0, max_images=64_000) == small
    constant = dataclasses.replace(small, lr_decay_epochs=())  # no decay point: no middle to grow
    assert budget.lengthen(constant, 4, 10_000.0, 20.0, 5.0, max_images=64_000) == constant


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
    """Sparse epochs make their images faster than dense ones: once the dense epochs are over, the plan for the rest
    is timed by the sparse epochs alone, so the time they save is trained (before the last decay) instead of left."""
    from types import SimpleNamespace

    cfg = TrainConfig(
        time_budget=10, epochs=16, synthetic_train_size=1600, lr_decay_epochs=[12, 14], synthetic_dense_epochs=12,
        val_interval=8, output=str(tmp_path),
        extra={budget.START_KEY: time.time(), budget.EVAL_KEY: 5.0, budget.RECIPE_KEY: 64_000},
    )  # fmt: skip
    plan, scheduler = SimpleNamespace(epochs=16), SimpleNamespace(decay_epochs=[12, 14])
    keeper = budget.BudgetKeeper(cfg, plan, scheduler, {}, rank=0, world=1)
    keeper.epoch_times = [40.0] * 12  # twelve dense epochs of 40 s
    # after the first sparse epoch (25 s), 140 s are left for 3 epochs, an evaluation and the finish: at the
    # dense epochs' 40 s they need 131 s and nothing is added; at 25 s one more epoch fits in the 91 % (127.4 s):
    # 4 x 25 + 5 + 6 = 111 s, while 5 x 25 + two evaluations + 6 = 141 s would not
    keeper.started = time.time() - (600.0 - 140.0)
    change = keeper.after_epoch(13, 25.0)
    assert change is not None and "adding 1 epoch(s): the run now ends after epoch 17" in change, change
    assert "at 25.0 s per epoch" in change  # the log names the time the growth was planned with
    assert scheduler.decay_epochs == [12, 15] and cfg.synthetic_dense_epochs == 12
    assert keeper.sparse_times == [25.0]
    # one slow sparse epoch does not shorten a run: shortening times the rest by the median of all epochs so far
    keeper = budget.BudgetKeeper(cfg, plan, scheduler, {}, rank=0, world=1)
    cfg.epochs, plan.epochs, cfg.lr_decay_epochs = 16, 16, [12, 14]
    keeper.epoch_times = [30.0] * 12
    # 115 s left for 3 epochs, an evaluation and the finish: 3 x 30 + 5 + 6 = 101 s fit in the 94 % (108.1 s); at
    # the slow sparse epoch's 45 s they would not (146 s)
    keeper.started = time.time() - (600.0 - 115.0)
    assert keeper.after_epoch(13, 45.0) is None and plan.epochs == 16
