"""Detection post-processing speed: ssdkit's PostProcessor (per-class and argmax) vs GluonCV, side by side.

Inputs: raw outputs shaped like ssd_300_vgg16_atrous_voc's for a batch of 32 (8732 anchors, 21 classes), made
by the synthetic generator of ``tools/reference_inputs.py`` (the one behind the parity fixture):
background-dominated logits plus candidate anchors around a few random objects and scattered low-score noise,
so that 120 to 2100 (anchor, class) pairs per image score above 0.01, as a trained detector gives. (A
random-init network is not used: its near-uniform softmax puts all 174k pairs above 0.01.)

- ssdkit: ``PostProcessor(20, decoder="per_class" | "argmax")`` with GluonCV's defaults (NMS 0.45, top 400,
  keep 100).
- GluonCV (``$SSDKIT_GLUONCV_PYTHON`` or the repository's ``.venv-gluoncv``): SSD's inference branch (softmax,
  MultiPerClassDecoder or MultiClassDecoder, box decode, class-major concat, ``contrib.box_nms``, slice 100) as a
  HybridBlock, run both imperatively and hybridized (static_alloc), in a subprocess on the same inputs; the faster
  of the two is compared.

Every round times each implementation once (interleaved), so background load slows all columns alike.
Prints medians and the ratios per_class / argmax (goal <= 1.5) and GluonCV / ssdkit (goal > 1).

    python benchmarks/bench_postprocess.py [--repeats 15] [--batch 32]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import tempfile

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from _gluoncv_side import DEFAULT_PYTHON as DEFAULT_GLUONCV_PYTHON  # noqa: E402
from _gluoncv_side import GluonCVServer, interleaved_medians  # noqa: E402

FEATURE_SHAPES_300 = [(38, 38), (19, 19), (10, 10), (5, 5), (3, 3), (1, 1)]


def _generators():
    path = os.path.join(HERE, "..", "tools", "reference_inputs.py")
    spec = importlib.util.spec_from_file_location("_core_fixture_generators", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=15, help="rounds; each times every implementation once")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--gluoncv-python", default=DEFAULT_GLUONCV_PYTHON)
    args = parser.parse_args(argv)
    torch.set_num_threads(2)

    from ssdkit.anchors import ssd_anchors
    from ssdkit.models import PRESETS
    from ssdkit.postprocess import PostProcessor

    gen = _generators()
    anchors = ssd_anchors(PRESETS["ssd_300_vgg16_atrous_voc"].anchor_spec, FEATURE_SHAPES_300)  # [1, A, 4]
    cls_np, box_np = gen.postprocess_inputs(args.seed, anchors[0].numpy(), batch=args.batch)
    cls_preds, box_preds = torch.from_numpy(cls_np), torch.from_numpy(box_np)
    probs = torch.softmax(cls_preds, -1)[..., 1:]
    per_image = (probs > 0.01).sum(dim=(1, 2))
    print(
        f"inputs: synthetic logits, batch {args.batch} x {anchors.shape[1]} anchors x 21 classes; candidates "
        f"above 0.01 per image: min {int(per_image.min())}, median {int(per_image.median())}, "
        f"max {int(per_image.max())}; torch threads {torch.get_num_threads()}"
    )

    per_class = PostProcessor(20, decoder="per_class")
    argmax = PostProcessor(20, decoder="argmax")
    jobs = {
        "ssdkit per_class": lambda: per_class(cls_preds, box_preds, anchors),
        "ssdkit argmax": lambda: argmax(cls_preds, box_preds, anchors),
    }
    server = None
    with tempfile.TemporaryDirectory() as tmp:
        if os.path.exists(args.gluoncv_python):
            path = os.path.join(tmp, "postprocess_inputs.npz")
            np.savez(path, cls_preds=cls_np, box_preds=box_np, anchors_cxcywh=anchors[0].numpy())
            server = GluonCVServer(args.gluoncv_python, "postprocess", path)
            for name in ("per_class", "per_class_hybrid", "argmax", "argmax_hybrid"):
                jobs[f"GluonCV {name}"] = server.job(name)
        else:
            print(f"GluonCV venv not found at {args.gluoncv_python}: skipping the GluonCV column")
        try:
            results = interleaved_medians(jobs, args.repeats)
        finally:
            if server is not None:
                server.close()

    print(f"\n{'implementation':<28}{'median ms':>12}")
    for name, sec in results.items():
        print(f"{name:<28}{sec * 1e3:>12.2f}")
    print("\nratios")
    r = results["ssdkit per_class"] / results["ssdkit argmax"]
    print(f"  ssdkit per_class / argmax:    {r:6.2f}x   goal <= 1.5")
    if server is not None:
        for dec in ("per_class", "argmax"):
            best = min(results[f"GluonCV {dec}"], results[f"GluonCV {dec}_hybrid"])
            print(
                f"  GluonCV / ssdkit ({dec + '):':<11} {best / results[f'ssdkit {dec}']:6.2f}x   goal > 1 "
                f"(GluonCV's faster of imperative / hybridized)"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
