"""``ssdkit`` command line: train, eval, predict, export, convert, ablate, models. The only module that parses
arguments."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Sequence

from .train_options import _csv_list, _float_list, add_train_options, config_from_args

__all__ = ["main", "build_parser"]

EPILOG = """examples:
  ssdkit train                                   # built-in synthetic shapes, small CPU model, at most 10 min
  ssdkit train --model ssd_300_vgg16_atrous_voc --dataset voc --data-root ~/data/VOCdevkit \\
               --pretrained-base ~/weights/vgg16.pth
  ssdkit eval --checkpoint runs/<run>/best.pt
  ssdkit predict --checkpoint runs/<run>/best.pt photo.jpg
  ssdkit export --checkpoint runs/<run>/best.pt --output model.onnx
  ssdkit predict --onnx model.onnx photo.jpg
  ssdkit ablate --tip loss-norm --lr-sweep 0.04,0.08,0.16
  ssdkit convert ssd_300_vgg16_atrous_voc-xxxx.params --model ssd_300_vgg16_atrous_voc --output voc300.pt
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ssdkit",
        description="Train, evaluate and run SSD object detectors (GluonCV's SSD on PyTorch).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from .. import __version__

    parser.add_argument("--version", action="version", version=f"ssdkit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser(
        "train",
        help="train a detector (default: built-in synthetic data, small CPU model)",
        description="Train an SSD. With no options: the built-in synthetic shapes data set and the "
        "small ssd_tiny48_synthetic model (ssd_tiny_synthetic where it trains in bfloat16 or on CUDA), within a "
        "10-minute time budget.",
    )
    add_train_options(p)

    p = sub.add_parser(
        "eval",
        help="evaluate a checkpoint and print the per-class AP table",
        description="Evaluate a checkpoint on its validation split (or another data set).",
    )
    p.add_argument("--checkpoint", required=True, help="a .pt file written by `ssdkit train`")
    p.add_argument("--dataset", help="override the data set stored in the checkpoint")
    p.add_argument("--data-root", help="override the data root stored in the checkpoint")
    p.add_argument("--val-splits", help="override the validation splits")
    p.add_argument("--decoder", choices=("per_class", "argmax"), help="class decoding (default: the checkpoint's)")
    p.add_argument("--batch-size", type=int, help="images per batch")
    p.add_argument("--device", default="auto")
    p.add_argument("--num-workers", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print the metrics as JSON instead of a table")
    p.add_argument(
        "--on-bad-sample",
        choices=("skip", "error"),
        default="skip",
        help="skip: leave an unreadable image out and say so in the title (default); error: stop at it",
    )
    p.add_argument(
        "--int8",
        type=int,
        nargs="?",
        const=256,
        default=0,
        metavar="N",
        help="evaluate the network quantized to int8 (CPU, needs torchao), calibrated on N training images "
        "(default 256)",
    )

    p = sub.add_parser(
        "predict",
        help="detect objects in image files",
        description="Run a checkpoint on images: prints boxes as JSON and writes pictures with the boxes drawn.",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", help="a .pt file written by `ssdkit train`")
    src.add_argument("--onnx", help="an ONNX file written by `ssdkit export` (runs on ONNX Runtime)")
    p.add_argument("images", nargs="+", help="image files (JPEG, PNG)")
    p.add_argument("--score-thresh", type=float, default=0.3, help="only report detections above this score")
    p.add_argument("--output", help="folder for the pictures with boxes (default: predictions/ beside the checkpoint)")
    p.add_argument("--device", default="auto")

    p = sub.add_parser(
        "export",
        help="write a detector as ONNX or TorchScript, decoding and NMS inside",
        description="Export a checkpoint or zoo model: input images float32 [N, 3, H, W] (as "
        "net.detect takes), outputs ids [N, 100], scores [N, 100], boxes [N, 100, 4] "
        "(input pixels, -1 padded). The file's metadata holds the class names and the "
        "preprocessing.",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", help="a .pt file written by `ssdkit train`")
    src.add_argument("--model", help="a zoo model name (see `ssdkit models`)")
    p.add_argument(
        "--pretrained", help="with --model: a local weights file (GluonCV .params, ssdkit checkpoint or state dict)"
    )
    p.add_argument("--classes", type=_csv_list, help="with --model: comma-separated class names (*_custom models)")
    p.add_argument("--output", required=True, help="the file to write, e.g. model.onnx")
    p.add_argument(
        "--format",
        choices=("onnx", "torchscript"),
        default="onnx",
        help="onnx (default; ONNX Runtime and others) or torchscript (torch.jit.load, nothing else needed)",
    )
    p.add_argument("--opset", type=int, help="ONNX opset (default 18)")
    p.add_argument(
        "--raw",
        action="store_true",
        help="export the network's raw outputs (cls_preds, box_preds) and the anchors only",
    )

    p = sub.add_parser(
        "ablate",
        help="measure the seed tutorial's three tips with paired runs",
        description="Train paired runs that differ only in one tip, evaluate them, and report each "
        "arm's mAP with a 95%% confidence interval of the paired difference.",
    )
    p.add_argument(
        "--tip",
        default="all",
        metavar="TIP[,TIP]",
        help="loss-norm, init, decoder, a comma-separated list of them, or all (default)",
    )
    p.add_argument("--seeds", type=int, default=3, help="paired runs per arm (different seeds)")
    p.add_argument(
        "--lr-sweep",
        type=_float_list,
        metavar="LR1,LR2,...",
        help="train every arm at each of these learning rates; each arm's rate is chosen on a selection "
        "split of the validation images and its mAP reported on a disjoint report split "
        "(default: the recipe's --lr only)",
    )
    p.add_argument(
        "--extra-inits",
        type=_csv_list,
        metavar="INIT,...",
        help="more --init schemes for the init tip (e.g. xavier,kaiming_fan_out), trained at the rate of its best arm",
    )
    add_train_options(p)

    p = sub.add_parser(
        "convert",
        help="turn a GluonCV .params file into an ssdkit checkpoint",
        description="Read a GluonCV SSD model file (MXNet .params, from the GluonCV model zoo or "
        "Gluon's save_parameters; no MXNet needed) and write an ssdkit checkpoint that "
        "`ssdkit eval`, `predict` and `train --pretrained` take.",
    )
    p.add_argument("params", help="the .params file (nothing is downloaded)")
    p.add_argument("--model", required=True, help="zoo name of the file's model, e.g. ssd_300_vgg16_atrous_voc")
    p.add_argument("--classes", type=_csv_list, help="comma-separated class names (*_custom models)")
    p.add_argument("--output", required=True, help="the checkpoint to write (.pt)")

    sub.add_parser("models", help="list the model zoo")
    return parser


def _cmd_train(args) -> int:
    started = time.time()  # --time-budget counts from here
    from ..engine.budget import START_KEY
    from ..engine.trainer import fit

    cfg = config_from_args(args)
    cfg.extra[START_KEY] = started
    result = fit(cfg)
    if result.rank != 0:  # under torchrun rank 0 reports
        return 0
    if result.stopped:
        print(f"stopped by {result.stopped}; run folder {result.output}")
        return 143  # 128 + SIGTERM: the run is not finished
    key = "voc07_map" if args.dataset != "coco" else "coco_ap"
    minutes = (time.time() - started) / 60
    print(
        f"done: final {key} {result.last_map:.4f} (best {result.best_map:.4f}) after {minutes:.1f} min; "
        f"run folder {result.output}"
    )
    return 0


def _pick(args, *names: str) -> dict:
    """The named options as keyword arguments."""
    return {name: getattr(args, name) for name in names}


def _cmd_eval(args) -> int:
    from ..engine.evaluation import evaluate_checkpoint

    names, values, table = evaluate_checkpoint(
        args.checkpoint,
        **_pick(
            args,
            "dataset",
            "data_root",
            "val_splits",
            "decoder",
            "batch_size",
            "device",
            "num_workers",
            "on_bad_sample",
        ),
        int8_calibration=args.int8,
    )
    if args.json:
        from ..metrics.report import metrics_to_dict

        print(json.dumps(metrics_to_dict(names, values), indent=2))
    else:
        print(table)
    return 0


def _cmd_predict(args) -> int:
    from ..engine.evaluation import predict_images

    out = predict_images(args.checkpoint, args.images, **_pick(args, "score_thresh", "output", "device", "onnx"))
    print(json.dumps(out, indent=2))
    failed = [entry for entry in out if "error" in entry]
    for entry in failed:
        print(f"ssdkit predict: {entry['image']}: {entry['error']}", file=sys.stderr)
    if failed:
        print(f"ssdkit predict: {len(failed)} of {len(out)} images could not be read", file=sys.stderr)
        return 1
    return 0


def _cmd_export(args) -> int:
    from ..engine.deploy import export_model

    if args.pretrained and not args.model:
        from ..engine.config import ConfigError

        raise ConfigError("--pretrained goes with --model (a checkpoint holds its own weights)")
    out = export_model(
        args.output, fmt=args.format, **_pick(args, "checkpoint", "model", "pretrained", "opset", "raw", "classes")
    )
    print(json.dumps(out, indent=2))
    return 0


def _cmd_ablate(args) -> int:
    from ..engine.ablate import run_ablation

    run_ablation(
        config_from_args(args),
        tip=args.tip,
        seeds=args.seeds,
        lr_sweep=args.lr_sweep,
        extra_inits=args.extra_inits or (),
    )
    return 0


def _cmd_convert(args) -> int:
    from ..engine.checkpoint import save_checkpoint
    from ..engine.config import ConfigError, TrainConfig
    from ..models import PRESETS, get_model

    if args.model not in PRESETS:
        raise ConfigError(f"unknown model {args.model!r}; choose one of: {', '.join(sorted(PRESETS))}")
    try:
        net = get_model(args.model, pretrained=args.params, classes=args.classes)
    except ValueError as err:  # WeightsError included: names the file and the first offending names
        raise ConfigError(str(err)) from None
    kind = args.model.rsplit("_", 1)[-1]
    dataset = {"voc": "voc", "coco": "coco"}.get(kind, "voc-folder")
    config = TrainConfig(
        model=args.model,
        dataset=dataset,
        data_shape=net.data_shape,
        classes=list(net.classes) if dataset == "voc-folder" else None,
    )
    save_checkpoint(
        args.output,
        {
            "model": net.state_dict(),
            "config": config.to_dict(),
            "classes": list(net.classes),
            "model_name": args.model,
            "data_shape": net.data_shape,
            "converted_from": os.path.basename(args.params),
        },
    )
    print(f"wrote {args.output}: {args.model}, {len(net.classes)} classes, from {args.params}")
    return 0


def _cmd_models(args) -> int:
    from ..models import list_models

    print("\n".join(list_models()))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    # DataLoader workers share the machine's cores with the training threads: OpenMP threads that spin while
    # waiting then slow every step many times over. Must be set before torch loads.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    from ..data.errors import BadSampleError
    from ..engine.ablate import StudyStopped
    from ..engine.config import ConfigError
    from ..engine.distributed import ProcessFailed

    handlers = {
        "train": _cmd_train,
        "eval": _cmd_eval,
        "predict": _cmd_predict,
        "export": _cmd_export,
        "ablate": _cmd_ablate,
        "convert": _cmd_convert,
        "models": _cmd_models,
    }
    try:
        return handlers[args.command](args)
    except ConfigError as err:
        print(f"ssdkit {args.command}: error: {err}", file=sys.stderr)
        return 2
    except BadSampleError as err:
        print(f"ssdkit {args.command}: bad sample, stopping (--on-bad-sample error): {err}", file=sys.stderr)
        return 2  # bad input, as every user error; the same whether the file is an image or an annotation
    except (FloatingPointError, ProcessFailed) as err:
        print(f"ssdkit {args.command}: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"ssdkit {args.command}: interrupted", file=sys.stderr)
        return 130
    except StudyStopped as err:
        print(f"ssdkit {args.command}: {err}", file=sys.stderr)
        return 143  # 128 + SIGTERM, as a stopped `ssdkit train`


if __name__ == "__main__":
    sys.exit(main())
