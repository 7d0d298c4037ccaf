"""Loading GluonCV's SSD300 ``.params`` file: MXNet/GluonCV's loader vs ssdkit's numpy reader, same run.

The file is ``ssd_300_vgg16_atrous_voc`` with the test fixture's random weights (105 MB, 78 arrays), rebuilt
by ``tools/make_model_fixtures.py``'s numpy writer and checked against the sha256 of the file Gluon saved.

Each measurement runs in a fresh process, which imports its libraries first, then resets its peak-RSS counter
(``/proc/self/clear_refs``) and measures two things:

- ``read``: the bare file reader, ``mx.nd.load(path)`` vs ``ssdkit.models.mxnet_params.read_mxnet_params(path)``;
- ``model``: building the model and loading the file, GluonCV ``get_model(..., pretrained_base=False)`` +
  ``load_parameters(path)`` vs ssdkit ``get_model(name, pretrained=path)`` (mapping and constant checks
  included).

Time is ``perf_counter`` around the call; memory is the peak RSS during the call above the RSS before it.
GluonCV runs under its own virtualenv (``--gluoncv-python``). The two sides alternate, ``--repeats`` times each,
and the medians with min-max ranges are printed. Both sides use 2 threads.

    python benchmarks/bench_load_params.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _gluoncv_side import DEFAULT_PYTHON as DEFAULT_GLUONCV_PYTHON  # noqa: E402
from _gluoncv_side import gluoncv_env

MODEL = "ssd_300_vgg16_atrous_voc"

CHILD = r"""
import gc, json, sys, time, warnings
warnings.filterwarnings("ignore")
side, path, model = sys.argv[1:4]

def rss_kb(field):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field))

def measure(fn):
    gc.collect()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak RSS (VmHWM) to the current RSS
    before = rss_kb("VmRSS:")
    t0 = time.perf_counter()
    out = fn()
    sec = time.perf_counter() - t0
    peak = rss_kb("VmHWM:") - before
    del out
    return sec, peak / 1024.0

if side == "gluoncv":
    import mxnet as mx
    from gluoncv import model_zoo
    def full():
        net = model_zoo.get_model(model, pretrained=False, pretrained_base=False)
        net.load_parameters(path)
        return net
    read = lambda: mx.nd.load(path)
else:
    import torch
    torch.set_num_threads(2)
    from ssdkit.models import get_model
    from ssdkit.models.mxnet_params import read_mxnet_params
    full = lambda: get_model(model, pretrained=path)
    read = lambda: read_mxnet_params(path)
r = measure(read)
m = measure(full)
print(json.dumps({"read_s": r[0], "read_mb": r[1], "model_s": m[0], "model_mb": m[1]}))
"""


def _tool():
    spec = importlib.util.spec_from_file_location(
        "_model_fixture_generators", os.path.join(ROOT, "tools", "make_model_fixtures.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def rebuild_file(folder: str) -> str:
    """The SSD300 fixture file, byte for byte what Gluon saved (checked by its sha256)."""
    from ssdkit.models import PRESETS

    gen = _tool()
    data = os.path.join(ROOT, "tests", "data")
    with open(os.path.join(data, "model_gluon_names.json")) as f:
        listing = json.load(f)["names"][MODEL]
    with np.load(os.path.join(data, "model_outputs.npz")) as out:
        factors, digest = json.loads(str(out[f"{MODEL}/factors"])), str(out[f"{MODEL}/sha256"])
    arrays = gen.random_gluon_params(
        listing, gen.FIXTURE_MODELS[MODEL][0], gen.gluon_constants(listing, PRESETS[MODEL].anchor_spec), factors
    )
    path = os.path.join(folder, f"{MODEL}.params")
    gen.write_params(path, arrays)
    if gen.sha256_of(path) != digest:
        raise SystemExit("rebuilt file differs from Gluon's (fixture out of date?)")
    return path


def run_child(python: str, side: str, path: str) -> dict:
    env = gluoncv_env(2, PYTHONPATH=os.path.join(ROOT, "src"))
    proc = subprocess.run(
        [python, "-c", CHILD, side, path, MODEL], capture_output=True, text=True, env=env, timeout=600
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{side} child failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--gluoncv-python", default=DEFAULT_GLUONCV_PYTHON)
    args = parser.parse_args(argv)
    results: dict[str, list[dict]] = {"gluoncv": [], "ssdkit": []}
    with tempfile.TemporaryDirectory() as tmp:
        path = rebuild_file(tmp)
        print(
            f"file: {MODEL}.params, {os.path.getsize(path) / 2**20:.1f} MiB; repeats {args.repeats}, "
            f"sides alternating, a fresh process per measurement",
            flush=True,
        )
        for i in range(args.repeats):
            order = ("gluoncv", "ssdkit") if i % 2 == 0 else ("ssdkit", "gluoncv")
            for side in order:
                python = args.gluoncv_python if side == "gluoncv" else sys.executable
                results[side].append(run_child(python, side, path))
                print(f"  repeat {i + 1} {side}: {json.dumps(results[side][-1])}", flush=True)
    print(f"{'':34s} {'GluonCV (mxnet 1.9.1)':>26s} {'ssdkit':>26s}")
    for key, label, unit in (
        ("read_s", "read the file: time", "s"),
        ("read_mb", "read the file: peak RSS", "MiB"),
        ("model_s", "build + load model: time", "s"),
        ("model_mb", "build + load model: peak RSS", "MiB"),
    ):
        cells = []
        for side in ("gluoncv", "ssdkit"):
            v = np.array([r[key] for r in results[side]])
            cells.append(f"{np.median(v):8.3f} {unit} ({v.min():.3f}-{v.max():.3f})")
        print(f"{label:34s} {cells[0]:>26s} {cells[1]:>26s}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
