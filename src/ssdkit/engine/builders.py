"""Builders: the only place besides the CLI that reads a :class:`TrainConfig`.

They turn a resolved config into a model, data sets, data loaders, an optimizer and a metric, and translate
library errors about the user's files or names into :class:`ConfigError` (one clear line for the CLI).
"""
from __future__ import annotations

import os
import random
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from .config import ConfigError, TrainConfig

__all__ = ["select_device", "build_model", "build_datasets", "build_loader", "build_optimizer", "build_metric",
           "model_anchors", "seed_everything", "worker_init", "train_transform", "prepare_train_epoch",
           "synthetic_object_range"]


def select_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ConfigError(f"--device {name!r} is not a device ({err})") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: CUDA is not available on this machine")
    return device


def share_cpu_cores(device: torch.device, num_workers: int, procs: int = 1) -> int:
    """On CPU, give each of ``procs`` training processes an equal share of the cores and leave one core to each
    DataLoader worker: intra-op threads = cores / procs - workers (at least 1), unless ``OMP_NUM_THREADS`` says
    otherwise. Threads that compete with the workers for a core slow both down (measured: on 2 cores, 1 thread +
    1 worker trained 1.4x faster than 2 threads + 1 worker). Returns the thread count in use."""
    if device.type == "cpu" and "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(1, procs) - num_workers))
    return torch.get_num_threads()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def worker_init(worker_id: int) -> None:
    """Seed numpy and ``random`` in a DataLoader worker from the seed torch gave it (reproducible per epoch)."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def build_model(cfg: TrainConfig, classes: tuple[str, ...] | None):
    from ..models import get_model, list_models

    if cfg.model not in list_models():
        raise ConfigError(f"unknown model {cfg.model!r}; choose one of: {', '.join(list_models())}")
    kwargs: dict[str, Any] = dict(init=cfg.init, decoder=cfg.decoder)
    fixed = cfg.model.endswith("_voc") or cfg.model.endswith("_coco")
    if fixed and classes is not None and cfg.dataset in ("synthetic", "voc-folder"):
        raise ConfigError(f"model {cfg.model} has the fixed {cfg.model.rsplit('_', 1)[-1].upper()} classes; "
                          f"use a *_custom model (e.g. {cfg.model.rsplit('_', 1)[0]}_custom) for your classes")
    try:
        return get_model(cfg.model, pretrained=cfg.pretrained or False, pretrained_base=cfg.pretrained_base or False,
                         classes=None if fixed else classes, **kwargs)
    except (ValueError, FileNotFoundError, KeyError) as err:
        raise ConfigError(str(err).strip('"')) from None


def train_transform(augment: str, data_shape: int):
    """``gluoncv``: GluonCV's full SSD train preset; ``light``: colour distortion + flip + resize; ``none``: resize
    only (the synthetic set's default: it brings new images every epoch, varied in scale and position)."""
    from torchvision.transforms import v2

    from ..data import transforms as T

    if augment == "gluoncv":
        return T.SSDTrainTransform(data_shape)
    if augment == "light":
        return v2.Compose([T.RandomColorDistort(), v2.RandomHorizontalFlip(0.5), T.SSDValTransform(data_shape)])
    return T.SSDValTransform(data_shape)


def synthetic_object_range(cfg: TrainConfig, epoch: int) -> tuple[int, int]:
    """Objects per synthetic training image in epoch ``epoch`` (0-based): ``cfg.synthetic_train_objects`` in the
    first ``cfg.synthetic_dense_epochs`` epochs, the data set's own range (as the val split) after them."""
    from ..data.synthetic import DEFAULT_OBJECT_RANGE

    low, high = cfg.synthetic_train_objects if epoch < cfg.synthetic_dense_epochs else DEFAULT_OBJECT_RANGE
    return low, high


def prepare_train_epoch(train_set, cfg: TrainConfig, epoch: int) -> None:
    """Point the training set at epoch ``epoch`` (0-based) before its loader starts (workers copy the set then):
    the synthetic set's new images and its objects per image (:func:`synthetic_object_range`)."""
    if hasattr(train_set, "set_epoch"):
        train_set.set_epoch(epoch)
    if cfg.dataset == "synthetic" and hasattr(train_set, "set_object_range"):
        train_set.set_object_range(*synthetic_object_range(cfg, epoch))


def _splits(text: str | None) -> list[str]:
    return [s.strip() for s in (text or "").split(",") if s.strip()]


def build_datasets(cfg: TrainConfig, data_shape: int, train: bool = True, val: bool = True):
    """``(train_set | None, val_set | None, classes)``, transforms attached. Errors name the file or option."""
    from ..data import transforms as T

    train_tf = train_transform(cfg.augment, data_shape)
    val_tf = T.SSDValTransform(data_shape)
    train_set = val_set = None
    try:
        if cfg.dataset == "synthetic":
            from ..data.synthetic import SyntheticShapes

            kw = dict(image_size=data_shape)
            if cfg.classes:
                kw["classes"] = tuple(cfg.classes)
            if train:
                low, high = synthetic_object_range(cfg, 0)
                train_set = SyntheticShapes(cfg.synthetic_train_size, seed=cfg.seed, transform=train_tf,
                                            fresh_per_epoch=cfg.synthetic_fresh, min_objects=low,
                                            max_objects=high, **kw)
            if val:
                val_set = SyntheticShapes(cfg.synthetic_val_size, seed=cfg.seed + 1_000_003, transform=val_tf, **kw)
        else:
            root = os.path.expanduser(cfg.data_root)
            if not os.path.isdir(root):
                raise ConfigError(f"--data-root {cfg.data_root}: no such folder")
            if cfg.dataset == "voc":
                from ..data.voc import VOC_CLASSES, VOCDetection

                if cfg.classes:
                    unknown = [c for c in cfg.classes if c not in VOC_CLASSES]
                    if unknown:
                        raise ConfigError(f"--classes: {', '.join(unknown)} not among the 20 VOC classes")
                if train:
                    train_set = VOCDetection(root, splits=_splits(cfg.train_splits), transform=train_tf,
                                             on_bad_sample=cfg.on_bad_sample)
                if val:
                    val_set = VOCDetection(root, splits=_splits(cfg.val_splits), transform=val_tf,
                                           on_bad_sample=cfg.on_bad_sample)
            elif cfg.dataset == "voc-folder":
                from ..data.voc import VOCFolder

                if train:
                    train_set = VOCFolder(root, classes=cfg.classes, split=cfg.train_splits, transform=train_tf,
                                          on_bad_sample=cfg.on_bad_sample)
                if val:
                    val_set = VOCFolder(root, classes=cfg.classes or (train_set.classes if train_set else None),
                                        split=cfg.val_splits, transform=val_tf, on_bad_sample=cfg.on_bad_sample)
            else:
                from ..data.coco import COCODetection

                if train:
                    train_set = COCODetection(root, splits=_splits(cfg.train_splits), transform=train_tf,
                                              skip_empty=True, on_bad_sample=cfg.on_bad_sample)
                if val:
                    val_set = COCODetection(root, splits=_splits(cfg.val_splits), transform=val_tf,
                                            skip_empty=False, on_bad_sample=cfg.on_bad_sample)
    except ConfigError:
        raise
    except (FileNotFoundError, ValueError) as err:
        raise ConfigError(str(err).strip('"')) from None
    any_set = train_set if train_set is not None else val_set
    classes = tuple(any_set.classes)
    if cfg.dataset == "voc-folder" and train_set is not None and val_set is not None \
            and tuple(val_set.classes) != classes:
        raise ConfigError(f"train and val splits disagree on the classes: {classes} vs {tuple(val_set.classes)}")
    for name, ds in (("train", train_set), ("val", val_set)):
        if ds is not None and len(ds) == 0:
            raise ConfigError(f"the {name} split of --dataset {cfg.dataset} has no usable images")
    return train_set, val_set, classes


def model_anchors(net, data_shape: int, device: torch.device) -> torch.Tensor:
    """Anchors ``Tensor[1, A, 4]`` of ``net`` at ``data_shape`` x ``data_shape`` (as GluonCV: one forward on zeros)."""
    was_training = net.training
    net.eval()
    with torch.no_grad():
        _, _, anchors = net(torch.zeros(1, 3, data_shape, data_shape, device=device))
    net.train(was_training)
    return anchors.detach().cpu()


def build_loader(dataset, cfg: TrainConfig, train: bool, anchors: torch.Tensor | None = None,
                 generator: torch.Generator | None = None, shard: tuple[int, int] = (0, 1)) -> DataLoader:
    """Training loaders compute SSD targets in their workers (``TargetCollate``); evaluation loaders only pad.

    ``shard=(rank, world)`` with ``world > 1``: this process's part of a data-parallel run, ``batch_size / world``
    images a step from a ``DistributedSampler`` (call its ``set_epoch`` every epoch).
    """
    from ..data.collate import TargetCollate, detection_collate

    if train:
        from ..targets import SSDTargetGenerator

        # no sampling in the targets (negative_mining_ratio=-1): hard negatives are mined in the loss, as GluonCV
        collate = TargetCollate(anchors, SSDTargetGenerator(iou_thresh=cfg.match_iou, negative_mining_ratio=-1))
    else:
        collate = detection_collate
    workers = cfg.num_workers
    rank, world = shard
    sampler = None
    if train and world > 1:
        from torch.utils.data.distributed import DistributedSampler

        sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=cfg.seed)
    return DataLoader(dataset, batch_size=cfg.batch_size // world if sampler else cfg.batch_size,
                      shuffle=train and sampler is None,
                      sampler=sampler, drop_last=False, num_workers=workers,
                      collate_fn=collate, worker_init_fn=worker_init if workers else None, generator=generator,
                      persistent_workers=False, pin_memory=torch.cuda.is_available(),
                      prefetch_factor=4 if workers else None)


def build_optimizer(net: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """SGD with momentum and weight decay on every parameter, as GluonCV (no exemptions for biases or BN);
    ``--optimizer adamw`` for recipes that train from scratch."""
    params = [p for p in net.parameters() if p.requires_grad]
    # one fused kernel for all parameters where PyTorch has it (CPU and CUDA): on this CPU the SGD step of the
    # synthetic recipe's model takes 1.5 ms instead of 2.4 ms (one thread, medians)
    fused = bool(params) and all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.wd, fused=fused or None)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.wd, fused=fused or None)


def build_metric(cfg: TrainConfig, classes: tuple[str, ...], val_set=None, data_shape: int | None = None):
    """VOC07 11-point mAP for VOC-style data (GluonCV's choice), COCO AP for COCO."""
    from ..metrics import COCODetectionMetric, VOC07MApMetric

    if cfg.dataset == "coco":
        return COCODetectionMetric(val_set, data_shape=(data_shape, data_shape))
    return VOC07MApMetric(iou_thresh=0.5, class_names=list(classes))
