"""The options of ``ssdkit train`` (shared with ``ssdkit ablate``) and the ``TrainConfig`` they make."""

from __future__ import annotations

import argparse

__all__ = ["add_train_options", "config_from_args"]


def _csv_list(text: str) -> list[str]:
    return [s.strip() for s in text.split(",") if s.strip()]


def _int_list(text: str) -> list[int]:
    try:
        return [int(s) for s in _csv_list(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers, got {text!r}") from None


def _float_list(text: str) -> list[float]:
    try:
        return [float(s) for s in _csv_list(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _int_option(group, flag: str, default: int, text: str) -> None:
    group.add_argument(flag, type=int, default=default, help=f"{text} (default {default})")


def add_train_options(p: argparse.ArgumentParser) -> None:
    """The options of ``ssdkit train`` (shared with ``ssdkit ablate``). Unset options take the data set's preset."""
    from ..engine.config import (
        DATASETS,
        DECODERS,
        GLUONCV_DECAY_EPOCHS,
        INITS,
        LOSS_NORMS,
        POSITIVE_WEIGHTS,
        SYNTHETIC_RATES,
        SYNTHETIC_TRAIN_OBJECTS,
        TrainConfig,
        preset,
    )

    voc, syn = preset("voc"), preset("synthetic")
    d = TrainConfig()  # the defaults of every option that has one

    def both(key: str) -> str:
        return f"voc/coco: {voc[key]:g}; synthetic: {syn[key]:g}"

    g = p.add_argument_group("what to train")
    g.add_argument(
        "--model",
        help="zoo model name (see `ssdkit models`); default for the synthetic set: ssd_tiny48_synthetic in "
        "float32, ssd_tiny_synthetic under autocast (native bfloat16, CUDA); "
        "else ssd_300_vgg16_atrous_<voc|coco|custom>",
    )
    g.add_argument(
        "--dataset",
        choices=DATASETS,
        default=d.dataset,
        help="synthetic (built in, default), voc (VOCdevkit), coco (COCO json + images), "
        "voc-folder (a VOC-format folder with your own classes)",
    )
    g.add_argument("--data-root", help="folder of the data set (VOCdevkit, COCO root or the VOC-format folder)")
    g.add_argument(
        "--train-splits",
        help="comma-separated, e.g. 2007_trainval,2012_trainval (voc), instances_train2017 (coco), train (voc-folder)",
    )
    g.add_argument("--val-splits", help="e.g. 2007_test (voc), instances_val2017 (coco), val (voc-folder)")
    g.add_argument(
        "--classes",
        type=_csv_list,
        help="comma-separated class names (voc-folder, synthetic; voc: a subset of its 20 for a *_custom model); "
        "objects of other classes are left out",
    )
    g.add_argument("--data-shape", type=int, help="input size in pixels (default: the model's)")
    g.add_argument("--pretrained-base", help="local ImageNet weights file for the backbone (never downloaded)")
    g.add_argument("--pretrained", help="local ssdkit checkpoint to start from")
    _int_option(g, "--synthetic-train-size", d.synthetic_train_size, "synthetic training images per epoch")
    _int_option(g, "--synthetic-val-size", d.synthetic_val_size, "images in the synthetic val split")
    g.add_argument(
        "--synthetic-fresh",
        action=argparse.BooleanOptionalAction,
        default=d.synthetic_fresh,
        help="new synthetic training images every epoch (default); --no-synthetic-fresh repeats the "
        "same --synthetic-train-size images each epoch",
    )
    g.add_argument(
        "--synthetic-train-objects",
        type=_int_list,
        metavar="MIN,MAX",
        help=f"objects per synthetic training image in the first --synthetic-dense-epochs epochs "
        f"(default {','.join(map(str, SYNTHETIC_TRAIN_OBJECTS))}: denser than the val split's 1-10, "
        "more to learn from per image)",
    )
    g.add_argument(
        "--synthetic-dense-epochs",
        type=int,
        metavar="N",
        help="epochs trained on those dense images; later ones have 1-10 objects like the val split "
        "(default: the epochs before the first LR decay)",
    )
    g.add_argument(
        "--synthetic-dense-scale",
        type=float,
        metavar="S",
        help="the dense epochs draw their images at S times the input size, objects scaled alike: cheaper steps "
        "early in the run (default: 0.75 for the tiny models in float32, else 1)",
    )

    g = p.add_argument_group("recipe (defaults: GluonCV's train_ssd.py; a CPU recipe for the synthetic set)")
    g.add_argument("--epochs", type=int, help=f"training epochs ({both('epochs')})")
    g.add_argument("--batch-size", type=int, help=f"images per step, all processes together ({both('batch_size')})")
    g.add_argument(
        "--optimizer",
        choices=("sgd", "adamw"),
        help="sgd (GluonCV's: voc/coco default) or adamw (synthetic default; decoupled weight decay)",
    )
    rates = ", ".join(
        f"{k}: lr {v['lr']:g}, wd {v['wd']:g}, LR decay x{v['lr_decay']:g}" for k, v in SYNTHETIC_RATES.items()
    )
    g.add_argument(
        "--lr", type=float, help=f"learning rate (voc/coco: {voc['lr']:g}; synthetic: per optimizer, {rates})"
    )
    g.add_argument("--momentum", type=float, default=d.momentum, help=f"SGD momentum (default {d.momentum:g})")
    g.add_argument(
        "--wd", type=float, help=f"weight decay on every parameter (voc/coco: {voc['wd']:g}; synthetic: see --lr)"
    )
    g.add_argument(
        "--lr-decay",
        type=float,
        help=f"LR factor at each decay epoch (voc/coco: {voc['lr_decay']:g}; synthetic: see --lr)",
    )
    g.add_argument(
        "--lr-decay-epochs",
        type=_int_list,
        help=f"epochs at which the LR decays (voc/coco: {','.join(map(str, GLUONCV_DECAY_EPOCHS))}; "
        f"synthetic: {','.join(map(str, syn['lr_decay_epochs']))}; scaled when --epochs changes)",
    )
    g.add_argument("--warmup-epochs", type=float, help=f"linear LR warmup ({both('warmup_epochs')})")
    g.add_argument(
        "--augment",
        choices=("gluoncv", "light", "none"),
        help="gluoncv: GluonCV's SSD train preset (voc/coco default); light: flip + colour; none: "
        "resize only (synthetic default)",
    )
    g.add_argument(
        "--match-iou",
        type=float,
        help="an anchor whose IoU with a ground truth is at least this is a positive, besides each "
        "ground truth's best anchor (default: the model's, 0.5 as GluonCV, 0.4 for the tiny models)",
    )
    g.add_argument(
        "--positive-weights",
        choices=POSITIVE_WEIGHTS,
        help="how the loss weighs the positive anchors: 'anchor' 1 each (GluonCV), 'object' each object of an "
        "image alike, however many anchors it matches (default: the model's, 'anchor' as GluonCV, 'object' for "
        "the tiny models)",
    )

    g = p.add_argument_group("the seed tutorial's three tips")
    g.add_argument(
        "--loss-norm",
        choices=LOSS_NORMS,
        default=d.loss_norm,
        help="tip 1: divide the loss by the positives of the whole batch or of each image",
    )
    g.add_argument(
        "--init",
        choices=INITS,
        help="tip 2: initializer of the added layers (extras + heads); "
        "default as GluonCV: xavier heads, model-specific extras",
    )
    g.add_argument(
        "--decoder", choices=DECODERS, default=d.decoder, help="tip 3: class decoding before NMS at evaluation"
    )

    g = p.add_argument_group("running")
    g.add_argument(
        "--device",
        default=d.device,
        help="auto (CUDA if available; under torchrun the GPU of LOCAL_RANK), cpu, cuda, cuda:1 ...",
    )
    g.add_argument(
        "--amp",
        action=argparse.BooleanOptionalAction,
        default=d.amp,
        help="mixed precision: float16 on CUDA, bfloat16 on CPU (default: on for the synthetic set when "
        "the device runs it natively, off for voc/coco as GluonCV)",
    )
    g.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the model for training (faster steps after a compile time at the start)",
    )
    g.add_argument(
        "--num-workers", type=int, help=f"DataLoader worker processes per training process ({both('num_workers')})"
    )
    g.add_argument(
        "--procs",
        type=int,
        help=f"training processes on this machine, data parallel (each takes batch-size / procs images "
        f"a step and its share of the CPU cores, or one GPU; rank 0 evaluates and saves) "
        f"({both('procs')}); under torchrun the processes are torchrun's",
    )
    g.add_argument("--seed", type=int, default=d.seed, help=f"random seed (default {d.seed}, as GluonCV)")
    g.add_argument(
        "--time-budget",
        type=float,
        metavar="MINUTES",
        help=f"synthetic data: measure this machine's speed first, then fit the images per epoch (and, "
        f"if need be, the epochs and LR decay points) so that the run ends within MINUTES, "
        f"evaluation included (default {syn['time_budget']:g}; 0: train the whole recipe)",
    )
    g.add_argument("--output", help="run folder (default runs/<model>-<dataset>-<time>)")
    g.add_argument(
        "--resume",
        help="a checkpoint (last.pt) to continue exactly where it stopped, or 'auto': the "
        "--output folder's last.pt when there is one (else a new run)",
    )
    g.add_argument(
        "--checkpoint-steps",
        type=int,
        default=d.checkpoint_steps,
        metavar="N",
        help="also save last.pt every N steps inside an epoch (default: at epoch ends only)",
    )
    g.add_argument(
        "--max-bad-steps",
        type=int,
        default=d.max_bad_steps,
        metavar="K",
        help=f"a step with a non-finite loss or gradient is skipped; stop after K in a row (default {d.max_bad_steps})",
    )
    g.add_argument(
        "--val-interval",
        type=int,
        help=f"evaluate every N epochs and after the last (default: voc "
        f"{voc['val_interval']}, coco {preset('coco')['val_interval']}, "
        f"synthetic {syn['val_interval']}, or less so that a run "
        f"evaluates at least three times)",
    )
    _int_option(g, "--save-interval", d.save_interval, "keep epoch_XXXX.pt every N epochs")
    _int_option(g, "--log-interval", d.log_interval, "log the loss every N steps")
    g.add_argument(
        "--on-bad-sample",
        choices=("skip", "error"),
        default=d.on_bad_sample,
        help="a corrupt image or bad annotation: report and skip it (default), or stop",
    )
    g.add_argument(
        "--no-progress",
        dest="progress",
        action="store_false",
        help="no progress bar (none either where stderr is no terminal)",
    )


def config_from_args(args: argparse.Namespace):
    import dataclasses

    from ..engine.config import TrainConfig

    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in vars(args).items() if k in fields})
