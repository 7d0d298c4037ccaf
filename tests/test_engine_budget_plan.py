import dataclasses

import pytest

from ssdkit.engine import budget_plan
from ssdkit.engine.budget_plan import (
    RunShape,
    count_evals,
    fit_to_budget,
    last_epoch_images,
    predicted_seconds,
    probe_ratio,
    probe_seconds,
)
from ssdkit.engine.config import ConfigError

RECIPE = RunShape(
    epochs=16, images_per_epoch=4000, lr_decay_epochs=(12, 14), dense_epochs=12, val_interval=8, batch_size=16
)


def test_one_slow_probe_step_does_not_set_the_plan():
    """A probe step's time is the median of the timed steps of all rounds: one step slowed 7x (a passing burst)
    changes nothing, where the mean would have read the machine as 1.8x slower; each round's first steps are not
    timed (they hold its start-up)."""
    ends = [0.0, 1.0, 1.1, 1.2, 1.9, 2.0, 2.1]  # warm-up step, then six: 0.1 0.1 0.7 0.1 0.1 0.1
    assert probe_seconds([ends], warmup=1) == pytest.approx(0.1)
    assert probe_seconds([[0.0, 0.5, 0.7, 0.9]], warmup=2) == pytest.approx(0.2)
    # two rounds, each with its own untimed first step (5 s and 9 s of start-up are not counted)
    assert probe_seconds([[5.0, 5.2, 5.4], [20.0, 20.3, 20.6]], warmup=1) == pytest.approx(0.25)
    for bad in (([[0.0, 1.0]], 0), ([[0.0]], 1), ([[0.0, 1.0]], 2), ([[0.0, 1.0], [0.0]], 1), ([], 1)):
        with pytest.raises(ValueError, match="untimed"):
            probe_seconds(*bad)


def test_the_probe_ratio_is_the_median_of_its_rounds():
    """Rounds alternate the two kinds; a round whose second kind ran into a slowdown (ratio 1.5 instead of 0.5) is
    outvoted by the others, and a slowdown that moves both steps of a round alike leaves its ratio."""
    dense = [[0.0, 0.2, 0.4], [1.0, 1.2, 1.4], [2.0, 2.2, 2.4], [3.0, 3.6, 4.2]]  # 0.2 s steps, the last round 0.6
    sparse = [[0.5, 0.6, 0.7], [1.5, 1.6, 1.7], [2.5, 2.8, 3.1], [4.5, 4.8, 5.1]]  # 0.1, 0.1, then 0.3 and 0.3
    assert probe_ratio(dense, sparse, warmup=1) == pytest.approx(0.5)
    assert probe_ratio(sparse, dense, warmup=1) == pytest.approx(2.0)
    for bad in ((dense, sparse[:3]), ([], [])):
        with pytest.raises(ValueError, match="rounds"):
            probe_ratio(*bad, warmup=1)


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
    usable = 580.0 * (1 - budget_plan.SAFETY)
    assert predicted_seconds(shape, rate, 8.0) <= usable
    bigger = RunShape(16, shape.images_per_epoch + RECIPE.batch_size, (12, 14), 12, 8, 16)
    assert predicted_seconds(bigger, rate, 8.0) > usable
    assert plan.predicted_s == pytest.approx(predicted_seconds(shape, rate, 8.0))


def test_a_very_slow_machine_gets_fewer_epochs_with_scaled_decay_points():
    plan = fit_to_budget(RECIPE, 60.0, images_per_s=30.0, eval_s=3.0)
    shape = plan.shape
    assert shape.epochs < RECIPE.epochs
    assert shape.images_per_epoch >= budget_plan.MIN_STEPS_PER_EPOCH * RECIPE.batch_size
    assert all(1 <= e < shape.epochs for e in shape.lr_decay_epochs) or shape.epochs == 1
    assert shape.dense_epochs <= shape.epochs and shape.val_interval >= 1
    assert predicted_seconds(shape, 30.0, 3.0) <= 60.0 * (1 - budget_plan.SAFETY)
    # one epoch more (of the fewest images allowed) would overrun
    more = budget_plan._with_epochs(RECIPE, shape.epochs + 1, budget_plan.MIN_STEPS_PER_EPOCH * RECIPE.batch_size)
    assert predicted_seconds(more, 30.0, 3.0) > 60.0 * (1 - budget_plan.SAFETY)


def test_no_time_left_is_a_clear_error():
    with pytest.raises(ConfigError, match="--time-budget"):
        fit_to_budget(RECIPE, 5.0, images_per_s=30.0, eval_s=3.0)
    with pytest.raises(ValueError):
        fit_to_budget(RECIPE, 100.0, images_per_s=0.0, eval_s=3.0)


def test_shorten_keeps_a_plan_that_fits():
    assert budget_plan.shorten(RECIPE, 4, 10_000.0, epoch_s=20.0, eval_s=5.0) == RECIPE
    assert (
        budget_plan.shorten(RECIPE, 15, 1.0, epoch_s=20.0, eval_s=5.0) == RECIPE
    )  # one epoch left: nothing to leave out


def test_shorten_leaves_out_the_next_epochs_and_keeps_the_ending():
    # after 4 of 16 epochs, 200 s at 20 s an epoch and 5 s an evaluation: 8 epochs fit (160 + 2 evals + finish)
    new = budget_plan.shorten(RECIPE, 4, 200.0, epoch_s=20.0, eval_s=5.0)
    assert new.epochs == 12 and new.images_per_epoch == RECIPE.images_per_epoch
    assert new.lr_decay_epochs == (8, 10) and new.dense_epochs == 8  # moved back by the 4 epochs left out
    keep = new.epochs - 4
    assert keep * 20.0 + count_evals(new.epochs, 8) * 5.0 + budget_plan.FINISH_SECONDS <= 200.0 * (
        1 - budget_plan.SAFETY
    )
    assert (keep + 1) * 20.0 + 2 * 5.0 + budget_plan.FINISH_SECONDS > 200.0 * (1 - budget_plan.SAFETY)  # not one more
    # past the first decay point: only the boundaries still ahead move, never before the epochs done
    late = budget_plan.shorten(RECIPE, 13, 30.0, epoch_s=20.0, eval_s=5.0)
    assert late.epochs == 14 and late.lr_decay_epochs == (12, 13) and late.dense_epochs == 12
    # no time at all: one more epoch, the last one, with every decay already applied
    last = budget_plan.shorten(RECIPE, 2, 0.0, epoch_s=20.0, eval_s=5.0)
    assert last.epochs == 3 and last.lr_decay_epochs == (2, 2) and last.dense_epochs == 2


def test_lengthen_adds_epochs_before_the_next_decay_and_keeps_the_ending():
    small = RunShape(
        epochs=16, images_per_epoch=1000, lr_decay_epochs=(12, 14), dense_epochs=12, val_interval=7, batch_size=16
    )
    # after 4 of 16 epochs, 400 s at 20 s an epoch and 5 s an evaluation: 12 epochs + 2 evals need 256 s; less the
    # growth's safety share (364 s usable) 17 epochs + 3 evals + finish fit (361 s), 18 and a fourth eval would not
    new = budget_plan.lengthen(small, 4, 400.0, epoch_s=20.0, eval_s=5.0, max_images=64_000)
    assert new.epochs == 21 and new.images_per_epoch == 1000
    assert new.lr_decay_epochs == (17, 19) and new.dense_epochs == 17  # moved later by the 5 epochs added
    keep = new.epochs - 4
    cost = keep * 20.0 + budget_plan._evals_after(4, new.epochs, 7) * 5.0 + budget_plan.FINISH_SECONDS
    assert cost <= 400.0 * (1 - budget_plan.GROW_SAFETY) < cost + 20.0 + 5.0
    # between the decays: at the once-decayed rate, before the second decay; the dense epochs are over and stay so
    # (200 s, 182 usable: 8 epochs + evaluations after epochs 14 and 20 + finish = 176 s fit, 9 epochs would not)
    later = budget_plan.lengthen(small, 12, 200.0, 20.0, 5.0, max_images=64_000)
    assert later.epochs == 20 and later.lr_decay_epochs == (12, 18) and later.dense_epochs == 12
    # never past the recipe's images, never after the last decay, never without time to spare
    assert budget_plan.lengthen(small, 4, 400.0, 20.0, 5.0, max_images=18_000).epochs == 18
    assert budget_plan.lengthen(small, 4, 400.0, 20.0, 5.0, max_images=16_000) == small
    assert budget_plan.lengthen(small, 14, 10_000.0, 20.0, 5.0, max_images=64_000) == small
    assert budget_plan.lengthen(small, 12, 100.0, 20.0, 5.0, max_images=64_000) == small
    assert budget_plan.lengthen(small, 4, 250.0, 20.0, 5.0, max_images=64_000) == small
    constant = dataclasses.replace(small, lr_decay_epochs=())  # no decay point: no middle to grow
    assert budget_plan.lengthen(constant, 4, 10_000.0, 20.0, 5.0, max_images=64_000) == constant


def test_dense_and_sparse_epochs_cost_at_their_own_rates():
    # 12 dense epochs of 4000 images at 200 images/s (240 s), 4 sparse ones at 100 (160 s), 2 evaluations of 5 s,
    # half a second per epoch and the finish
    expected = 12 * 20.0 + 4 * 40.0 + 16 * budget_plan.EPOCH_SECONDS + 2 * 5.0 + budget_plan.FINISH_SECONDS
    assert predicted_seconds(RECIPE, 200.0, 5.0, sparse_images_per_s=100.0) == pytest.approx(expected)
    assert predicted_seconds(RECIPE, 200.0, 5.0, 200.0) == pytest.approx(predicted_seconds(RECIPE, 200.0, 5.0))
    no_sparse = dataclasses.replace(RECIPE, dense_epochs=16)
    assert predicted_seconds(no_sparse, 200.0, 5.0, 1.0) == pytest.approx(predicted_seconds(no_sparse, 200.0, 5.0))


def test_fit_to_budget_with_two_rates_fills_the_time():
    plan = fit_to_budget(RECIPE, 580.0, images_per_s=120.0, eval_s=8.0, sparse_images_per_s=80.0)
    shape, usable = plan.shape, 580.0 * (1 - budget_plan.SAFETY)
    assert (shape.epochs, shape.lr_decay_epochs, shape.dense_epochs) == (16, (12, 14), 12)
    assert predicted_seconds(shape, 120.0, 8.0, 80.0) <= usable
    bigger = dataclasses.replace(shape, images_per_epoch=shape.images_per_epoch + RECIPE.batch_size)
    assert predicted_seconds(bigger, 120.0, 8.0, 80.0) > usable
    # slower sparse epochs leave fewer images per epoch than one rate for all would
    assert shape.images_per_epoch < fit_to_budget(RECIPE, 580.0, 120.0, 8.0).shape.images_per_epoch
    with pytest.raises(ValueError):
        fit_to_budget(RECIPE, 580.0, 120.0, 8.0, sparse_images_per_s=0.0)


def test_shorten_and_lengthen_count_each_kind_of_epoch_at_its_cost():
    # after 4 of 16 epochs: 8 dense of 10 s + 4 sparse of 30 s + 2 evaluations + finish = 216 s; with 220 s left
    # (206.8 usable) one dense epoch is left out (206 s), at 10 s for every epoch nothing would be
    new = budget_plan.shorten(RECIPE, 4, 220.0, epoch_s=10.0, eval_s=5.0, sparse_epoch_s=30.0)
    assert new.epochs == 15 and new.dense_epochs == 11 and new.lr_decay_epochs == (11, 13)
    assert budget_plan.shorten(RECIPE, 4, 220.0, epoch_s=10.0, eval_s=5.0) == RECIPE
    # growth before the dense epochs end adds dense epochs: 300 s left (273 usable); the 12 epochs to come cost
    # 8 x 10 + 4 x 30 + 2 x 5 + 6 = 216 s, each dense one added 10 s more (5 fit: 271 s with a third evaluation)
    small = dataclasses.replace(RECIPE, images_per_epoch=1000)
    grown = budget_plan.lengthen(small, 4, 300.0, 10.0, 5.0, max_images=64_000, sparse_epoch_s=30.0)
    assert grown.epochs == 21 and grown.dense_epochs == 17 and grown.lr_decay_epochs == (17, 19)


def test_the_last_epoch_gets_the_images_that_fit_within_the_recipe():
    # 40 s per epoch of 2,000 images: 100 s fit 5,000, in whole batches of 16
    assert last_epoch_images(2000, 16, 100.0, 40.0, 10**6) == 4992
    assert last_epoch_images(2000, 16, 100.0, 40.0, 3000) == 3000  # the recipe's images left
    assert last_epoch_images(2000, 16, 20.0, 40.0, 10**6) == 2000  # too little time: the deadline cuts
    assert last_epoch_images(2000, 16, -5.0, 40.0, 10**6) == 2000
    with pytest.raises(ValueError):
        last_epoch_images(2000, 16, 100.0, 0.0, 10**6)
