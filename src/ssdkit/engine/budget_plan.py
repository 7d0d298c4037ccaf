"""The time budget's arithmetic (pure functions): what a run of a given shape costs, the largest one that fits, and
how a running plan is shortened or lengthened. :mod:`.budget` measures the machine and applies these to a run.

Costs come in two rates, because a synthetic run has two kinds of epochs: the *dense* ones (the first
``dense_epochs``: more objects per image, drawn at ``--synthetic-dense-scale`` of the input size) and the *sparse*
ones after them (1-10 objects at the input size). Every function takes the dense rate and, optionally, the sparse
one; without it every epoch costs the dense rate.
"""

from __future__ import annotations

import dataclasses
import statistics
from dataclasses import dataclass
from typing import Sequence

from .config import ConfigError, scale_epochs

__all__ = [
    "RunShape",
    "BudgetPlan",
    "count_evals",
    "predicted_seconds",
    "fit_to_budget",
    "shorten",
    "lengthen",
    "probe_seconds",
    "probe_ratio",
    "last_epoch_images",
    "MIN_STEPS_PER_EPOCH",
    "FINISH_SECONDS",
    "EPOCH_SECONDS",
    "SAFETY",
    "GROW_SAFETY",
]

MIN_STEPS_PER_EPOCH = 20  # fewer steps than this per epoch: take fewer epochs instead
FINISH_SECONDS = 6.0  # after the last evaluation: plots, the final table, the processes' exit
EPOCH_SECONDS = 0.5  # per epoch besides its steps: loader start, last.pt
SAFETY = 0.06  # the share of the time left that is kept free for a machine that slows down
GROW_SAFETY = 0.09  # the share kept free when epochs are added


@dataclass(frozen=True)
class RunShape:
    """The part of a synthetic run that the budget fits: sizes in images, epochs 1-based as in the config."""

    epochs: int
    images_per_epoch: int
    lr_decay_epochs: tuple[int, ...]
    dense_epochs: int
    val_interval: int
    batch_size: int

    @property
    def images(self) -> int:
        return self.epochs * self.images_per_epoch

    def dense_count(self) -> int:
        """How many of the epochs are dense."""
        return max(0, min(self.dense_epochs, self.epochs))


@dataclass(frozen=True)
class BudgetPlan:
    """What :func:`fit_to_budget` chose: the fitted ``shape`` and the time it expects it to take."""

    shape: RunShape
    whole_recipe: bool  # the recipe fits as it is
    seconds_left: float  # budget minus the time already spent when the plan was made
    predicted_s: float  # training + evaluations + finish, as measured on this machine

    def describe(
        self,
        recipe: RunShape,
        budget_s: float,
        images_per_s: float,
        eval_s: float,
        sparse_images_per_s: float | None = None,
    ) -> str:
        s = self.shape
        decay = ", ".join(map(str, s.lr_decay_epochs)) or "none"
        what = (
            "the whole recipe fits"
            if self.whole_recipe
            else f"fits {s.images:,} of the recipe's {recipe.images:,} training images"
        )
        speed = f"{images_per_s:.1f} training images/s"
        if sparse_images_per_s is not None and recipe.dense_count() < recipe.epochs:
            speed = f"{images_per_s:.1f} training images/s in the dense epochs, {sparse_images_per_s:.1f} after them,"
        return (
            f"time budget {budget_s / 60:g} min: measured {speed} and "
            f"{eval_s:.1f} s per evaluation here; {what}: {s.epochs} epochs of {s.images_per_epoch:,} images, "
            f"LR decay at epoch {decay}, evaluation every {s.val_interval} epochs; expected to end "
            f"{self.predicted_s:.0f} s from now ({self.seconds_left:.0f} s left)"
        )


def count_evals(epochs: int, val_interval: int) -> int:
    """Evaluations of a run: after every ``val_interval``-th epoch and after the last one."""
    return epochs // val_interval + (epochs % val_interval != 0)


def _seconds_per_image_per_epoch(shape: RunShape, images_per_s: float, sparse_images_per_s: float | None) -> float:
    """Training seconds of ``shape`` per image of each epoch: the dense epochs at ``images_per_s``, the others at
    ``sparse_images_per_s`` (default: the same)."""
    dense = shape.dense_count()
    return dense / images_per_s + (shape.epochs - dense) / (sparse_images_per_s or images_per_s)


def predicted_seconds(
    shape: RunShape, images_per_s: float, eval_s: float, sparse_images_per_s: float | None = None
) -> float:
    """Seconds that ``shape`` takes at ``images_per_s`` training images per second in the dense epochs
    (``sparse_images_per_s`` in the others; default the same) and ``eval_s`` per evaluation."""
    return (
        shape.images_per_epoch * _seconds_per_image_per_epoch(shape, images_per_s, sparse_images_per_s)
        + shape.epochs * EPOCH_SECONDS
        + count_evals(shape.epochs, shape.val_interval) * eval_s
        + FINISH_SECONDS
    )


def _with_epochs(recipe: RunShape, epochs: int, images_per_epoch: int) -> RunShape:
    """``recipe`` squeezed to ``epochs``: decay points, dense epochs and the evaluation interval scaled alike."""
    if epochs == recipe.epochs:
        return dataclasses.replace(recipe, images_per_epoch=images_per_epoch)
    decay = tuple(scale_epochs(recipe.lr_decay_epochs, recipe.epochs, epochs)) if recipe.lr_decay_epochs else ()
    dense = min(epochs, round(recipe.dense_epochs * epochs / recipe.epochs))
    interval = max(1, round(recipe.val_interval * epochs / recipe.epochs))
    return RunShape(epochs, images_per_epoch, decay, dense, interval, recipe.batch_size)


def _evals_after(done: int, epochs: int, val_interval: int) -> int:
    """Evaluations in epochs ``done + 1 .. epochs`` (1-based)."""
    return sum(1 for e in range(done + 1, epochs + 1) if e % val_interval == 0 or e == epochs)


def _rest_seconds(
    done: int, keep: int, dense_end: int, val_interval: int, epoch_s: float, eval_s: float, sparse_epoch_s: float
) -> float:
    """Seconds of epochs ``done + 1 .. done + keep`` when the dense epochs end after epoch ``dense_end``."""
    dense = max(0, min(dense_end, done + keep) - done)
    return (
        dense * epoch_s
        + (keep - dense) * sparse_epoch_s
        + _evals_after(done, done + keep, val_interval) * eval_s
        + FINISH_SECONDS
    )


def shorten(
    shape: RunShape, done: int, seconds_left: float, epoch_s: float, eval_s: float, sparse_epoch_s: float | None = None
) -> RunShape:
    """``shape`` after ``done`` epochs, with as few of the epochs still to come left out as lets the rest end within
    ``seconds_left`` (less the ``SAFETY`` share) at ``epoch_s`` per dense epoch (``sparse_epoch_s`` per later
    epoch; default the same) and ``eval_s`` per evaluation.

    The epochs left out are the *next* ones: every later epoch, decay point and the dense-epoch count move earlier
    by the number left out (never before ``done``), so the run keeps its ending. At least one epoch stays. Returns
    ``shape`` itself when everything fits."""
    remaining = shape.epochs - done
    usable = seconds_left * (1.0 - SAFETY)
    sparse_s = epoch_s if sparse_epoch_s is None else sparse_epoch_s

    def moved(boundary: int, skip: int) -> int:  # an epoch boundary still ahead moves back by `skip`
        return boundary if boundary <= done else max(done, boundary - skip)

    def cost(keep: int) -> float:
        dense_end = moved(shape.dense_epochs, remaining - keep)
        return _rest_seconds(done, keep, dense_end, shape.val_interval, epoch_s, eval_s, sparse_s)

    if remaining <= 1 or cost(remaining) <= usable:
        return shape
    keep = next((k for k in range(remaining - 1, 0, -1) if cost(k) <= usable), 1)
    skip = remaining - keep
    return dataclasses.replace(
        shape,
        epochs=done + keep,
        lr_decay_epochs=tuple(moved(d, skip) for d in shape.lr_decay_epochs),
        dense_epochs=moved(shape.dense_epochs, skip),
    )


def lengthen(
    shape: RunShape,
    done: int,
    seconds_left: float,
    epoch_s: float,
    eval_s: float,
    max_images: int,
    sparse_epoch_s: float | None = None,
) -> RunShape:
    """``shape`` after ``done`` epochs with as many epochs added as still end within ``seconds_left`` less the
    ``GROW_SAFETY`` share (more than :func:`shorten` keeps free, so that noise does not grow a run and then shrink
    it), the total at most ``max_images`` training images; ``epoch_s`` per dense epoch, ``sparse_epoch_s`` per
    later one (default the same). The epochs are added next, at the current learning rate, before the next LR
    decay point still ahead (dense epochs while the dense ones last), so the ending (the last decays) stays; after
    the last decay point nothing is added. Returns ``shape`` itself when nothing can be added."""
    if not any(d > done for d in shape.lr_decay_epochs):
        return shape
    usable = seconds_left * (1.0 - GROW_SAFETY)
    remaining = shape.epochs - done
    sparse_s = epoch_s if sparse_epoch_s is None else sparse_epoch_s

    def moved(boundary: int, add: int) -> int:  # an epoch boundary still ahead moves later by `add`
        return boundary if boundary <= done else boundary + add

    def cost(add: int) -> float:
        dense_end = moved(shape.dense_epochs, add)
        return _rest_seconds(done, remaining + add, dense_end, shape.val_interval, epoch_s, eval_s, sparse_s)

    most = max(0, max_images // shape.images_per_epoch - shape.epochs)
    add = next((a for a in range(most, 0, -1) if cost(a) <= usable), 0)
    if add == 0:
        return shape
    return dataclasses.replace(
        shape,
        epochs=shape.epochs + add,
        lr_decay_epochs=tuple(moved(d, add) for d in shape.lr_decay_epochs),
        dense_epochs=moved(shape.dense_epochs, add),
    )


def last_epoch_images(images_per_epoch: int, batch: int, seconds: float, epoch_s: float, most: int) -> int:
    """Images for a run's last epoch that has ``seconds`` to train, at ``epoch_s`` per epoch of
    ``images_per_epoch``: whole batches, at least ``images_per_epoch`` (a last epoch slower than that is ended by
    its deadline, not planned smaller) and at most ``most`` (the recipe's images not yet trained)."""
    if epoch_s <= 0 or images_per_epoch <= 0 or batch <= 0:
        raise ValueError(f"need positive sizes and epoch time, got {images_per_epoch}, {batch}, {epoch_s}")
    fits = int(max(seconds, 0.0) / epoch_s * images_per_epoch) // batch * batch
    return max(images_per_epoch, min(fits, most))


def fit_to_budget(
    recipe: RunShape, seconds_left: float, images_per_s: float, eval_s: float, sparse_images_per_s: float | None = None
) -> BudgetPlan:
    """The largest run of ``recipe``'s shape that ends within ``seconds_left`` (after a ``SAFETY`` share is kept
    free), at ``images_per_s`` in the dense epochs and ``sparse_images_per_s`` in the others (default the same).
    Images per epoch are whole batches. Raises :class:`ConfigError` when not even one epoch of
    ``MIN_STEPS_PER_EPOCH`` steps fits."""
    rates = (images_per_s, sparse_images_per_s if sparse_images_per_s is not None else images_per_s)
    if min(rates) <= 0 or eval_s < 0:
        raise ValueError(f"need positive speeds and a non-negative evaluation time, got {rates}, {eval_s}")
    usable = seconds_left * (1.0 - SAFETY)
    whole = predicted_seconds(recipe, images_per_s, eval_s, sparse_images_per_s)
    if whole <= usable:
        return BudgetPlan(recipe, True, seconds_left, whole)
    batch = recipe.batch_size
    min_images = MIN_STEPS_PER_EPOCH * batch
    for epochs in range(recipe.epochs, 0, -1):
        shape = _with_epochs(recipe, epochs, min_images)
        per_image = _seconds_per_image_per_epoch(shape, images_per_s, sparse_images_per_s)
        fixed = predicted_seconds(shape, images_per_s, eval_s, sparse_images_per_s) - min_images * per_image
        per_epoch = int((usable - fixed) / per_image) // batch * batch
        if per_epoch >= min_images or (epochs == 1 and per_epoch >= batch):
            shape = _with_epochs(recipe, epochs, min(per_epoch, recipe.images_per_epoch))
            return BudgetPlan(
                shape, False, seconds_left, predicted_seconds(shape, images_per_s, eval_s, sparse_images_per_s)
            )
    raise ConfigError(
        f"--time-budget: {seconds_left:.0f} s are left, too little to train one batch and evaluate "
        f"on this machine ({images_per_s:.1f} images/s, {eval_s:.1f} s per evaluation)"
    )


def probe_seconds(rounds: Sequence[Sequence[float]], warmup: int) -> float:
    """Seconds of one probe step: the median over the timed steps of every round, from the times at which each
    round's steps ended (``rounds``: one list per round, its first ``warmup`` steps untimed, as they hold the
    round's start-up). The median, so that one slow step (another job's burst) does not set the whole run's plan:
    the plan's images per epoch stay what the probe measured (the keeper changes only the number of epochs), so a
    misread step would size every epoch of the run."""
    steps: list[float] = []
    for ends in rounds:
        if warmup < 1 or len(ends) <= warmup:
            raise ValueError(f"need at least one untimed and one timed step, got {len(ends)} steps, warmup {warmup}")
        steps += [b - a for a, b in zip(ends[warmup - 1 :], ends[warmup:])]
    if not steps:
        raise ValueError("need at least one round of untimed and timed steps")
    return statistics.median(steps)


def probe_ratio(rounds: Sequence[Sequence[float]], other_rounds: Sequence[Sequence[float]], warmup: int) -> float:
    """How many times a step of the other kind takes a step of the first, from probe rounds that alternate the two
    kinds (``rounds[r]`` and ``other_rounds[r]`` ran one after the other, as in :func:`probe_seconds`): the median
    over the rounds of each round's ratio, so that a machine whose speed moves during the probe, which moves both
    steps of a round alike, leaves the ratio as it is."""
    if len(rounds) != len(other_rounds) or not rounds:
        raise ValueError(f"need as many rounds of each kind, at least one, got {len(rounds)} and {len(other_rounds)}")
    return statistics.median(
        probe_seconds([other], warmup) / probe_seconds([ends], warmup) for ends, other in zip(rounds, other_rounds)
    )
