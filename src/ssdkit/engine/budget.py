"""A wall-clock budget for synthetic runs (``--time-budget MINUTES``): measure this machine, then fit the recipe.

The run first times a few training steps of a throwaway copy of itself (same model, data, processes, precision),
on dense and on sparse images (the two kinds of epochs cost differently, :mod:`.budget_plan`), and the evaluation of
a few validation images. :func:`fit_to_budget` then keeps the recipe's shape (epochs, LR
decay points, dense epochs, evaluations) and gives it as many images per epoch as the time left allows, at most the
recipe's own; when fewer than ``MIN_STEPS_PER_EPOCH`` steps per epoch would be left it takes fewer epochs instead,
with the decay points scaled. A fast machine trains the whole recipe and ends early; a slow one trains less and
still ends on time. The run's clock starts when :func:`~ssdkit.engine.trainer.fit` is called.

The plan is checked again after every epoch (:class:`BudgetKeeper`): when the epochs still to come no longer fit at
the speed the epochs so far had (the machine got busy, or the probe was optimistic), :func:`shorten` leaves out the
next of them, so the run keeps its ending (LR decays, the last epochs on sparse images) and still ends on time;
when time is left over (the probe was cautious), :func:`lengthen` adds epochs at the current learning rate, before
the next LR decay, up to the recipe's images.

Whole epochs leave up to one epoch's time over at the end (25-60 s on a slow 2-core CPU), so the last epoch is
sized apart: it trains until its *deadline*, the budget's end less its evaluation (1.25x the last one timed),
``FINISH_SECONDS`` and ``DEADLINE_MARGIN_S``. Before it starts, the keeper gives it ``LAST_EPOCH_HEADROOM`` times
the images that fit until then at the speed so far (:func:`last_epoch_images`, ``LAST_KEY``; at most the recipe's
images), and the epoch stops at the deadline (checked every ``TIME_CHECK_STEPS`` steps): a machine that speeds up
trains on, one that slows down still ends on time.

The arithmetic is in :mod:`.budget_plan`; here :func:`measure_speed`, :func:`apply_time_budget` (the trainer's
hook) and the keeper.
"""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
import tempfile
import time
from typing import Callable

import torch

from .budget_plan import (
    EPOCH_SECONDS,
    FINISH_SECONDS,
    MIN_STEPS_PER_EPOCH,
    BudgetPlan,
    RunShape,
    count_evals,
    fit_to_budget,
    last_epoch_images,
    lengthen,
    predicted_seconds,
    probe_ratio,
    probe_seconds,
    shorten,
)
from .config import TrainConfig

__all__ = [
    "probe_seconds",
    "probe_ratio",
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
    "SPARSE_KEY",
    "LAST_KEY",
    "epoch_images",
]

START_KEY = "budget_started_at"  # TrainConfig.extra: time.time() when fit() was called
EVAL_KEY = "budget_eval_s"  # TrainConfig.extra: the probe's seconds per evaluation (set when the budget applies)
RECIPE_KEY = "budget_recipe_images"  # TrainConfig.extra: the recipe's training images, the most a run may grow to
SPARSE_KEY = "budget_sparse_ratio"  # TrainConfig.extra: seconds per image of a sparse epoch / of a dense one (probe)
LAST_KEY = "budget_last_epoch_images"  # TrainConfig.extra: [epoch (0-based), images] of the last epoch it sized
DEADLINE_EVAL_FACTOR = 1.25  # the last evaluation may take this much longer than the one before
DEADLINE_MARGIN_S = 5.0  # the deadline check's interval and the exit's noise
LAST_EPOCH_HEADROOM = 2.0  # the last epoch may hold the images of this many times its seconds to the deadline
PROBE_WARMUP_STEPS = 1  # steps of each round not timed (the loader's start; oneDNN builds its kernels in the first)
# the timed steps come in rounds that alternate the two kinds of epochs, so that a machine whose speed moves during
# the probe moves both kinds' times alike: their ratio prices the sparse epochs for most of the run
PROBE_ROUNDS = 4
PROBE_ROUND_STEPS = 4  # steps timed per round and kind
PROBE_STEPS = PROBE_ROUNDS * PROBE_ROUND_STEPS  # per kind of epoch (a few seconds: the speed wanders over less)
PROBE_EVAL_BATCHES = 2  # validation batches timed
# epochs timed before the keeper may shorten a run: the first one alone also holds one-time costs (loader and
# kernel start-up) and whatever else the machine did in that minute
MIN_EPOCHS_MEASURED = 2
SMALL_RECIPE_IMAGES = 2000  # recipes of at most this many training images run as they are (not measured)


def epoch_images(cfg: TrainConfig, epoch: int) -> int:
    """Training images of epoch ``epoch`` (0-based): ``synthetic_train_size``, or for the last epoch of a budgeted
    run what the keeper sized it to (``LAST_KEY``; a run continued with more epochs trains its new ones at the
    usual size)."""
    last = cfg.extra.get(LAST_KEY)
    return int(last[1]) if last and epoch == int(last[0]) else cfg.synthetic_train_size


def measure_speed(cfg: TrainConfig, rank: int, world: int) -> tuple[float, float, float]:
    """``(training images/s of all processes together in a dense epoch, the same in a later (sparse) epoch,
    seconds of one evaluation of the val split)`` of a throwaway copy of the run (built by
    :func:`~ssdkit.engine.builders.build_run` into a temporary folder): ``PROBE_ROUNDS`` rounds, each training a few
    steps of a dense epoch and then of a sparse one (dense images may be drawn smaller, ``--synthetic-dense-scale``;
    a run without sparse epochs times the dense ones only), the first ``PROBE_WARMUP_STEPS`` of each untimed, and
    rank 0 timing the evaluation of ``PROBE_EVAL_BATCHES`` validation batches, split over the processes as the run's.
    A dense step's time is the median of its ``PROBE_STEPS``
    timed steps (:func:`probe_seconds`), a sparse one's that times the median of the rounds' ratios of the two kinds
    (:func:`probe_ratio`). Every process gets the same numbers (the slowest process's steps count)."""
    from .builders import build_run
    from .distributed import all_reduce_sum
    from .trainer import train_parts_epoch
    from .validate import evaluate_shared

    with tempfile.TemporaryDirectory(prefix="ssdkit-budget-") as folder:
        probe = dataclasses.replace(
            cfg,
            synthetic_train_size=(PROBE_WARMUP_STEPS + PROBE_ROUND_STEPS) * cfg.batch_size,
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
        # the run's epochs of each kind (dense, then sparse when there are any): the epoch index chooses the images,
        # each round takes the next epoch of its kind
        bounds = sorted({0, min(max(cfg.synthetic_dense_epochs, 0), cfg.epochs), cfg.epochs})
        kinds = [range(a, b) for a, b in zip(bounds, bounds[1:])]
        rounds: list[list[list[float]]] = [[] for _ in kinds]
        for r in range(PROBE_ROUNDS):
            for kind, epochs in enumerate(kinds):
                epoch = epochs[r % len(epochs)]
                parts.prepare_epoch(epoch)
                parts.train_loader.batch_sampler.sampler.set_epoch(epoch)
                marks: list[float] = []
                train_parts_epoch(
                    parts, kind, log_interval=10**9, on_step=lambda state, mark=marks.append: mark(time.perf_counter())
                )
                rounds[kind].append(marks)
        # a dense step: the median of all rounds' steps; a sparse one: that times the median of the rounds' ratios of
        # the two kinds (each round's two kinds ran under the same machine speed); one kind only: one rate for all
        dense_s = probe_seconds(rounds[0], PROBE_WARMUP_STEPS)
        ratio = probe_ratio(rounds[0], rounds[1], PROBE_WARMUP_STEPS) if len(rounds) > 1 else 1.0
        seconds = [dense_s, dense_s * ratio]
        train_s = torch.tensor(seconds, dtype=torch.float64)
        start = time.perf_counter()
        evaluate_shared(parts.net, parts.val_loader, parts.metric, parts.device)  # each rank its share, as the run
        eval_s = (time.perf_counter() - start) * cfg.synthetic_val_size / len(parts.val_set) if rank == 0 else 0.0
        if parts.logger is not None:
            parts.logger.close()
    # the slowest process's steps and rank 0's evaluation, the same numbers on every process
    if world > 1:
        torch.distributed.all_reduce(train_s, op=torch.distributed.ReduceOp.MAX)
    eval_s = float(all_reduce_sum(torch.tensor([eval_s], dtype=torch.float64)).item())
    dense, sparse = (cfg.batch_size / float(s) for s in train_s.tolist())
    return dense, sparse, eval_s


def apply_time_budget(cfg: TrainConfig, say: Callable[[str], None], rank: int, world: int) -> TrainConfig:
    """The trainer's hook: ``cfg`` fitted to ``cfg.time_budget`` minutes (counted from ``cfg.extra[START_KEY]``),
    or ``cfg`` itself without a budget, when resuming, or for a recipe of at most ``SMALL_RECIPE_IMAGES`` training
    images (measuring would cost a good share of its time). Rank 0 announces the choice. The run's own
    :func:`~ssdkit.engine.builders.build_run` seeds everything again, so the fitted run is the same as one given the
    fitted recipe directly."""
    if not cfg.time_budget or cfg.resume or cfg.epochs * cfg.synthetic_train_size <= SMALL_RECIPE_IMAGES:
        return cfg
    started = float(cfg.extra.get(START_KEY, time.time()))
    images_per_s, sparse_per_s, eval_s = measure_speed(cfg, rank, world)
    recipe = RunShape(
        cfg.epochs,
        cfg.synthetic_train_size,
        tuple(cfg.lr_decay_epochs),
        cfg.synthetic_dense_epochs,
        cfg.val_interval,
        cfg.batch_size,
    )
    budget_s = cfg.time_budget * 60.0
    plan = fit_to_budget(recipe, budget_s - (time.time() - started), images_per_s, eval_s, sparse_per_s)
    if rank == 0:
        say(plan.describe(recipe, budget_s, images_per_s, eval_s, sparse_per_s))
    shape = plan.shape
    return dataclasses.replace(
        cfg,
        epochs=shape.epochs,
        synthetic_train_size=shape.images_per_epoch,
        lr_decay_epochs=list(shape.lr_decay_epochs),
        synthetic_dense_epochs=shape.dense_epochs,
        val_interval=shape.val_interval,
        extra={
            **cfg.extra,
            START_KEY: started,
            EVAL_KEY: eval_s,
            RECIPE_KEY: recipe.images,
            SPARSE_KEY: images_per_s / sparse_per_s,
        },
    )


class BudgetKeeper:
    """Checks the plan after every epoch: shortens the run (:func:`shorten`) when the rest no longer fits, and
    lengthens it (:func:`lengthen`, at most to the recipe's images) when time is left over.

    Rank 0 decides from its clock and the epochs' seconds so far, each kind apart: a dense epoch costs the median
    of the dense ones so far, a later (sparse) one the median of the sparse ones, or, before two of them have run,
    the dense median times the probe's ratio of the two (``SPARSE_KEY``: sparse images may be larger and
    faster to make, so neither one slow sparse epoch nor the dense epochs' time decides). Every process applies the same
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
        self.sparse_ratio = float(cfg.extra.get(SPARSE_KEY, 1.0))  # seconds per image: sparse / dense (probe)
        self.dense_times: list[float] = []
        self.sparse_times: list[float] = []  # epochs after the dense ones
        self.deadline: float | None = None  # time.time() at which the last epoch stops (set before it starts)

    def epoch_seconds(self) -> tuple[float, float]:
        """``(seconds of a dense epoch, of a sparse one)`` as the epochs so far tell: medians, so that one epoch
        slowed by a passing job does not cut epochs the run then has time for."""
        ratio = self.sparse_ratio
        if self.dense_times:
            dense = statistics.median(self.dense_times)
        else:
            dense = statistics.median(self.sparse_times) / ratio if self.sparse_times else 0.0
        if len(self.sparse_times) >= MIN_EPOCHS_MEASURED:
            return dense, statistics.median(self.sparse_times)
        return dense, dense * ratio

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
        shorten or lengthen the run if needed, and when the next epoch is the last, size it and set its deadline
        (a collective in several processes: rank 0's clock decides). Returns what changed, for the log."""
        from .distributed import broadcast_object

        if eval_s is not None:
            self.eval_s = eval_s
        dense_now = self.cfg.synthetic_dense_epochs is not None and done <= self.cfg.synthetic_dense_epochs
        (self.dense_times if dense_now else self.sparse_times).append(epoch_s)
        change = self._decide(done) if self.rank == 0 else None
        if self.world > 1:
            change = broadcast_object(change)
        if change is None:
            return None
        lines = []
        if "shape" in change:
            lines.append(self._apply_shape(change))
        if "deadline" in change:
            self.deadline = float(change["deadline"])
        if change.get("last_images"):
            self.cfg.extra[LAST_KEY] = [self.cfg.epochs - 1, int(change["last_images"])]
            lines.append(
                f"time budget: {change['left']:.0f} s left; the last epoch trains until its deadline, "
                f"{change['reserve']:.0f} s before the end (for its evaluation and the finish): about "
                f"{change['expected']:,} images at {change['last_timed']} (at most {change['last_images']:,})"
            )
        if lines:
            self._save_config()
        return "\n".join(lines) or None

    def _decide(self, done: int) -> dict | None:
        """Rank 0's decision after ``done`` epochs: a new shape (``shape``), and before the last epoch its
        ``deadline`` (a ``time.time()``) and size (``last_images``, when larger than the other epochs')."""
        dense_s, sparse_s = self.epoch_seconds()
        measured = len(self.dense_times) + len(self.sparse_times) >= MIN_EPOCHS_MEASURED
        left = self.budget_s - (time.time() - self.started)
        change: dict = {"left": left}
        shape = self.shape()
        if measured:
            new = shorten(shape, done, left, dense_s, self.eval_s, sparse_s)
            if new == shape:
                new = lengthen(new, done, left, dense_s, self.eval_s, self.max_images, sparse_s)
            if new != shape:
                dense_left = self.cfg.synthetic_dense_epochs is not None and done < self.cfg.synthetic_dense_epochs
                change["timed"] = (
                    f"{dense_s:.1f} s per dense epoch, {sparse_s:.1f} s per later one"
                    if dense_left
                    else f"{sparse_s:.1f} s per epoch"
                )
                change["shape"] = dataclasses.asdict(new)
                shape = new
        if shape.epochs != done + 1:
            return change if "shape" in change else None
        reserve = DEADLINE_EVAL_FACTOR * self.eval_s + FINISH_SECONDS + DEADLINE_MARGIN_S
        change.update(deadline=self.started + self.budget_s - reserve, reserve=reserve)
        # the last epoch's steps past its usual count belong to the schedule's next epoch: grow it only after the
        # last decay point
        if measured and self.max_images and all(d < shape.epochs for d in shape.lr_decay_epochs):
            last_dense = done < shape.dense_epochs
            last_s = dense_s if last_dense else sparse_s
            per_epoch = shape.images_per_epoch
            seconds, most = left - reserve - EPOCH_SECONDS, self.max_images - done * per_epoch
            expected = last_epoch_images(per_epoch, self.cfg.batch_size, seconds, last_s, most)
            # the deadline ends the epoch, so it may hold more images than expected: a machine that speeds up
            # (its speed wanders by 2x on some 2-core CPUs) trains on until the deadline instead of ending early
            images = last_epoch_images(per_epoch, self.cfg.batch_size, LAST_EPOCH_HEADROOM * seconds, last_s, most)
            if images > per_epoch:
                change.update(
                    last_images=images, expected=expected, last_timed=f"{last_s:.1f} s per epoch of {per_epoch:,}"
                )
        return change

    def _apply_shape(self, change: dict) -> str:
        """Every process: the new epochs, decay points and dense epochs from ``change["shape"]``."""
        new = RunShape(**{k: tuple(v) if isinstance(v, list) else v for k, v in change["shape"].items()})
        added = new.epochs - self.cfg.epochs
        self.cfg.epochs = self.plan.epochs = new.epochs
        self.cfg.lr_decay_epochs = list(new.lr_decay_epochs)
        self.cfg.synthetic_dense_epochs = new.dense_epochs
        self.scheduler.decay_epochs[:] = list(new.lr_decay_epochs)
        decay = ", ".join(map(str, new.lr_decay_epochs)) or "none"
        return (
            f"time budget: {change['left']:.0f} s left at {change['timed']} and "
            f"{self.eval_s:.1f} s per evaluation; {'adding' if added > 0 else 'leaving out'} {abs(added)} epoch(s): "
            f"the run now ends after epoch {new.epochs} (LR decay at epoch {decay})"
        )

    def _save_config(self) -> None:
        """The changed recipe into the checkpoints' ``meta["config"]`` and the run folder's ``config.json``."""
        self.meta["config"] = self.cfg.to_dict()
        if self.rank == 0 and self.cfg.output:
            with open(os.path.join(self.cfg.output, "config.json"), "w") as f:
                json.dump(self.meta["config"], f, indent=2)

    def time_up(self, epoch: int) -> Callable[[], bool] | None:
        """For the run's last epoch (0-based ``epoch``) once its deadline is set, a check that the deadline has
        passed; None for the other epochs."""
        if self.deadline is None or epoch != self.cfg.epochs - 1:
            return None
        deadline = self.deadline
        return lambda: time.time() >= deadline
