"""A wall-clock budget for synthetic runs (``--time-budget MINUTES``): measure this machine, then fit the recipe.

The run first times a few training steps of a throwaway copy of itself (same model, data, processes, precision)
and the evaluation of a few validation images. :func:`fit_to_budget` then keeps the recipe's shape (epochs, LR
decay points, dense epochs, evaluations) and gives it as many images per epoch as the time left allows, at most the
recipe's own; when fewer than ``MIN_STEPS_PER_EPOCH`` steps per epoch would be left it takes fewer epochs instead,
with the decay points scaled. A fast machine trains the whole recipe and ends early; a slow one trains less and
still ends on time. The run's clock starts when :func:`~ssdkit.engine.trainer.fit` is called.

The plan is checked again after every epoch (:class:`BudgetKeeper`): when the epochs still to come no longer fit at
the speed the epochs so far had (the machine got busy, or the probe was optimistic), :func:`shorten` leaves out the
next of them, so the run keeps its ending (LR decays, the last epochs on sparse images) and still ends on time;
when time is left over (the probe was cautious), :func:`lengthen` adds epochs at the current learning rate, before
the next LR decay, up to the recipe's images.

The functions here are pure except :func:`measure_speed` and :func:`apply_time_budget`, the trainer's hook.
"""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from typing import Callable

import torch

from .config import ConfigError, TrainConfig, scale_epochs

__all__ = [
    "probe_seconds",
    "RunShape",
    "BudgetPlan",
    "count_evals",
    "predicted_seconds",
    "fit_to_budget",
    "measure_speed",
    "apply_time_budget",
    "START_KEY",
    "MIN_STEPS_PER_EPOCH",
    "SMALL_RECIPE_IMAGES",
    "shorten",
    "lengthen",
    "BudgetKeeper",
    "EVAL_KEY",
]

START_KEY = "budget_started_at"  # TrainConfig.extra: time.time() when fit() was called
EVAL_KEY = "budget_eval_s"  # TrainConfig.extra: the probe's seconds per evaluation (set when the budget applies)
RECIPE_KEY = "budget_recipe_images"  # TrainConfig.extra: the recipe's training images, the most a run may grow to
MIN_STEPS_PER_EPOCH = 20  # fewer steps than this per epoch: take fewer epochs instead
FINISH_SECONDS = 6.0  # after the last evaluation: plots, the final table, the processes' exit
EPOCH_SECONDS = 0.5  # per epoch besides its steps: loader start, last.pt
SAFETY = 0.06  # the share of the time left that is kept free for a machine that slows down
GROW_SAFETY = 0.09  # the share kept free when epochs are added
PROBE_WARMUP_STEPS = 1  # steps not timed (oneDNN builds its kernels in the first ones)
PROBE_STEPS = 16  # steps timed (a few seconds: the machine's speed wanders over shorter spans)
PROBE_EVAL_BATCHES = 2  # validation batches timed
# epochs timed before the keeper may shorten a run: the first one alone also holds one-time costs (loader and
# kernel start-up) and whatever else the machine did in that minute
MIN_EPOCHS_MEASURED = 2
SMALL_RECIPE_IMAGES = 2000  # recipes of at most this many training images run as they are (not measured)


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


@dataclass(frozen=True)
class BudgetPlan:
    """What :func:`fit_to_budget` chose: the fitted ``shape`` and the time it expects it to take."""

    shape: RunShape
    whole_recipe: bool  # the recipe fits as it is
    seconds_left: float  # budget minus the time already spent when the plan was made
    predicted_s: float  # training + evaluations + finish, as measured on this machine

    def describe(self, recipe: RunShape, budget_s: float, images_per_s: float, eval_s: float) -> str:
        s = self.shape
        decay = ", ".join(map(str, s.lr_decay_epochs)) or "none"
        what = (
            "the whole recipe fits"
            if self.whole_recipe
            else f"fits {s.images:,} of the recipe's {recipe.images:,} training images"
        )
        return (
            f"time budget {budget_s / 60:g} min: measured {images_per_s:.1f} training images/s and "
            f"{eval_s:.1f} s per evaluation here; {what}: {s.epochs} epochs of {s.images_per_epoch:,} images, "
            f"LR decay at epoch {decay}, evaluation every {s.val_interval} epochs; expected to end "
            f"{self.predicted_s:.0f} s from now ({self.seconds_left:.0f} s left)"
        )


def count_evals(epochs: int, val_interval: int) -> int:
    """Evaluations of a run: after every ``val_interval``-th epoch and after the last one."""
    return epochs // val_interval + (epochs % val_interval != 0)


def predicted_seconds(shape: RunShape, images_per_s: float, eval_s: float) -> float:
    """Seconds that ``shape`` takes at ``images_per_s`` training images per second and ``eval_s`` per evaluation."""
    return (
        shape.images / images_per_s
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


def shorten(shape: RunShape, done: int, seconds_left: float, epoch_s: float, eval_s: float) -> RunShape:
    """``shape`` after ``done`` epochs, with as few of the epochs still to come left out as lets the rest end within
    ``seconds_left`` (less the ``SAFETY`` share) at ``epoch_s`` per epoch and ``eval_s`` per evaluation.

    The epochs left out are the *next* ones: every later epoch, decay point and the dense-epoch count move earlier
    by the number left out (never before ``done``), so the run keeps its ending. At least one epoch stays. Returns
    ``shape`` itself when everything fits."""
    remaining = shape.epochs - done
    usable = seconds_left * (1.0 - SAFETY)

    def cost(keep: int) -> float:
        return keep * epoch_s + _evals_after(done, done + keep, shape.val_interval) * eval_s + FINISH_SECONDS

    if remaining <= 1 or cost(remaining) <= usable:
        return shape
    keep = next((k for k in range(remaining - 1, 0, -1) if cost(k) <= usable), 1)
    skip = remaining - keep

    def moved(boundary: int) -> int:  # an epoch boundary (epochs done before it) still ahead moves back by `skip`
        return boundary if boundary <= done else max(done, boundary - skip)

    return dataclasses.replace(
        shape,
        epochs=done + keep,
        lr_decay_epochs=tuple(moved(d) for d in shape.lr_decay_epochs),
        dense_epochs=moved(shape.dense_epochs),
    )


def lengthen(
    shape: RunShape, done: int, seconds_left: float, epoch_s: float, eval_s: float, max_images: int
) -> RunShape:
    """``shape`` after ``done`` epochs with as many epochs added as still end within ``seconds_left`` less the
    ``GROW_SAFETY`` share (more than :func:`shorten` keeps free, so that noise does not grow a run and then shrink
    it), the total at most ``max_images`` training images. The epochs are added next, at the current learning
    rate, before the next LR decay point still ahead, so the ending (the last decays) stays; after the last decay
    point nothing is added. Returns ``shape`` itself when nothing can be added."""
    if not any(d > done for d in shape.lr_decay_epochs):
        return shape
    usable = seconds_left * (1.0 - GROW_SAFETY)
    remaining = shape.epochs - done

    def cost(keep: int) -> float:
        return keep * epoch_s + _evals_after(done, done + keep, shape.val_interval) * eval_s + FINISH_SECONDS

    most = max(0, max_images // shape.images_per_epoch - shape.epochs)
    add = next((a for a in range(most, 0, -1) if cost(remaining + a) <= usable), 0)
    if add == 0:
        return shape

    def moved(boundary: int) -> int:  # an epoch boundary still ahead moves later by `add`
        return boundary if boundary <= done else boundary + add

    return dataclasses.replace(
        shape,
        epochs=shape.epochs + add,
        lr_decay_epochs=tuple(moved(d) for d in shape.lr_decay_epochs),
        dense_epochs=moved(shape.dense_epochs),
    )


def fit_to_budget(recipe: RunShape, seconds_left: float, images_per_s: float, eval_s: float) -> BudgetPlan:
    """The largest run of ``recipe``'s shape that ends within ``seconds_left`` (after a ``SAFETY`` share is kept
    free). Images per epoch are whole batches. Raises :class:`ConfigError` when not even one epoch of
    ``MIN_STEPS_PER_EPOCH`` steps fits."""
    if images_per_s <= 0 or eval_s < 0:
        raise ValueError(f"need a positive speed and a non-negative evaluation time, got {images_per_s}, {eval_s}")
    usable = seconds_left * (1.0 - SAFETY)
    if predicted_seconds(recipe, images_per_s, eval_s) <= usable:
        return BudgetPlan(recipe, True, seconds_left, predicted_seconds(recipe, images_per_s, eval_s))
    batch = recipe.batch_size
    min_images = MIN_STEPS_PER_EPOCH * batch
    for epochs in range(recipe.epochs, 0, -1):
        shape = _with_epochs(recipe, epochs, min_images)
        fixed = predicted_seconds(shape, images_per_s, eval_s) - shape.images / images_per_s
        per_epoch = int((usable - fixed) * images_per_s / epochs) // batch * batch
        if per_epoch >= min_images or (epochs == 1 and per_epoch >= batch):
            shape = _with_epochs(recipe, epochs, min(per_epoch, recipe.images_per_epoch))
            return BudgetPlan(shape, False, seconds_left, predicted_seconds(shape, images_per_s, eval_s))
    raise ConfigError(
        f"--time-budget: {seconds_left:.0f} s are left, too little to train one batch and evaluate "
        f"on this machine ({images_per_s:.1f} images/s, {eval_s:.1f} s per evaluation)"
    )


def probe_seconds(step_ends: list[float], warmup: int) -> float:
    """Seconds of the probe's timed steps, from the times at which its steps ended (``step_ends``, one per step,
    the first ``warmup`` steps untimed): the median step times their number, so that one slow step (another job's
    burst) does not set the whole run's plan. The plan's images per epoch stay what the probe measured (the keeper
    changes only the number of epochs): one default run held to AVX2 measured 53.9 images/s, trained at 65-92, and
    its epochs stayed a third smaller than the other runs'."""
    if warmup < 1 or len(step_ends) <= warmup:
        raise ValueError(f"need at least one untimed and one timed step, got {len(step_ends)} steps, warmup {warmup}")
    steps = [b - a for a, b in zip(step_ends[warmup - 1 :], step_ends[warmup:])]
    return statistics.median(steps) * len(steps)


def measure_speed(cfg: TrainConfig, rank: int, world: int) -> tuple[float, float]:
    """``(training images/s of all processes together, seconds of one evaluation of the val split)`` of a
    throwaway copy of the run (built by :func:`~ssdkit.engine.builders.build_run` into a temporary folder):
    ``PROBE_STEPS`` timed steps on dense images (the slowest epochs) after ``PROBE_WARMUP_STEPS``, and rank 0
    timing ``PROBE_EVAL_BATCHES`` validation batches; the steps' time is their median (:func:`probe_seconds`).
    Every process gets the same numbers (the slowest process's steps count)."""
    from .builders import build_run
    from .distributed import all_reduce_sum
    from .trainer import evaluate, train_parts_epoch

    steps = PROBE_WARMUP_STEPS + PROBE_STEPS
    with tempfile.TemporaryDirectory(prefix="ssdkit-budget-") as folder:
        probe = dataclasses.replace(
            cfg,
            synthetic_train_size=steps * cfg.batch_size,
            epochs=1,
            lr_decay_epochs=[],
            warmup_epochs=0.0,
            synthetic_val_size=PROBE_EVAL_BATCHES * cfg.batch_size,
            lr=cfg.lr * 1e-3,
            output=folder,
            resume=None,
            time_budget=0,
            progress=False,
        )
        parts = build_run(probe, rank, world)
        parts.prepare_epoch(0)
        parts.train_loader.batch_sampler.sampler.set_epoch(0)
        marks: list[float] = []
        train_parts_epoch(parts, 0, log_interval=10**9, on_step=lambda state: marks.append(time.perf_counter()))
        train_s = torch.tensor([probe_seconds(marks, PROBE_WARMUP_STEPS)], dtype=torch.float64)
        eval_s = 0.0
        if rank == 0:
            start = time.perf_counter()
            evaluate(parts.net, parts.val_loader, parts.metric, parts.device)
            eval_s = (time.perf_counter() - start) * cfg.synthetic_val_size / len(parts.val_set)
        if parts.logger is not None:
            parts.logger.close()
    # the slowest process's steps and rank 0's evaluation, the same numbers on every process
    if world > 1:
        torch.distributed.all_reduce(train_s, op=torch.distributed.ReduceOp.MAX)
    eval_s = float(all_reduce_sum(torch.tensor([eval_s], dtype=torch.float64)).item())
    return PROBE_STEPS * cfg.batch_size / float(train_s.item()), eval_s


def apply_time_budget(cfg: TrainConfig, say: Callable[[str], None], rank: int, world: int) -> TrainConfig:
    """The trainer's hook: ``cfg`` fitted to ``cfg.time_budget`` minutes (counted from ``cfg.extra[START_KEY]``),
    or ``cfg`` itself without a budget, when resuming, or for a recipe of at most ``SMALL_RECIPE_IMAGES`` training
    images (measuring would cost a good share of its time). Rank 0 announces the choice. The run's own
    :func:`~ssdkit.engine.builders.build_run` seeds everything again, so the fitted run is the same as one given the
    fitted recipe directly."""
    if not cfg.time_budget or cfg.resume or cfg.epochs * cfg.synthetic_train_size <= SMALL_RECIPE_IMAGES:
        return cfg
    started = float(cfg.extra.get(START_KEY, time.time()))
    images_per_s, eval_s = measure_speed(cfg, rank, world)
    recipe = RunShape(
        cfg.epochs,
        cfg.synthetic_train_size,
        tuple(cfg.lr_decay_epochs),
        cfg.synthetic_dense_epochs,
        cfg.val_interval,
        cfg.batch_size,
    )
    budget_s = cfg.time_budget * 60.0
    plan = fit_to_budget(recipe, budget_s - (time.time() - started), images_per_s, eval_s)
    if rank == 0:
        say(plan.describe(recipe, budget_s, images_per_s, eval_s))
    shape = plan.shape
    return dataclasses.replace(
        cfg,
        epochs=shape.epochs,
        synthetic_train_size=shape.images_per_epoch,
        lr_decay_epochs=list(shape.lr_decay_epochs),
        synthetic_dense_epochs=shape.dense_epochs,
        val_interval=shape.val_interval,
        extra={**cfg.extra, START_KEY: started, EVAL_KEY: eval_s, RECIPE_KEY: recipe.images},
    )


class BudgetKeeper:
    """Checks the plan after every epoch: shortens the run (:func:`shorten`) when the rest no longer fits, and
    lengthens it (:func:`lengthen`, at most to the recipe's images) when time is left over.

    Rank 0 decides from its clock and the median of the epochs' seconds so far (to add epochs once the dense epochs
    are over: of the sparse epochs so far, which make their images faster); every process applies the same
    change to the objects it is given: ``cfg`` (the run's config: epochs, decay points, dense epochs; the synthetic
    set reads the latter), the loop's ``plan.epochs``, the scheduler's ``decay_epochs`` and the checkpoints'
    ``meta["config"]``, so a resumed run continues the shortened one."""

    def __init__(self, cfg: TrainConfig, plan, scheduler, meta: dict, rank: int, world: int):
        self.cfg, self.plan, self.scheduler, self.meta = cfg, plan, scheduler, meta
        self.rank, self.world = rank, world
        self.budget_s = float(cfg.time_budget) * 60.0
        self.started = float(cfg.extra[START_KEY])
        self.eval_s = float(cfg.extra[EVAL_KEY])
        self.max_images = int(cfg.extra.get(RECIPE_KEY, 0))  # 0: a plan from before runs could grow
        self.epoch_times: list[float] = []
        self.sparse_times: list[float] = []  # epochs after the dense ones

    @classmethod
    def for_run(cls, cfg: TrainConfig, plan, scheduler, meta: dict, rank: int, world: int) -> BudgetKeeper | None:
        """A keeper when ``cfg`` was fitted to a time budget (and is not resumed), else None."""
        if not cfg.time_budget or cfg.resume or EVAL_KEY not in cfg.extra or START_KEY not in cfg.extra:
            return None
        return cls(cfg, plan, scheduler, meta, rank, world)

    def shape(self) -> RunShape:
        c = self.cfg
        return RunShape(
            c.epochs, c.synthetic_train_size, tuple(c.lr_decay_epochs), c.synthetic_dense_epochs, c.val_interval, 1
        )

    def after_epoch(self, done: int, epoch_s: float, eval_s: float | None = None) -> str | None:
        """After ``done`` epochs, the last of which trained for ``epoch_s`` seconds (and evaluated in ``eval_s``):
        shorten the run if needed (a collective in several processes). Returns what changed, for the log."""
        from .distributed import broadcast_object

        if eval_s is not None:
            self.eval_s = eval_s
        # the median epoch so far: one epoch slowed by a passing job must not cut epochs the run then has time for
        self.epoch_times.append(epoch_s)
        if self.cfg.synthetic_dense_epochs is not None and done > self.cfg.synthetic_dense_epochs:
            self.sparse_times.append(epoch_s)
        typical = statistics.median(self.epoch_times)
        # once the dense epochs are over every epoch still to come is sparse (faster to make): growth times them by
        # the sparse ones so far; shortening keeps the median of all epochs, so one slow sparse epoch cuts nothing
        sparse = statistics.median(self.sparse_times) if self.sparse_times else typical
        change = None
        if self.rank == 0 and len(self.epoch_times) >= MIN_EPOCHS_MEASURED:
            left = self.budget_s - (time.time() - self.started)
            timed_by = typical
            new = shorten(self.shape(), done, left, typical, self.eval_s)
            if new == self.shape():
                timed_by = min(typical, sparse)
                new = lengthen(new, done, left, timed_by, self.eval_s, self.max_images)
            if new != self.shape():
                change = {"shape": dataclasses.asdict(new), "left": left, "epoch_s": timed_by}
        if self.world > 1:
            change = broadcast_object(change)
        if change is None:
            return None
        new = RunShape(**{k: tuple(v) if isinstance(v, list) else v for k, v in change["shape"].items()})
        added = new.epochs - self.cfg.epochs
        self.cfg.epochs = self.plan.epochs = new.epochs
        self.cfg.lr_decay_epochs = list(new.lr_decay_epochs)
        self.cfg.synthetic_dense_epochs = new.dense_epochs
        self.scheduler.decay_epochs[:] = list(new.lr_decay_epochs)
        self.meta["config"] = self.cfg.to_dict()
        if self.rank == 0 and self.cfg.output:
            with open(os.path.join(self.cfg.output, "config.json"), "w") as f:
                json.dump(self.meta["config"], f, indent=2)
        decay = ", ".join(map(str, new.lr_decay_epochs)) or "none"
        return (
            f"time budget: {change['left']:.0f} s left at {change['epoch_s']:.1f} s per epoch and "
            f"{self.eval_s:.1f} s per evaluation; {'adding' if added > 0 else 'leaving out'} {abs(added)} epoch(s): "
            f"the run now ends after epoch {new.epochs} (LR decay at epoch {decay})"
        )
