"""The training loop: ``train_one_epoch``, ``evaluate`` and ``fit`` (the whole run of ``ssdkit train``)."""
from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from ..boxes import clip_boxes_xyxy
from ..loss import SSDMultiBoxLoss
from .budget import START_KEY, apply_time_budget
from .builders import (build_datasets, build_loader, build_metric, build_model, build_optimizer, model_anchors,
                       prepare_train_epoch, seed_everything, select_device, share_cpu_cores,
                       synthetic_object_range)
from .checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .config import ConfigError, TrainConfig, resolve_config
from .distributed import all_reduce_sum, gather_bad_samples, run_in_processes, world_size
from .logger import RunLogger
from .schedule import make_scheduler

__all__ = ["train_one_epoch", "evaluate", "fit", "FitResult", "metric_key"]


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


def metric_key(dataset: str) -> str:
    return "coco_ap" if dataset == "coco" else "voc07_map"


def _progress(iterable, total: int, desc: str, enabled: bool):
    if not enabled:
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, leave=False, dynamic_ncols=True, file=sys.stderr)


def train_one_epoch(net, loader, loss_fn: SSDMultiBoxLoss, optimizer, scheduler, device: torch.device, epoch: int,
                    scaler: torch.amp.GradScaler | None = None, amp_dtype: torch.dtype | None = None,
                    log_interval: int = 20, on_log: Callable[[int, dict[str, float]], None] | None = None,
                    bad_samples=None, progress: bool = True) -> dict[str, float]:
    """One pass over ``loader``; returns the epoch's mean ``loss``, ``cls_loss``, ``box_loss`` and ``images_per_s``.

    Loss values are read from the device only every ``log_interval`` steps (one sync), not every step.
    Under ``torch.distributed`` (``net`` wrapped in ``DistributedDataParallel``) every process takes its share of
    each batch; the logged losses and images/s are those of all processes together.
    """
    net.train()
    world = world_size()
    sums = torch.zeros(3, dtype=torch.float64)
    pending = torch.zeros(3, device=device)
    n_steps = 0
    logged_at = 0
    n_images = 0
    start = time.perf_counter()
    bar = _progress(loader, len(loader), f"epoch {epoch}", progress)
    for batch in bar:
        if bad_samples is not None:
            bad_samples.record_batch(batch)
        images = batch["images"].to(device, non_blocking=True)
        if channels_last_for(device, amp_dtype):
            images = images.contiguous(memory_format=torch.channels_last)
        cls_targets = batch["cls_targets"].to(device, non_blocking=True)
        box_targets = batch["box_targets"].to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            cls_preds, box_preds, _ = net(images)
        sum_loss, cls_loss, box_loss = loss_fn(cls_preds, box_preds, cls_targets, box_targets)
        loss = sum_loss.sum()
        # DDP averages gradients over the processes; each one's loss is its share of the global batch's loss
        # (normalized by the positives of all processes), so scale by the process count to get their sum
        backprop = loss * world if world > 1 else loss
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(backprop).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            backprop.backward()
            optimizer.step()
        scheduler.step()
        pending += torch.stack((loss.detach(), cls_loss.detach().sum(), box_loss.detach().sum())).float()
        n_steps += 1
        n_images += images.shape[0] * world
        if n_steps % log_interval == 0:
            window = all_reduce_sum(pending).double().cpu()  # the global batch's loss (every rank logs it)
            sums += window
            pending.zero_()
            values = (window / (n_steps - logged_at)).tolist()
            logged_at = n_steps
            if not all(math.isfinite(v) for v in values):
                raise FloatingPointError(f"the loss became {values[0]} at epoch {epoch + 1}, step {n_steps}; "
                                         f"try a lower --lr or a longer --warmup-epochs")
            rate = n_images / max(time.perf_counter() - start, 1e-9)
            logged = {"loss": values[0], "cls_loss": values[1], "box_loss": values[2],
                      "lr": optimizer.param_groups[0]["lr"], "images_per_s": rate}
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(loss=f"{values[0]:.3f}", img_s=f"{rate:.1f}")
            if on_log is not None:
                on_log(n_steps, logged)
    sums += all_reduce_sum(pending).double().cpu()
    steps = max(n_steps, 1)
    if not math.isfinite(sums[0].item()):
        raise FloatingPointError(f"the loss became {sums[0].item()} in epoch {epoch + 1}; "
                                 f"try a lower --lr or a longer --warmup-epochs")
    elapsed = max(time.perf_counter() - start, 1e-9)
    return {"loss": sums[0].item() / steps, "cls_loss": sums[1].item() / steps, "box_loss": sums[2].item() / steps,
            "images_per_s": n_images / elapsed, "steps": n_steps}


@torch.no_grad()
def evaluate(net, loader, metric, device: torch.device, bad_samples=None, progress: bool = False,
             decoder: str | None = None) -> tuple[list[str], list[float]]:
    """Detect on every batch of ``loader`` and feed ``metric``; boxes are clipped to the input size as GluonCV's
    ``validate()``. ``decoder`` switches the class decoder for this evaluation only."""
    net.eval()
    metric.reset()
    old_decoder = net.postprocessor.decoder
    if decoder is not None:
        net.postprocessor.decoder = decoder
    try:
        for batch in _progress(loader, len(loader), "eval", progress):
            if bad_samples is not None:
                bad_samples.record_batch(batch)
            images = batch["images"].to(device, non_blocking=True)
            ids, scores, bboxes = net.detect(images)
            h, w = images.shape[-2:]
            bboxes = clip_boxes_xyxy(bboxes, w, h)
            metric.update(bboxes.cpu(), ids.cpu(), scores.cpu(), batch["gt_boxes"], batch["gt_ids"],
                          batch["difficult"], **_metric_extras(metric, batch))
    finally:
        net.postprocessor.decoder = old_decoder
    return metric.get()


def _metric_extras(metric, batch) -> dict[str, Any]:
    from ..metrics import COCODetectionMetric

    if isinstance(metric, COCODetectionMetric):  # boxes go back to original pixels per image
        return {"image_ids": batch["image_ids"], "orig_sizes": batch["orig_sizes"]}
    return {}


def cpu_has_native_bf16() -> bool:
    """Whether this CPU runs bfloat16 convolutions natively (AVX512-BF16 / AMX); elsewhere bf16 is emulated, slow."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def amp_dtype_for(device: torch.device, amp: bool | None) -> torch.dtype | None:
    """Autocast dtype: ``amp`` True forces it on, False off, None (auto) turns it on where it is native and fast:
    float16 on CUDA, bfloat16 on CPUs with native bf16."""
    if amp is False:
        return None
    if device.type == "cuda":
        return torch.float16
    if amp or (device.type == "cpu" and cpu_has_native_bf16()):
        return torch.bfloat16
    return None


def channels_last_for(device: torch.device, amp_dtype: torch.dtype | None) -> bool:
    """Whether the run keeps its convs in NHWC: on CPU always (oneDNN's native layout: no reorder per conv, also
    in float32 with AVX2 only), on CUDA under autocast (tensor cores)."""
    return device.type == "cpu" or (device.type == "cuda" and amp_dtype is not None)


def _default_output(cfg: TrainConfig) -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return os.path.join("runs", f"{cfg.model}-{cfg.dataset}-{stamp}")


def fit(cfg: TrainConfig, say: Callable[[str], None] = print) -> FitResult:
    """Run a whole training: build, (resume), train, evaluate every ``val_interval`` epochs, checkpoint, plot.

    ``last.pt`` is written after every epoch, ``best.pt`` when the validation metric improves and
    ``epoch_XXXX.pt`` every ``save_interval`` epochs; all atomically, so an interrupted run keeps them.
    With ``procs > 1`` the run trains in that many processes (data parallel, see :mod:`.distributed`); this
    process is rank 0, which alone evaluates, logs and writes checkpoints.
    """
    if cfg.resume:
        saved = TrainConfig.from_dict(load_checkpoint(cfg.resume)["config"])
        # the saved recipe wins; only where-to-run options may change on resume
        for keep in ("device", "num_workers", "progress", "on_bad_sample"):
            setattr(saved, keep, getattr(cfg, keep))
        for maybe in ("epochs", "procs"):  # the run's own unless given again
            if getattr(cfg, maybe) is not None:
                setattr(saved, maybe, getattr(cfg, maybe))
        saved.output = cfg.output or saved.output or os.path.dirname(os.path.abspath(cfg.resume))
        saved.resume = cfg.resume
        cfg = saved
    cfg = resolve_config(cfg)
    cfg.extra = {START_KEY: time.time(), **cfg.extra}  # the time budget's clock (the CLI starts it earlier)
    if not cfg.output:
        cfg.output = _default_output(cfg)
    device = select_device(cfg.device)
    if cfg.procs > 1:
        return run_in_processes(_train, cfg, say, device.type)
    return _train(cfg, say, 0, 1)


def _train(cfg: TrainConfig, say: Callable[[str], None], rank: int, world: int) -> FitResult:
    """One process's part of :func:`fit` (``cfg`` resolved); rank 0 evaluates, logs and saves."""
    device = select_device(cfg.device)
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", torch.cuda.current_device())
    share_cpu_cores(device, cfg.num_workers, world)
    seed_everything(cfg.seed + rank)
    resume_ckpt = load_checkpoint(cfg.resume) if cfg.resume else None
    main = rank == 0

    from ..data.errors import BadSampleLog

    data_shape = cfg.data_shape or _model_data_shape(cfg.model)
    cfg = apply_time_budget(cfg, data_shape, say, rank, world)  # --time-budget: measure, then fit the recipe
    train_set, val_set, classes = build_datasets(cfg, data_shape)
    net = build_model(cfg, classes)
    if tuple(net.classes) != tuple(classes):
        raise ConfigError(f"model {cfg.model} predicts {len(net.classes)} classes but the data set has "
                          f"{len(classes)}: use a *_custom model")
    net.to(device)
    cfg.data_shape = data_shape
    cfg.classes = list(classes)
    anchors = model_anchors(net, data_shape, device)
    loss_fn = SSDMultiBoxLoss(normalization=cfg.loss_norm)
    optimizer = build_optimizer(net, cfg)
    loader_gen = torch.Generator()
    train_loader = build_loader(train_set, cfg, train=True, anchors=anchors, generator=loader_gen,
                                shard=(rank, world))
    val_loader = build_loader(val_set, cfg, train=False)
    scheduler = make_scheduler(optimizer, len(train_loader), cfg.lr_decay_epochs, cfg.lr_decay, cfg.warmup_epochs)
    amp_dtype = amp_dtype_for(device, cfg.amp)
    if channels_last_for(device, amp_dtype):
        net.to(memory_format=torch.channels_last)
    train_net = net
    if world > 1:  # the model of every rank starts from rank 0's weights (DDP broadcasts them)
        train_net = torch.nn.parallel.DistributedDataParallel(net, device_ids=[device] if device.type == "cuda"
                                                              else None)
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None
    metric = build_metric(cfg, classes, val_set, data_shape)
    key = metric_key(cfg.dataset)

    start_epoch, best = 0, -1.0
    if resume_ckpt is not None:
        net.load_state_dict(resume_ckpt["model"])
        optimizer.load_state_dict(resume_ckpt["optimizer"])
        scheduler.load_state_dict(resume_ckpt["scheduler"])
        if scaler is not None and resume_ckpt.get("scaler"):
            scaler.load_state_dict(resume_ckpt["scaler"])
        start_epoch = int(resume_ckpt["epoch"]) + 1
        best = float(resume_ckpt.get("best_map", -1.0))
        set_rng_state(resume_ckpt["rng"])
        say(f"resumed from {cfg.resume} at epoch {start_epoch}")

    if main:
        os.makedirs(cfg.output, exist_ok=True)
        with open(os.path.join(cfg.output, "config.json"), "w") as f:
            json.dump(cfg.to_dict(), f, indent=2)
    logger = RunLogger(cfg.output) if main else None
    bad = BadSampleLog()
    for ds in (train_set, val_set):
        if getattr(ds, "bad_sample_log", None):
            bad.merge(ds.bad_sample_log)
    say(f"training {cfg.model} on {cfg.dataset} ({len(train_set)} train / {len(val_set)} val images, "
        f"{len(classes)} classes) for {cfg.epochs} epochs on {device}"
        f"{f' in {world} processes' if world > 1 else ''}; run folder: {cfg.output}")
    if cfg.dataset == "synthetic" and cfg.synthetic_dense_epochs > 0:
        dense = min(cfg.synthetic_dense_epochs, cfg.epochs)
        (low, high), (low_after, high_after) = synthetic_object_range(cfg, 0), synthetic_object_range(cfg, dense)
        later = f", then {low_after}-{high_after}" if dense < cfg.epochs else ""
        say(f"  training images hold {low}-{high} objects in epochs 1-{dense}{later} "
            f"(--synthetic-train-objects, --synthetic-dense-epochs)")
    iters = len(train_loader)
    t0 = time.perf_counter()
    last_map = float("nan")
    epoch = start_epoch - 1
    table = ""

    def checkpoint(path: str, epoch_done: int, best_value: float) -> None:
        if not main:
            return
        save_checkpoint(path, {
            "model": net.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else None, "epoch": epoch_done,
            "best_map": best_value, "rng": rng_state(), "config": cfg.to_dict(),
            "classes": list(classes), "model_name": cfg.model, "data_shape": data_shape,
        })

    try:
        for epoch in range(start_epoch, cfg.epochs):
            # every epoch's shuffle and augmentation depend only on (seed, epoch): a resumed run replays them
            loader_gen.manual_seed(cfg.seed * 1000 + epoch)
            torch.manual_seed(cfg.seed * 1000 + epoch + 100_003 * rank)
            prepare_train_epoch(train_set, cfg, epoch)  # the synthetic set's new images (workers start after this)
            if hasattr(train_loader.sampler, "set_epoch"):  # DistributedSampler: this epoch's shuffle
                train_loader.sampler.set_epoch(epoch)
            on_log = (lambda s, v, e=epoch: logger.log_train(e * iters + s, e + s / iters, v)) if main else None
            stats = train_one_epoch(
                train_net, train_loader, loss_fn, optimizer, scheduler, device, epoch, scaler, amp_dtype,
                cfg.log_interval, on_log, bad, cfg.progress and main)
            row: dict[str, Any] = {"epoch": epoch + 1, "lr": optimizer.param_groups[0]["lr"],
                                   "train_loss": stats["loss"], "train_cls_loss": stats["cls_loss"],
                                   "train_box_loss": stats["box_loss"], "images_per_s": stats["images_per_s"]}
            is_eval = (epoch + 1) % cfg.val_interval == 0 or epoch + 1 == cfg.epochs
            msg = (f"epoch {epoch + 1}/{cfg.epochs}  loss {stats['loss']:.4f} (cls {stats['cls_loss']:.4f}, "
                   f"box {stats['box_loss']:.4f})  {stats['images_per_s']:.1f} img/s")
            if is_eval and main:  # the other ranks wait for rank 0 in their next collective
                names, values = evaluate(net, val_loader, metric, device, bad)
                last_map = float(values[-1])
                row[key] = last_map
                row["elapsed_s"] = round(time.perf_counter() - t0, 1)
                logger.log_eval(row, (epoch + 1) * iters)
                msg += f"  {key} {last_map:.4f}"
                if last_map > best:
                    best = last_map
                    checkpoint(os.path.join(cfg.output, "best.pt"), epoch, best)
                from ..metrics.report import format_ap_table

                table = format_ap_table(names, values, title=f"{key} after epoch {epoch + 1}")
            checkpoint(os.path.join(cfg.output, "last.pt"), epoch, best)
            if (epoch + 1) % cfg.save_interval == 0:
                checkpoint(os.path.join(cfg.output, f"epoch_{epoch + 1:04d}.pt"), epoch, best)
            say(msg)
        if world > 1:  # one summary of the skipped samples of every rank
            gather_bad_samples(bad)
    except KeyboardInterrupt:
        say(f"interrupted during epoch {epoch + 1}; the last finished epoch is in "
            f"{os.path.join(cfg.output, 'last.pt')} (continue with --resume)")
        raise
    finally:
        if logger is not None:
            logger.plot(key)
            logger.close()
    if table:
        say(table)
    if len(bad):
        say(bad.summary())
    return FitResult(output=cfg.output, best_map=best, last_map=last_map, epochs_run=epoch + 1 - start_epoch,
                     seconds=time.perf_counter() - t0, history=logger.eval_rows if logger else [],
                     bad_samples=bad.summary(),
                     table=table)


def _model_data_shape(name: str) -> int:
    from ..models.presets import PRESETS

    if name not in PRESETS:
        from ..models import list_models

        raise ConfigError(f"unknown model {name!r}; choose one of: {', '.join(list_models())}")
    return PRESETS[name].data_shape
