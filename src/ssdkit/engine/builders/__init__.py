"""Builders: the only place besides the CLI that reads a :class:`~ssdkit.engine.config.TrainConfig`, one module
per concern: ``runtime`` (device, threads, seeds, autocast), ``model``, ``data`` (transforms, splits through the
data-set registry, loaders), ``optim`` (optimizer, schedule), ``metric`` and ``run`` (every part of one run,
assembled once). Library errors about the user's files or names become :class:`ConfigError` (one clear line).
"""

from .data import (
    build_datasets,
    build_loader,
    prepare_train_epoch,
    split_ids,
    split_overlap,
    synthetic_image_size,
    synthetic_object_range,
    train_transform,
)
from .metric import build_metric, metric_key
from .model import build_model, model_anchors, model_data_shape
from .optim import build_optimizer, build_scheduler
from .run import LoopPlan, RunParts, build_run, prepare_config
from .runtime import (
    amp_dtype_for,
    cpu_has_native_bf16,
    onednn_runs_avx512,
    run_memory_format,
    seed_everything,
    select_device,
    share_cpu_cores,
    synthetic_default_dense_scale,
    synthetic_default_model,
    worker_init,
)

__all__ = [
    "select_device",
    "share_cpu_cores",
    "seed_everything",
    "worker_init",
    "cpu_has_native_bf16",
    "amp_dtype_for",
    "onednn_runs_avx512",
    "run_memory_format",
    "synthetic_default_model",
    "synthetic_default_dense_scale",
    "build_model",
    "model_anchors",
    "model_data_shape",
    "build_datasets",
    "build_loader",
    "train_transform",
    "prepare_train_epoch",
    "synthetic_object_range",
    "synthetic_image_size",
    "split_ids",
    "split_overlap",
    "build_optimizer",
    "build_scheduler",
    "build_metric",
    "metric_key",
    "LoopPlan",
    "RunParts",
    "build_run",
    "prepare_config",
]
