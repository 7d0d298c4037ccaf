"""Assemble every part of one process's run from its configuration, once, before the loop starts."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from ...data.synthetic import check_shape_classes
from ...loss import SSDMultiBoxLoss
from ..budget import START_KEY, BudgetKeeper
from ..checkpoint import Checkpointer, load_checkpoint
from ..config import ConfigError, TrainConfig, resolve_config
from ..distributed import torchrun_env, wrap_ddp
from ..guard import NonFiniteGuard
from ..logger import RunLogger
from .data import (
    build_datasets,
    build_loader,
    prepare_train_epoch,
    split_ids,
    split_overlap,
    synthetic_image_size,
    synthetic_object_range,
    synthetic_train_sizes,
    train_transform,
)
from .metric import build_metric, metric_key
from .model import build_model, check_model_name, model_anchors, model_data_shape
from .optim import build_optimizer, build_scheduler
from .runtime import (
    amp_dtype_for,
    run_memory_format,
    seed_everything,
    select_device,
    share_cpu_cores,
    synthetic_default_dense_scale,
    synthetic_default_model,
)

__all__ = ["LoopPlan", "RunParts", "build_run", "prepare_config"]


@dataclass
class LoopPlan:
    """The loop's settings (what the epochs do and when), taken from the config by :func:`build_run`."""

    epochs: int
    seed: int
    val_interval: int
    save_interval: int
    log_interval: int
    checkpoint_steps: int
    progress: bool
    output: str
    dataset: str


@dataclass
class RunParts:
    """One process's run: ``net`` is the model itself, ``train_net`` the same model wrapped for data parallelism."""

    rank: int
    world: int
    device: torch.device
    net: torch.nn.Module
    train_net: torch.nn.Module
    loss_fn: SSDMultiBoxLoss
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler | None
    amp_dtype: torch.dtype | None
    memory_format: torch.memory_format  # of the weights and the images of a training step
    guard: NonFiniteGuard
    train_set: Any
    val_set: Any
    classes: tuple[str, ...]
    train_loader: torch.utils.data.DataLoader
    val_loader: torch.utils.data.DataLoader
    loader_gen: torch.Generator
    prepare_epoch: Callable[[int], None]
    metric: Any
    metric_key: str
    checkpointer: Checkpointer
    logger: RunLogger | None
    plan: LoopPlan
    resume: dict[str, Any] | None = None
    resume_path: str | None = None
    notes: list[str] = field(default_factory=list)
    keeper: BudgetKeeper | None = None  # --time-budget: shortens the run after an epoch when the rest won't fit

    @property
    def main(self) -> bool:
        return self.rank == 0


def prepare_config(cfg: TrainConfig) -> TrainConfig:
    """Resolve ``cfg``: ``--resume auto``, the recipe saved in a checkpoint (it wins over the presets), the
    process count under ``torchrun``, the synthetic set's model for this machine
    (:func:`.runtime.synthetic_default_model`), the presets and the default run folder."""
    cfg = dataclasses.replace(cfg)
    if cfg.resume == "auto":
        if not cfg.output:
            raise ConfigError("--resume auto needs --output (the run folder to continue when it has a last.pt)")
        last = os.path.join(cfg.output, "last.pt")
        cfg.resume = last if os.path.isfile(last) else None
    if cfg.resume:
        saved = TrainConfig.from_dict(load_checkpoint(cfg.resume)["config"])
        # the saved recipe wins; only where-to-run options may change on resume
        for keep in ("device", "num_workers", "progress", "on_bad_sample", "checkpoint_steps", "max_bad_steps"):
            setattr(saved, keep, getattr(cfg, keep))
        for maybe in ("epochs", "procs"):  # the run's own unless given again
            if getattr(cfg, maybe) is not None:
                setattr(saved, maybe, getattr(cfg, maybe))
        saved.output = cfg.output or saved.output or os.path.dirname(os.path.abspath(cfg.resume))
        saved.resume = cfg.resume
        ignored = _options_the_resume_ignores(cfg, saved)
        if ignored:
            saved.extra = {**saved.extra, RESUME_IGNORED_KEY: ignored}
        cfg = saved
    env = torchrun_env()
    if env is not None:  # torchrun decides the processes; --batch-size stays the global batch
        cfg.procs = env.world
    if cfg.model is None and cfg.dataset == "synthetic":
        cfg.model = synthetic_default_model(select_device(cfg.device), cfg.amp)
    if cfg.synthetic_dense_scale is None and cfg.dataset == "synthetic":
        cfg.synthetic_dense_scale = synthetic_default_dense_scale(select_device(cfg.device), cfg.amp, cfg.model)
    cfg = resolve_config(cfg)
    # here, not in the training processes: a misspelt name is told at once
    check_model_name(cfg.model)
    if cfg.dataset == "synthetic" and cfg.classes:
        try:
            check_shape_classes(cfg.classes)
        except ValueError as err:
            raise ConfigError(f"--classes: {err}") from None
    cfg.extra = {START_KEY: time.time(), **cfg.extra}  # the time budget's clock (the CLI starts it earlier)
    if not cfg.output:
        cfg.output = os.path.join("runs", f"{cfg.model}-{cfg.dataset}-{time.strftime('%Y%m%d-%H%M%S')}")
    return cfg


RESUME_IGNORED_KEY = "resume_ignored"  # TrainConfig.extra: options given with --resume that the saved recipe overrode


def _options_the_resume_ignores(given: TrainConfig, saved: TrainConfig) -> list[str]:
    """``--name value`` of every recipe option the user gave that differs from the checkpoint's recipe: a field
    counts as given when it differs from the dataclass default (the CLI leaves unset options at it)."""
    defaults = TrainConfig()
    skip = {"device", "num_workers", "progress", "on_bad_sample", "checkpoint_steps", "max_bad_steps", "epochs",
            "procs", "output", "resume", "extra", "time_budget"}  # fmt: skip
    ignored = []
    for f in dataclasses.fields(TrainConfig):
        value = getattr(given, f.name)
        if f.name in skip or value == getattr(defaults, f.name) or value == getattr(saved, f.name):
            continue
        ignored.append(f"--{f.name.replace('_', '-')} {value}")
    return ignored


def build_run(cfg: TrainConfig, rank: int, world: int) -> RunParts:
    """Every object the loop needs, built from the resolved ``cfg`` for process ``rank`` of ``world``.

    Rank 0 creates the run folder and writes ``config.json`` and ``splits.json`` into it.
    """
    env = torchrun_env()
    device = select_device(cfg.device, env.local_rank if env else rank)
    share_cpu_cores(device, cfg.num_workers, env.local_world if env else world)
    seed_everything(cfg.seed + rank)
    main = rank == 0

    data_shape = cfg.data_shape or model_data_shape(cfg.model)
    train_set, val_set, classes = build_datasets(cfg, data_shape)
    net = build_model(cfg, classes).to(device)
    cfg.data_shape = data_shape
    cfg.classes = list(classes)
    anchors = model_anchors(net, data_shape, device)
    # the synthetic set's dense epochs may draw smaller images: their transforms and anchors (real data sets keep
    # the transform they were built with)
    sizes = synthetic_train_sizes(cfg) if cfg.dataset == "synthetic" else {data_shape}
    transforms = {size: train_transform(cfg.augment, size) for size in sizes} if cfg.dataset == "synthetic" else None
    try:
        other_sizes = {
            (s, s): (net.anchors_for_input(s, s), net.anchor_grid_for_input(s, s)) for s in sizes if s != data_shape
        }
    except RuntimeError as err:  # a layer's kernel larger than its input: the model needs a larger image
        small = min(sizes)
        raise ConfigError(
            f"--synthetic-dense-scale {cfg.synthetic_dense_scale}: {cfg.model} cannot take {small} x {small} inputs "
            f"({(str(err).splitlines() or [''])[0]}); use a larger scale, or 1"
        ) from None
    amp_dtype = amp_dtype_for(device, cfg.amp)
    # before the optimizer: its momentum buffers copy each weight's layout, which CUDA's fused SGD requires
    memory_format = run_memory_format(cfg.model, device, amp_dtype)
    net.to(memory_format=memory_format)
    optimizer = build_optimizer(net, cfg)
    loader_gen = torch.Generator()
    train_loader = build_loader(
        train_set,
        cfg,
        train=True,
        anchors=anchors,
        generator=loader_gen,
        shard=(rank, world),
        anchor_grid=net.anchor_grid_for_input(data_shape),
        other_sizes=other_sizes,
    )
    val_loader = build_loader(val_set, cfg, train=False, shard=(rank, world))
    scheduler = build_scheduler(optimizer, cfg, len(train_loader))
    train_net = wrap_ddp(net, device) if world > 1 else net
    if cfg.compile:
        train_net = torch.compile(train_net)
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None
    guard = NonFiniteGuard(optimizer, device, cfg.max_bad_steps, scaler)
    meta = {"config": cfg.to_dict(), "classes": list(classes), "model_name": cfg.model, "data_shape": data_shape}
    checkpointer = Checkpointer(cfg.output, net, optimizer, scheduler, scaler, guard, meta, enabled=main)

    notes = _split_notes(cfg, train_set, val_set)
    if cfg.extra.get(RESUME_IGNORED_KEY):
        notes.append(
            f"  resuming keeps the checkpoint's recipe; ignored: {', '.join(cfg.extra[RESUME_IGNORED_KEY])} "
            f"(only --epochs, --procs and where-to-run options change on resume)"
        )
    if main:
        os.makedirs(cfg.output, exist_ok=True)
        with open(os.path.join(cfg.output, "config.json"), "w") as f:
            json.dump(cfg.to_dict(), f, indent=2)
        with open(os.path.join(cfg.output, "splits.json"), "w") as f:
            json.dump({"train": split_ids(train_set, "train"), "val": split_ids(val_set, "val")}, f)
    if cfg.dataset == "synthetic" and cfg.synthetic_dense_epochs > 0:
        dense = min(cfg.synthetic_dense_epochs, cfg.epochs)
        (low, high), (low_after, high_after) = synthetic_object_range(cfg, 0), synthetic_object_range(cfg, dense)
        size, size_after = synthetic_image_size(cfg, 0), synthetic_image_size(cfg, dense)
        at, at_after, scale = "", "", ""
        if size != size_after:
            at, at_after = f" at {size} x {size} px", f" at {size_after} x {size_after}"
            scale = ", --synthetic-dense-scale"
        later = f", then {low_after}-{high_after}{at_after}" if dense < cfg.epochs else ""
        notes.append(
            f"  training images hold {low}-{high} objects{at} in epochs 1-{dense}{later} "
            f"(--synthetic-train-objects, --synthetic-dense-epochs{scale})"
        )
    plan = LoopPlan(
        epochs=cfg.epochs,
        seed=cfg.seed,
        val_interval=cfg.val_interval,
        save_interval=cfg.save_interval,
        log_interval=cfg.log_interval,
        checkpoint_steps=cfg.checkpoint_steps,
        progress=cfg.progress and main,
        output=cfg.output,
        dataset=cfg.dataset,
    )
    keeper = BudgetKeeper.for_run(cfg, plan, scheduler, checkpointer.meta, rank, world)
    return RunParts(
        rank=rank,
        world=world,
        device=device,
        net=net,
        train_net=train_net,
        loss_fn=SSDMultiBoxLoss(normalization=cfg.loss_norm),
        optimizer=optimizer,
        scheduler=scheduler,
        scaler=scaler,
        amp_dtype=amp_dtype,
        memory_format=memory_format,
        guard=guard,
        train_set=train_set,
        val_set=val_set,
        classes=classes,
        train_loader=train_loader,
        val_loader=val_loader,
        loader_gen=loader_gen,
        prepare_epoch=lambda epoch: prepare_train_epoch(train_set, cfg, epoch, transforms),
        metric=build_metric(cfg, classes, val_set, data_shape),
        metric_key=metric_key(cfg.dataset),
        checkpointer=checkpointer,
        logger=RunLogger(cfg.output, keep_history=bool(cfg.resume)) if main else None,
        plan=plan,
        resume=load_checkpoint(cfg.resume) if cfg.resume else None,
        resume_path=cfg.resume,
        notes=notes,
        keeper=keeper,
    )


def _split_notes(cfg: TrainConfig, train_set, val_set) -> list[str]:
    """What the log says about the splits: a held-out validation split, and images shared by both splits."""
    notes = []
    holdout = getattr(val_set, "holdout", None)
    if holdout:
        notes.append(f"  {holdout}")
    for name, split in (("training", train_set), ("validation", val_set)):
        left_out = getattr(split, "classes_note", None)
        if left_out:
            notes.append(f"  {name} split: {left_out} (--classes)")
    shared = split_overlap(train_set, val_set)
    if shared:
        notes.append(
            f"warning: {shared} of the {len(val_set)} validation images are also in the training split "
            f"(--train-splits {cfg.train_splits}, --val-splits {cfg.val_splits}); the validation metric "
            f"is optimistic"
        )
    return notes
