"""Training configuration: one dataclass whose defaults are GluonCV's ``train_ssd.py``, plus per-data-set presets.

Fields left ``None`` are filled by :func:`resolve_config`: the recipe from the preset of the data set (the built-in
synthetic set has a CPU recipe, ``voc``/``coco``/``voc-folder`` GluonCV's), values that belong to a model (its input
size, its matching IoU) from the model's preset in :mod:`ssdkit.models.presets`. The resolved config is what runs and
what every checkpoint stores. Why the synthetic recipe is what it is: ``docs/synthetic-recipe.md``.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from typing import Any

from ..constants import POSITIVE_WEIGHTS

__all__ = [
    "TrainConfig",
    "resolve_config",
    "ConfigError",
    "DATASETS",
    "LOSS_NORMS",
    "INITS",
    "DECODERS",
    "preset",
    "scaled_decay_epochs",
    "scale_epochs",
    "SYNTHETIC_RATES",
    "SYNTHETIC_TRAIN_OBJECTS",
    "dense_image_size",
]

DATASETS = ("synthetic", "voc", "coco", "voc-folder")
LOSS_NORMS = ("batch", "sample")
INITS = ("xavier", "xavier_gaussian_out", "uniform", "kaiming_fan_out")
DECODERS = ("per_class", "argmax")
GLUONCV_EPOCHS = 240
GLUONCV_DECAY_EPOCHS = (160, 200)
# Objects per synthetic training image until the first LR decay (then 1-10, as the val split where mAP is measured):
# denser images hold more positives for the same pixels.
SYNTHETIC_TRAIN_OBJECTS = (5, 20)
# The synthetic preset's LR decay points (of its 16 epochs) where the dense epochs draw smaller images
# (--synthetic-dense-scale < 1): those epochs are cheap, so two more of them before the decays teach more for the
# same time (fixed work, the share of the recipe a 5-minute AVX2 budget fits: 0.8713 / 0.8742 against
# 0.8652 / 0.8646 with the decays at 12 and 14; docs/synthetic-recipe.md).
SMALL_DENSE_DECAY_EPOCHS = (14, 15)
# The synthetic recipe's learning rate, weight decay and LR decay factor for each optimizer, each filled where the user
# did not set it. AdamW (the preset's) takes a decoupled decay: 8e-3 x 0.05 shrinks the weights by 4e-4 a step, as
# SGD's 0.08 x 5e-4 does through momentum 0.9. At fixed work (16 epochs of 2,400 images, the share of the recipe a
# slow 2-core CPU fits in 10 minutes) AdamW at 8e-3 ended 0.0070-0.0107 above SGD at three seeds; SGD at 0.08 is the
# rate the tips study swept around. AdamW's rate falls x0.25 at each decay point, not x0.1 (a time-budgeted run trains
# its last epoch at the lowest rate until the deadline, 6-11 % of its images on a slow CPU): on half the compute it
# ended above x0.1 at four seeds of five, median +0.0019 on a 2,000-image split (docs/synthetic-recipe.md).
SYNTHETIC_RATES = {"adamw": dict(lr=8e-3, wd=0.05, lr_decay=0.25), "sgd": dict(lr=0.08, wd=5e-4, lr_decay=0.1)}


class ConfigError(ValueError):
    """A problem with the user's settings or files; the CLI prints it as one line and exits with code 2."""


@dataclass
class TrainConfig:
    # what to train
    model: str | None = None
    dataset: str = "synthetic"
    data_root: str | None = None
    train_splits: str | None = None
    val_splits: str | None = None
    classes: list[str] | None = None
    data_shape: int | None = None
    pretrained_base: str | None = None
    pretrained: str | None = None
    synthetic_train_size: int = 4000
    synthetic_val_size: int = 500
    synthetic_fresh: bool = True  # new synthetic training images every epoch (False: the same set each epoch)
    # objects per synthetic *training* image in the first synthetic_dense_epochs epochs, [min, max] (None:
    # SYNTHETIC_TRAIN_OBJECTS); later epochs, and the val split, have the data set's own 1-10
    synthetic_train_objects: list[int] | None = None
    synthetic_dense_epochs: int | None = None  # None: the epochs before the first LR decay
    # the dense epochs draw their images at this share of data_shape, objects scaled alike (None: 0.75 for the tiny
    # models in float32, else 1; see builders.runtime.synthetic_default_dense_scale)
    synthetic_dense_scale: float | None = None
    # the recipe (None: from the data set's preset)
    epochs: int | None = None
    batch_size: int | None = None
    optimizer: str | None = None
    lr: float | None = None
    momentum: float = 0.9
    wd: float | None = None  # None: the preset's (GluonCV's 5e-4; the synthetic set's per optimizer, SYNTHETIC_RATES)
    lr_decay: float | None = None  # None: the preset's (GluonCV's 0.1; the synthetic set's per optimizer)
    lr_decay_epochs: list[int] | None = None
    warmup_epochs: float | None = None
    augment: str | None = None
    match_iou: float | None = None  # an anchor with IoU >= this to a ground truth is a positive (None: the model's)
    # how the loss weighs the positive anchors: "anchor" 1 each (GluonCV), "object" each object alike (None: the
    # model's)
    positive_weights: str | None = None
    # the seed's three tips
    loss_norm: str = "batch"
    init: str | None = None
    decoder: str = "per_class"
    # running
    device: str = "auto"
    amp: bool | None = None  # None: auto (bfloat16 on CPUs with native bf16, float16 on CUDA)
    compile: bool = False  # torch.compile the model for training (pays a compile time at the start)
    num_workers: int | None = None
    procs: int | None = None  # training processes (data parallel); batch_size is split among them
    seed: int = 233
    # minutes from fit() to the final table (synthetic data only; None: the preset's, 0: train the whole recipe);
    # the run measures its speed first and shrinks the recipe to fit (see engine/budget.py)
    time_budget: float | None = None
    output: str | None = None
    resume: str | None = None  # a checkpoint, or "auto": the output folder's last.pt when there is one
    checkpoint_steps: int = 0  # also save last.pt every N steps inside an epoch (0: at epoch ends only)
    max_bad_steps: int = 10  # stop after this many steps in a row with a non-finite loss or gradient
    val_interval: int | None = None
    save_interval: int = 10
    log_interval: int = 20
    on_bad_sample: str = "skip"
    progress: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        d = dict(d)
        # configs saved before the field existed trained on the data set's own 1-10 objects per image
        d.setdefault("synthetic_train_objects", [1, 10])
        d.setdefault("synthetic_dense_scale", 1.0)  # and at full size
        d.setdefault("positive_weights", "anchor")  # and with every positive anchor weighed alike
        return cls(**{k: v for k, v in d.items() if k in names})


# per data set: values for the fields left None
# GluonCV's train_ssd.py recipe, shared by the real data sets
_GLUONCV_RECIPE: dict[str, Any] = dict(
    optimizer="sgd",
    batch_size=32,
    amp=False,
    epochs=GLUONCV_EPOCHS,
    lr=1e-3,
    wd=5e-4,
    lr_decay=0.1,
    warmup_epochs=0.0,
    num_workers=4,
    val_interval=1,
    augment="gluoncv",
    procs=1,
)

_PRESETS: dict[str, dict[str, Any]] = {
    # A CPU recipe for the built-in data set, sized for a 2-core CPU: a small model trained from scratch on new
    # images every epoch (synthetic_fresh, so no augmentation), AdamW after one warmup epoch (its lr and weight
    # decay: SYNTHETIC_RATES), batch 16 split over two processes (one per core, each making its own data), step
    # decay, and a 10-minute time budget that shrinks the recipe on a slower machine. The model is the float32 one;
    # ``prepare_config`` takes the 64-channel stem instead where the run trains under autocast
    # (builders.runtime.synthetic_default_model).
    "synthetic": dict(
        model="ssd_tiny48_synthetic",
        optimizer="adamw",
        batch_size=16,
        epochs=16,
        lr_decay_epochs=[12, 14],
        warmup_epochs=1.0,
        num_workers=0,
        val_interval=8,
        augment="none",
        procs=2,
        time_budget=10.0,
    ),
    # GluonCV's train_ssd.py
    "voc": dict(
        _GLUONCV_RECIPE,
        model="ssd_300_vgg16_atrous_voc",
        train_splits="2007_trainval,2012_trainval",
        val_splits="2007_test",
    ),
    "voc-folder": dict(_GLUONCV_RECIPE, model="ssd_300_vgg16_atrous_custom", train_splits="train", val_splits="val"),
    "coco": dict(
        _GLUONCV_RECIPE,
        model="ssd_300_vgg16_atrous_coco",
        val_interval=10,
        train_splits="instances_train2017",
        val_splits="instances_val2017",
    ),
}


def dense_image_size(data_shape: int, scale: float) -> int:
    """The size (pixels, square) that the dense synthetic epochs draw their images at."""
    return max(1, round(data_shape * scale))


def preset(dataset: str) -> dict[str, Any]:
    """A copy of the values that ``dataset``'s preset fills in (e.g. for help texts)."""
    return dict(_PRESETS[dataset])


def scale_epochs(points, base: int, epochs: int) -> list[int]:
    """Decay epochs ``points`` (of a ``base``-epoch schedule) for ``epochs``: rounded, at least epoch 1 and at most
    the last epoch (a decay at ``epochs`` itself would never apply)."""
    last = max(1, epochs - 1)
    return sorted({min(last, max(1, round(e * epochs / base))) for e in points})


def scaled_decay_epochs(epochs: int) -> list[int]:
    """GluonCV's decay points (160, 200 of 240 epochs) scaled to ``epochs``."""
    return scale_epochs(GLUONCV_DECAY_EPOCHS, GLUONCV_EPOCHS, epochs)


def _model_match_iou(model: str) -> float:
    """The matching IoU of zoo model ``model``'s preset; GluonCV's 0.5 for models outside the zoo table."""
    from ..models.presets import PRESETS

    return PRESETS[model].match_iou if model in PRESETS else 0.5


def _model_positive_weights(model: str) -> str:
    """The positives' loss weighting of zoo model ``model``'s preset; GluonCV's ``"anchor"`` outside the table."""
    from ..models.presets import PRESETS

    return PRESETS[model].positive_weights if model in PRESETS else "anchor"


def default_val_interval(epochs: int, preset_interval: int) -> int:
    """The largest interval up to the preset's that evaluates at least three times (every epoch when the run has
    fewer): evaluations fall on multiples of the interval and on the last epoch."""
    for interval in range(max(1, preset_interval), 1, -1):
        if epochs // interval + (epochs % interval > 0) >= min(3, epochs):
            return interval
    return 1


def _cuda_devices(device: str | None) -> int | None:
    """The GPU count when ``device`` trains on CUDA (``auto`` on a machine with one, or ``cuda...``), else None."""
    import torch

    if (device == "auto" and torch.cuda.is_available()) or str(device).startswith("cuda"):
        return torch.cuda.device_count()
    return None


def usable_cpus() -> int:
    """The CPU cores this process may run on (its affinity where the OS tells it, as PyTorch's loader counts)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # no affinity on macOS and Windows
        return max(1, os.cpu_count() or 1)


def resolve_config(cfg: TrainConfig) -> TrainConfig:
    """Fill the ``None`` fields from the data set's preset and check every choice; raises :class:`ConfigError`."""
    if cfg.dataset not in DATASETS:
        raise ConfigError(f"--dataset must be one of {', '.join(DATASETS)}, got {cfg.dataset!r}")
    out = dataclasses.replace(cfg)
    preset = _PRESETS[cfg.dataset]
    if cfg.dataset == "synthetic":
        preset = {**preset, **SYNTHETIC_RATES.get(cfg.optimizer or preset["optimizer"], {})}
        if (cfg.synthetic_dense_scale or 1.0) < 1:
            preset["lr_decay_epochs"] = list(SMALL_DENSE_DECAY_EPOCHS)
    user_set_epochs = cfg.epochs is not None
    for key, value in preset.items():
        if getattr(out, key) is None:
            setattr(out, key, value)
    if out.match_iou is None:
        out.match_iou = _model_match_iou(out.model)
    if out.positive_weights is None:
        out.positive_weights = _model_positive_weights(out.model)
    if cfg.num_workers is None and out.num_workers is not None and isinstance(out.procs, int) and out.procs >= 1:
        # GluonCV's 4 loader workers per process are more processes than a 2-core machine has cores, which PyTorch
        # warns about at every loader; a worker per core of the process's share keeps the images coming
        out.num_workers = min(out.num_workers, max(1, usable_cpus() // out.procs))
    if cfg.val_interval is None and isinstance(out.epochs, int) and out.epochs > 0:
        out.val_interval = default_val_interval(out.epochs, preset["val_interval"])
    if out.lr_decay_epochs is None:
        out.lr_decay_epochs = scaled_decay_epochs(out.epochs)
    elif user_set_epochs and cfg.lr_decay_epochs is None and preset.get("lr_decay_epochs"):
        # the preset's decay points belong to its own epoch count: scale them with --epochs
        base = preset["epochs"]
        out.lr_decay_epochs = scale_epochs(preset["lr_decay_epochs"], base, out.epochs)
    if out.loss_norm not in LOSS_NORMS:
        raise ConfigError(f"--loss-norm must be one of {', '.join(LOSS_NORMS)}, got {out.loss_norm!r}")
    if out.positive_weights not in POSITIVE_WEIGHTS:
        raise ConfigError(
            f"--positive-weights must be one of {', '.join(POSITIVE_WEIGHTS)}, got {out.positive_weights!r}"
        )
    if out.init is not None and out.init not in INITS:
        raise ConfigError(f"--init must be one of {', '.join(INITS)}, got {out.init!r}")
    if out.decoder not in DECODERS:
        raise ConfigError(f"--decoder must be one of {', '.join(DECODERS)}, got {out.decoder!r}")
    if out.optimizer not in ("sgd", "adamw"):
        raise ConfigError(f"--optimizer must be sgd or adamw, got {out.optimizer!r}")
    if out.on_bad_sample not in ("skip", "error"):
        raise ConfigError(f"--on-bad-sample must be 'skip' or 'error', got {out.on_bad_sample!r}")
    if out.augment not in ("gluoncv", "light", "none"):
        raise ConfigError(f"--augment must be gluoncv, light or none, got {out.augment!r}")
    for name in (
        "epochs",
        "batch_size",
        "synthetic_train_size",
        "synthetic_val_size",
        "val_interval",
        "save_interval",
        "log_interval",
    ):
        if getattr(out, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(out, name)}")
    if not 0 < out.match_iou <= 1:
        raise ConfigError(f"--match-iou must be in (0, 1], got {out.match_iou}")
    if not math.isfinite(out.lr) or out.lr <= 0:  # a NaN rate makes every weight NaN without a bad gradient
        raise ConfigError(f"--lr must be a positive number, got {out.lr}")
    for name in ("momentum", "wd", "lr_decay"):
        value = getattr(out, name)
        if value is not None and (not math.isfinite(value) or value < 0):
            raise ConfigError(f"--{name.replace('_', '-')} must be a finite number >= 0, got {value}")
    if out.checkpoint_steps < 0:
        raise ConfigError(f"--checkpoint-steps must be >= 0, got {out.checkpoint_steps}")
    if out.max_bad_steps < 1:
        raise ConfigError(f"--max-bad-steps must be at least 1, got {out.max_bad_steps}")
    if out.num_workers < 0:
        raise ConfigError(f"--num-workers must be >= 0, got {out.num_workers}")
    if out.procs < 1:
        raise ConfigError(f"--procs must be at least 1, got {out.procs}")
    gpus = _cuda_devices(out.device)
    if gpus is not None and out.procs > gpus:
        if cfg.procs is None:
            # the preset's processes are one per CPU core; on CUDA each process needs a GPU of its own
            out.procs = max(1, gpus)
        else:
            raise ConfigError(
                f"--procs {out.procs} on --device {out.device} needs {out.procs} GPUs (one per process); "
                f"this machine has {gpus}"
            )
    if gpus is not None and cfg.num_workers is None and out.num_workers == 0:
        # the preset makes its images in the training processes, one per CPU core; a GPU outruns one process's
        # image making (a GPU run of the synthetic preset trained 122 images/s without workers), so the run's
        # processes share the spare cores as DataLoader workers
        out.num_workers = max(1, min(8, ((os.cpu_count() or 2) - 1) // out.procs))
    if out.batch_size % out.procs:
        raise ConfigError(
            f"--batch-size {out.batch_size} must be a multiple of --procs {out.procs} "
            f"(every process takes batch-size / procs images a step)"
        )
    objects = out.synthetic_train_objects
    if objects is None:
        objects = SYNTHETIC_TRAIN_OBJECTS
    if (
        not isinstance(objects, (list, tuple))
        or len(objects) != 2
        or not all(isinstance(n, int) and not isinstance(n, bool) for n in objects)
        or not 1 <= objects[0] <= objects[1]
    ):
        raise ConfigError(f"--synthetic-train-objects must be MIN,MAX with 1 <= MIN <= MAX, got {objects!r}")
    out.synthetic_train_objects = [int(objects[0]), int(objects[1])]
    if out.synthetic_dense_epochs is None:
        out.synthetic_dense_epochs = min(out.lr_decay_epochs) if out.lr_decay_epochs else out.epochs
    if out.synthetic_dense_epochs < 0:
        raise ConfigError(f"--synthetic-dense-epochs must be >= 0, got {out.synthetic_dense_epochs}")
    if out.synthetic_dense_scale is None:
        out.synthetic_dense_scale = 1.0
    if not (math.isfinite(out.synthetic_dense_scale) and 0 < out.synthetic_dense_scale <= 1):
        raise ConfigError(f"--synthetic-dense-scale must be in (0, 1], got {out.synthetic_dense_scale}")
    if out.data_shape and dense_image_size(out.data_shape, out.synthetic_dense_scale) < 16:
        raise ConfigError(
            f"--synthetic-dense-scale {out.synthetic_dense_scale} draws {out.data_shape} px images at "
            f"{dense_image_size(out.data_shape, out.synthetic_dense_scale)} px; the synthetic set needs at least 16"
        )
    if out.time_budget is not None and out.time_budget < 0:
        raise ConfigError(f"--time-budget must be >= 0 minutes (0: no budget), got {out.time_budget}")
    if out.time_budget and out.dataset != "synthetic":
        raise ConfigError(f"--time-budget works with --dataset synthetic only, not {out.dataset}")
    if out.dataset != "synthetic" and not out.data_root:
        raise ConfigError(f"--dataset {out.dataset} needs --data-root (the folder that holds the data set)")
    return out
