"""The training engine: ``train_one_epoch`` and ``evaluate`` (one pass each) and ``fit`` (a whole run).

``fit(cfg)`` resolves the configuration, starts the run's processes (:func:`.distributed.launch`: one, ``--procs``
or ``torchrun``), and in each of them assembles the run's parts once (:func:`.builders.build_run`) and hands them
to :func:`train`, the epoch loop, which takes those objects and no configuration.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from ..loss import SSDMultiBoxLoss
from .budget import apply_time_budget
from .builders import RunParts, build_run, metric_key, prepare_config, select_device
from .checkpoint import rng_state, set_rng_state
from .config import TrainConfig
from .distributed import all_reduce_sum, broadcast_object, gather_bad_samples, gather_objects, launch, world_size
from .guard import NonFiniteGuard
from .progress import progress_bar as _progress
from .signals import StopOnSignal as _StopOnSignal
from .step import step_memory_format
from .validate import evaluate, evaluate_shared

__all__ = ["train_one_epoch", "evaluate", "fit", "train", "FitResult", "EpochState", "NonFiniteStop", "metric_key"]

_SKIP_ROW = (0.0, 0.0, 0.0, 0.0, 1.0)  # a skipped step adds nothing to the loss sums, one to the skip count
TIME_CHECK_STEPS = 4  # a deadline is asked every this many steps (a collective in several processes): about a second


class NonFiniteStop(FloatingPointError):
    """Too many steps in a row had a non-finite loss or gradient; the message names the step and the LR."""


@dataclass
class FitResult:
    output: str
    best_map: float
    last_map: float
    epochs_run: int
    seconds: float
    history: list[dict[str, Any]] = field(default_factory=list)
    bad_samples: str = ""
    table: str = ""
    stopped: str = ""  # "SIGTERM" when a signal ended the run early (its state is in last.pt)
    rank: int = 0


@dataclass
class EpochState:
    """Where one epoch stands. ``sums`` (all ranks together): loss, cls loss, box loss, counted steps, skipped
    steps; ``window``: this rank's part since the last log interval, on the device."""

    epoch: int
    steps: int = 0
    images: int = 0
    seconds: float = 0.0
    sums: list[float] = field(default_factory=lambda: [0.0] * 5)
    window: torch.Tensor | None = None
    stop: str = ""
    cut: bool = False  # the epoch ended at its time budget's deadline, before its last batch

    def progress(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "steps": self.steps,
            "images": self.images,
            "seconds": self.seconds,
            "sums": list(self.sums),
        }


def _lr_at(scheduler, step: int) -> float:
    """The learning rate the schedule gave at ``step`` (1-based count of steps)."""
    lambdas = getattr(scheduler, "lr_lambdas", None)
    if lambdas:
        return float(scheduler.base_lrs[0] * lambdas[0](max(0, step - 1)))
    return float(scheduler.get_last_lr()[0])


def train_one_epoch(
    net,
    loader,
    loss_fn: SSDMultiBoxLoss,
    optimizer,
    scheduler,
    device: torch.device,
    epoch: int,
    scaler: torch.amp.GradScaler | None = None,
    amp_dtype: torch.dtype | None = None,
    log_interval: int = 20,
    on_log: Callable[[int, dict[str, float]], None] | None = None,
    bad_samples=None,
    progress: bool = True,
    guard: NonFiniteGuard | None = None,
    state: EpochState | None = None,
    on_step: Callable[[EpochState], None] | None = None,
    stop: _StopOnSignal | None = None,
    memory_format: torch.memory_format | None = None,
    time_up: Callable[[], bool] | None = None,
) -> dict[str, float]:
    """One pass over ``loader``; returns the epoch's mean ``loss``, ``cls_loss``, ``box_loss``, ``images_per_s``,
    ``images`` (of all processes), ``steps``, ``skipped`` (steps the guard skipped) and ``cut`` (1.0 when
    ``time_up`` ended the epoch early).

    Nothing is read from the device between log intervals: the per-step path has no host synchronisation. Every
    ``log_interval`` steps the loss window of all processes is summed (one collective), ``on_log(step, values)``
    is called, the guard's stop condition is checked (raises :class:`NonFiniteStop`) and so is ``stop`` (a
    SIGTERM; in one process it is checked every step). ``state`` continues a partly trained epoch;
    ``on_step(state)`` runs after every step (step checkpoints). Under ``DistributedDataParallel`` every process
    takes its share of each batch; the logged losses and images/s are those of all processes together.
    ``memory_format`` of the images, the same as the weights' (None: :func:`.step.step_memory_format`).
    ``time_up()`` (a time budget's deadline) is asked every ``TIME_CHECK_STEPS`` steps; when it says so on any
    process, every process ends the epoch after that step, as if its batches had run out.
    """
    net.train()
    world = world_size()
    guard = guard or NonFiniteGuard(optimizer, device, patience=2**31, scaler=scaler)
    guard.watch_batch_norms(net)
    state = state or EpochState(epoch)
    if state.window is None:
        state.window = torch.zeros(5, device=device)
    state.window = state.window.to(device)
    skip_row = torch.tensor(_SKIP_ROW, device=device)
    one_zero = torch.tensor((1.0, 0.0), device=device)
    memory_format = memory_format or step_memory_format(device, amp_dtype)
    start = time.perf_counter() - state.seconds
    end = state.steps + len(loader)  # the epoch's last step (the loader skips the steps a resumed epoch did)
    bar = _progress(loader, len(loader), f"epoch {epoch + 1}", progress)
    for batch in bar:
        if bad_samples is not None:
            bad_samples.record_batch(batch)
        images = batch["images"].to(device, non_blocking=True).contiguous(memory_format=memory_format)
        cls_targets = batch["cls_targets"].to(device, non_blocking=True)
        box_targets = batch["box_targets"].to(device, non_blocking=True)
        pos_weights = batch.get("pos_weights")
        if pos_weights is not None:
            pos_weights = pos_weights.to(device, non_blocking=True)
        guard.save_batch_norms()
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            cls_preds, box_preds, _ = net(images)
        sum_loss, cls_loss, box_loss = loss_fn(cls_preds, box_preds, cls_targets, box_targets, pos_weights)
        # this process's share of the global batch's loss: the sum (batch-wise) or the global mean (sample-wise)
        loss, cls_total, box_total = loss_fn.batch_loss(sum_loss, cls_loss, box_loss)
        # DDP averages gradients over the processes; scale by the process count to get the gradient of their sum
        backprop = guard.guard_loss(loss * world if world > 1 else loss, loss)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(backprop).backward()
            guard.scaled_step()
        else:
            backprop.backward()
            guard.step()
        scheduler.step()
        bad = guard.bad_loss if scaler is not None else guard.found_inf
        guard.restore_batch_norms(bad)
        row = torch.cat((torch.stack((loss.detach(), cls_total.detach(), box_total.detach())).float(), one_zero))
        state.window += torch.where(bad > 0, skip_row, row)
        state.steps += 1
        state.images += images.shape[0] * world
        if state.steps % log_interval == 0:
            _reduce_window(state, guard, scheduler, optimizer, stop, epoch, on_log, bar, start)
        if on_step is not None:
            state.seconds = time.perf_counter() - start  # a step checkpoint keeps the epoch's time so far
            on_step(state)
        if stop is not None and (stop.requested if world == 1 else state.stop) and state.steps < end:
            state.stop = stop.requested or state.stop
            break
        if time_up is not None and state.steps % TIME_CHECK_STEPS == 0 and state.steps < end:
            if _on_any_rank(time_up(), world, device):
                state.cut = True
                break
    _reduce_window(state, guard, scheduler, optimizer, stop, epoch, None, bar, start)
    state.seconds = max(time.perf_counter() - start, 1e-9)
    counted = max(state.sums[3], 1.0)
    return {
        "loss": state.sums[0] / counted,
        "cls_loss": state.sums[1] / counted,
        "box_loss": state.sums[2] / counted,
        "images_per_s": state.images / state.seconds,
        "images": state.images,
        "steps": state.steps,
        "skipped": int(state.sums[4]),
        "cut": float(state.cut),
    }


def _on_any_rank(flag: bool, world: int, device: torch.device) -> bool:
    """Whether ``flag`` holds on any process (a collective when there are several)."""
    if world == 1:
        return flag
    return bool(all_reduce_sum(torch.tensor([float(flag)], device=device)).item() > 0)


def _reduce_window(
    state: EpochState, guard: NonFiniteGuard, scheduler, optimizer, stop, epoch: int, on_log, bar, start: float
) -> None:
    """Sum the loss windows of all processes into ``state.sums`` (with the stop flags), log, check the guard."""
    flags = torch.stack(
        (guard.counters[3] >= 0, torch.tensor(bool(stop and stop.requested), device=guard.counters.device))
    ).double()
    packed = all_reduce_sum(torch.cat((state.window.double(), flags))).cpu().tolist()
    state.window.zero_()
    world = world_size()  # every rank counts the same steps: the step counts are per rank, the losses summed
    window, guard_hit, stop_any = packed[:3] + [packed[3] / world, packed[4] / world], packed[5], packed[6]
    state.sums = [a + b for a, b in zip(state.sums, window)]
    if stop_any:
        state.stop = (stop.requested if stop else "") or "SIGTERM"
    if guard_hit:
        counts = guard.read()
        at = counts["stop_step"] if counts["stop_step"] > 0 else counts["steps"]
        raise NonFiniteStop(
            f"stopping: {guard.patience} steps in a row had a non-finite loss or gradient (the last at step {at}, "
            f"epoch {epoch + 1}, learning rate {_lr_at(scheduler, at):.6g}; {counts['skipped']} skipped in all); "
            f"likely causes: a learning rate too high for this batch size (lower --lr or lengthen --warmup-epochs), "
            f"boxes or images that are broken, or float16 overflow (try --no-amp)"
        )
    if on_log is None or window[3] + window[4] == 0:
        return
    counted = max(window[3], 1.0)
    values = [v / counted for v in window[:3]]
    if window[3] and not all(math.isfinite(v) for v in values):
        values = [float("nan")] * 3
    rate = state.images / max(time.perf_counter() - start, 1e-9)
    logged = {
        "loss": values[0],
        "cls_loss": values[1],
        "box_loss": values[2],
        "lr": optimizer.param_groups[0]["lr"],
        "images_per_s": rate,
        "skipped": window[4],
    }
    if hasattr(bar, "set_postfix"):
        bar.set_postfix(loss=f"{values[0]:.3f}", img_s=f"{rate:.1f}")
    on_log(state.steps, logged)


def fit(cfg: TrainConfig, say: Callable[[str], None] = print) -> FitResult:
    """Run a whole training: build, (resume), train, evaluate every ``val_interval`` epochs, checkpoint, plot.

    ``last.pt`` is written after every epoch (and every ``checkpoint_steps`` steps), ``best.pt`` when the
    validation metric improves and ``epoch_XXXX.pt`` every ``save_interval`` epochs; all atomically. In several
    processes (``procs > 1`` or ``torchrun``) each evaluates its share of the val split; rank 0 scores it, logs and
    writes the run folder.
    """
    cfg = prepare_config(cfg)
    return launch(_worker, cfg, say, select_device(cfg.device).type)


def _worker(cfg: TrainConfig, say: Callable[[str], None], rank: int, world: int) -> FitResult:
    """One process of the run: every rank runs rank 0's configuration (its run folder, its resume decision)."""
    cfg = TrainConfig.from_dict(broadcast_object(cfg.to_dict()))
    cfg = apply_time_budget(cfg, say, rank, world)  # --time-budget: measure this machine, then fit the recipe
    return train(build_run(cfg, rank, world), say)


def train_parts_epoch(
    parts: RunParts, epoch: int, log_interval: int, on_log=None, bad_samples=None, progress: bool = False, **kw
) -> dict[str, float]:
    """:func:`train_one_epoch` on an assembled run's parts (``kw``: ``state``, ``on_step``, ``stop``)."""
    return train_one_epoch(
        parts.train_net,
        parts.train_loader,
        parts.loss_fn,
        parts.optimizer,
        parts.scheduler,
        parts.device,
        epoch,
        parts.scaler,
        parts.amp_dtype,
        log_interval,
        on_log,
        bad_samples,
        progress,
        parts.guard,
        memory_format=parts.memory_format,
        **kw,
    )


def _start_epoch(parts: RunParts, epoch: int, progress: dict | None, rank_state: dict | None) -> EpochState:
    """Seed and position everything for ``epoch``; from a checkpoint taken inside it, skip the steps done."""
    seed = parts.plan.seed
    # every epoch's shuffle and augmentation depend only on (seed, epoch): a resumed run replays them
    parts.loader_gen.manual_seed(seed * 1000 + epoch)
    torch.manual_seed(seed * 1000 + epoch + 100_003 * parts.rank)
    parts.prepare_epoch(epoch)  # the synthetic set's new images (workers start after this)
    batches = parts.train_loader.batch_sampler
    batches.sampler.set_epoch(epoch)
    state = EpochState(epoch)
    if progress is not None and int(progress["epoch"]) == epoch:
        state = EpochState(
            epoch,
            steps=int(progress["steps"]),
            images=int(progress["images"]),
            seconds=float(progress["seconds"]),
            sums=[float(v) for v in progress["sums"]],
        )
        batches.sampler.set_start(state.steps * batches.batch_size)
        if rank_state is not None:
            state.window = rank_state["window"].clone()
            set_rng_state(rank_state["rng"])
    return state


def _save(parts: RunParts, names: list[str], epoch_done: int, best: float, bad, state: EpochState | None = None):
    """Checkpoint ``names`` (a collective: every rank sends its RNG state, loss window and guard counters)."""
    window = state.window.detach().cpu() if state is not None and state.window is not None else torch.zeros(5)
    ranks = gather_objects({"rng": rng_state(), "window": window, "guard": parts.guard.state_dict()})
    if not parts.main or (state is not None and parts.guard.read()["streak"] > 0):
        return  # a run inside a streak of bad steps keeps its last good checkpoint
    for name in names:
        parts.checkpointer.save(name, epoch_done, best, state.progress() if state else None, ranks, bad.entries)


def train(parts: RunParts, say: Callable[[str], None] = print) -> FitResult:
    """The epoch loop over an assembled run: train, evaluate, checkpoint, stop on SIGTERM, plot."""
    from ..data.errors import BadSampleLog
    from ..metrics.report import format_ap_table

    plan, logger, key = parts.plan, parts.logger, parts.metric_key
    bad = BadSampleLog()
    for ds in (parts.train_set, parts.val_set):
        if getattr(ds, "bad_sample_log", None):
            bad.merge(ds.bad_sample_log)
    start_epoch, best, progress, rank_state = 0, -1.0, None, None
    if parts.resume is not None:
        restored = parts.checkpointer.restore(parts.resume, parts.rank)
        start_epoch, best, progress = restored["start_epoch"], restored["best"], restored["progress"]
        rank_state = restored["rank_state"]
        bad.extend(restored["bad_samples"])
        where = f", step {progress['steps']}" if progress else ""
        say(f"resumed from {parts.resume_path} at epoch {start_epoch + 1}{where}")
    say(
        f"training {parts.checkpointer.meta['model_name']} on {plan.dataset} ({len(parts.train_set)} train / "
        f"{len(parts.val_set)} val images, {len(parts.classes)} classes) for {plan.epochs} epochs on {parts.device}"
        f"{f' in {parts.world} processes' if parts.world > 1 else ''}; run folder: {plan.output}"
    )
    for note in parts.notes:
        say(note)
    iters = len(parts.train_loader)  # steps per epoch; a time budget's last epoch may take more or fewer
    epoch_steps = iters
    t0 = time.perf_counter()
    if parts.resume is not None and logger is not None:  # elapsed_s counts the run's earlier parts too
        t0 -= logger.elapsed_after(start_epoch)
        logger.resume_at(start_epoch * iters + (progress["steps"] if progress else 0))
    last_map, table, stopped = float("nan"), "", ""
    if parts.resume is not None and start_epoch >= plan.epochs:
        evaluated = logger.eval_points(key) if logger is not None else []
        last_map = evaluated[-1][1] if evaluated else last_map
        say(
            f"{parts.resume_path} finished all {plan.epochs} epochs already: nothing to train "
            f"(give a larger --epochs to train on)"
        )
    epoch = start_epoch - 1

    def on_log(step: int, values: dict[str, float], e: int) -> None:
        if logger is not None:
            logger.log_train(e * iters + step, e + step / epoch_steps, values)
        if values["skipped"]:
            say(
                f"epoch {e + 1} step {step}: skipped {int(values['skipped'])} step(s) with a non-finite loss or "
                f"gradient ({parts.guard.read()['skipped']} so far)"
            )

    def on_step(state: EpochState) -> None:
        if plan.checkpoint_steps and state.steps % plan.checkpoint_steps == 0 and state.steps < epoch_steps:
            _save(parts, ["last.pt"], state.epoch - 1, best, bad, state)

    try:
        with _StopOnSignal() as stop:
            while epoch + 1 < plan.epochs:  # a time budget may shorten the run after an epoch (parts.keeper)
                epoch += 1
                epoch_start = time.perf_counter()
                state = _start_epoch(parts, epoch, progress, rank_state)
                epoch_steps = state.steps + len(parts.train_loader)
                progress = rank_state = None
                stats = train_parts_epoch(
                    parts,
                    epoch,
                    plan.log_interval,
                    lambda s, v, e=epoch: on_log(s, v, e),
                    bad,
                    plan.progress,
                    state=state,
                    on_step=on_step,
                    stop=stop,
                    time_up=parts.keeper.time_up(epoch) if parts.keeper is not None else None,
                )
                epoch_s, eval_s = time.perf_counter() - epoch_start, None
                if state.stop and state.steps < epoch_steps:
                    _save(parts, ["last.pt"], epoch - 1, best, bad, state)
                    stopped = state.stop
                    say(
                        f"{stopped}: stopped in epoch {epoch + 1} after step {state.steps}; its state is in "
                        f"{parts.checkpointer.path('last.pt')} (continue with --resume auto or --resume <that file>)"
                    )
                    break
                row: dict[str, Any] = {
                    "epoch": epoch + 1,
                    "lr": parts.optimizer.param_groups[0]["lr"],
                    "train_loss": stats["loss"],
                    "train_cls_loss": stats["cls_loss"],
                    "train_box_loss": stats["box_loss"],
                    "images_per_s": stats["images_per_s"],
                    "images": stats["images"],
                    "skipped_steps": stats["skipped"],
                }
                msg = (
                    f"epoch {epoch + 1}/{plan.epochs}  loss {stats['loss']:.4f} (cls {stats['cls_loss']:.4f}, "
                    f"box {stats['box_loss']:.4f})  {stats['images_per_s']:.1f} img/s"
                )
                if stats["skipped"]:
                    msg += f"  {stats['skipped']} step(s) skipped (non-finite)"
                if stats["cut"]:
                    msg += f"  (time budget: stopped at its deadline after {stats['images']:,} images)"
                improved = False
                result = None
                if (epoch + 1) % plan.val_interval == 0 or epoch + 1 == plan.epochs:  # every rank its share
                    eval_start = time.perf_counter()
                    result = evaluate_shared(parts.net, parts.val_loader, parts.metric, parts.device, bad)
                    eval_s = time.perf_counter() - eval_start
                if result is not None:
                    names, values = result
                    last_map = float(values[-1])
                    row[key] = last_map
                    row["elapsed_s"] = round(time.perf_counter() - t0, 1)
                    logger.log_eval(row, (epoch + 1) * iters)
                    msg += f"  {key} {last_map:.4f}"
                    improved, best = last_map > best, max(best, last_map)
                    table = format_ap_table(names, values, title=f"{key} after epoch {epoch + 1}")
                if logger is not None:  # after the evaluation: the epoch's row holds its mAP too
                    row.setdefault("elapsed_s", round(time.perf_counter() - t0, 1))
                    logger.log_epoch(row)
                names = ["last.pt"] + (["best.pt"] if improved else [])
                names += [f"epoch_{epoch + 1:04d}.pt"] if (epoch + 1) % plan.save_interval == 0 else []
                _save(parts, names, epoch, best, bad)  # the other ranks wait here for rank 0's evaluation
                say(msg)
                if state.stop:
                    stopped = state.stop
                    say(f"{stopped}: stopped after epoch {epoch + 1}; continue with --resume auto")
                    break
                if parts.keeper is not None and epoch + 1 < plan.epochs:
                    change = parts.keeper.after_epoch(epoch + 1, epoch_s, eval_s)
                    if change and parts.main:
                        say(change)
            if parts.world > 1:  # one summary of the skipped samples of every rank
                gather_bad_samples(bad)
    except NonFiniteStop as err:
        last = parts.checkpointer.path("last.pt")
        kept = f"; the last good checkpoint is {last}" if os.path.isfile(last) else ""
        raise NonFiniteStop(f"{err}{kept}") from None
    except KeyboardInterrupt:
        say(
            f"interrupted during epoch {epoch + 1}; the last saved state is in "
            f"{parts.checkpointer.path('last.pt')} (continue with --resume)"
        )
        raise
    finally:
        if logger is not None:
            logger.plot(key)
            logger.close()
    if table and not stopped:
        say(table)
    if len(bad):
        say(bad.summary())
    return FitResult(
        output=plan.output,
        best_map=best,
        last_map=last_map,
        epochs_run=epoch + 1 - start_epoch,
        seconds=time.perf_counter() - t0,
        history=logger.eval_rows if logger else [],
        bad_samples=bad.summary(),
        table=table,
        stopped=stopped,
        rank=parts.rank,
    )
