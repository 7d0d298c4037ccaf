"""GluonCV side of the benchmarks: run under the GluonCV virtualenv by ``bench_targets.py``,
``bench_postprocess.py`` and ``bench_inference.py``, never imported by ssdkit.

The GluonCV virtualenv is found by :func:`default_gluoncv_python`: the ``SSDKIT_GLUONCV_PYTHON`` environment
variable (a python executable), else ``.venv-gluoncv/bin/python`` at the repository root, which
``tools/make_gluoncv_venv.sh`` creates.

Usage: ``<venv>/bin/python benchmarks/_gluoncv_side.py {targets|postprocess|inference} INPUTS.npz``, then one job name
per stdin line; each answer is one JSON line with the seconds that job took, measured here. The benchmark
interleaves these requests with its own timings, so a busy machine slows every column alike. GluonCV's threads
are limited to 2 (``OMP_NUM_THREADS``/``MXNET_*`` are set by the caller).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

ENV_VAR = "SSDKIT_GLUONCV_PYTHON"
REPO_VENV_PYTHON = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".venv-gluoncv", "bin", "python"
)


def gluoncv_env(threads: int, **extra: str) -> dict:
    """The environment of a GluonCV subprocess: ``threads`` OpenMP/MXNet/MKL threads, passive OpenMP waiting (an
    idle subprocess must not spin on the cores the benchmark is timing), plus ``extra``."""
    import os

    n = str(threads)
    return dict(
        os.environ,
        OMP_NUM_THREADS=n,
        MXNET_CPU_WORKER_NTHREADS=n,
        MKL_NUM_THREADS=n,
        OMP_WAIT_POLICY="PASSIVE",
        **extra,
    )


def default_gluoncv_python() -> str:
    """The GluonCV virtualenv's python: ``$SSDKIT_GLUONCV_PYTHON``, else the repository's ``.venv-gluoncv``."""
    return os.environ.get(ENV_VAR) or REPO_VENV_PYTHON


DEFAULT_PYTHON = default_gluoncv_python()


# ------------------------------------------------------------------ client side (the benchmark's python)


class GluonCVServer:
    """Start this file under the GluonCV venv on an inputs ``.npz``; ``job(name)()`` times one call there."""

    def __init__(self, python, what, inputs_path):
        import os
        import subprocess

        env = gluoncv_env(2, KMP_BLOCKTIME="0")
        self.proc = subprocess.Popen(
            [python, os.path.abspath(__file__), what, inputs_path],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        ready = self._read()
        self.names = ready["ready"]
        self.info = ready.get("info", {})

    def _read(self):
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"GluonCV subprocess ended:\n{self.proc.stderr.read()[-3000:]}")
        return json.loads(line)

    def job(self, name):
        """A callable that runs job ``name`` in the subprocess and returns the seconds measured there."""

        def call():
            self.proc.stdin.write(name + "\n")
            self.proc.stdin.flush()
            answer = self._read()
            if "error" in answer:
                raise RuntimeError(answer["error"])
            return answer["sec"]

        return call

    def close(self):
        if self.proc.poll() is None:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.flush()
            self.proc.wait(timeout=60)


def interleaved_medians(jobs, repeats, warmup=1, pause=0.2):
    """Median seconds of each job, timed round-robin (one call of each job per round).

    ``jobs``: name -> callable. A callable that returns a float reports its own time (remote jobs); otherwise the
    wall time of the call is used. ``pause`` seconds of sleep before each call let OpenMP threads of the
    previous job stop spinning.
    """
    import statistics

    def once(fn):
        time.sleep(pause)
        t0 = time.perf_counter()
        out = fn()
        return out if isinstance(out, float) else time.perf_counter() - t0

    for _ in range(warmup):
        for fn in jobs.values():
            once(fn)
    times = {name: [] for name in jobs}
    for _ in range(repeats):
        for name, fn in jobs.items():
            times[name].append(once(fn))
    return {name: statistics.median(t) for name, t in times.items()}


# ------------------------------------------------------------------ server side (the GluonCV venv)


def timed(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def target_jobs(z):
    """Callables by name: GluonCV ``SSDTargetGenerator`` without sampling and with 3:1 OHEM."""
    import mxnet as mx
    from gluoncv.model_zoo.ssd.target import SSDTargetGenerator

    anchors = mx.nd.array(z["anchors_cxcywh"][None])
    gt_boxes = mx.nd.array(z["gt_boxes"])
    gt_ids = mx.nd.array(z["gt_ids"])
    cls_preds = mx.nd.array(z["cls_preds"])

    def job(gen, preds):
        def call():
            for o in gen(anchors, preds, gt_boxes, gt_ids):
                o.wait_to_read()

        return call

    return {
        "naive": job(SSDTargetGenerator(negative_mining_ratio=-1), None),
        "ohem": job(SSDTargetGenerator(negative_mining_ratio=3), cls_preds),
    }


def _post_block(num_fg, decoder, stds=(0.1, 0.1, 0.2, 0.2), nms_thresh=0.45, nms_topk=400, post_nms=100):
    """GluonCV SSD's inference branch (``SSD.hybrid_forward`` after the heads) as a HybridBlock."""
    from gluoncv.nn.coder import MultiClassDecoder, MultiPerClassDecoder, NormalizedBoxCenterDecoder
    from mxnet import gluon

    class Post(gluon.HybridBlock):
        def __init__(self):
            super().__init__()
            with self.name_scope():
                self.bbox_decoder = NormalizedBoxCenterDecoder(stds)
                self.cls_decoder = (
                    MultiPerClassDecoder(num_fg + 1, thresh=0.01)
                    if decoder == "per_class"
                    else MultiClassDecoder(thresh=0.01)
                )

        def hybrid_forward(self, F, cls_preds, box_preds, anchors):
            bboxes = self.bbox_decoder(box_preds, anchors)
            cls_ids, scores = self.cls_decoder(F.softmax(cls_preds, axis=-1))
            if decoder == "per_class":
                result = F.concat(
                    *[
                        F.concat(
                            cls_ids.slice_axis(axis=-1, begin=i, end=i + 1),
                            scores.slice_axis(axis=-1, begin=i, end=i + 1),
                            bboxes,
                            dim=-1,
                        )
                        for i in range(num_fg)
                    ],
                    dim=1,
                )
            else:
                result = F.concat(cls_ids.expand_dims(-1), scores.expand_dims(-1), bboxes, dim=-1)
            result = F.contrib.box_nms(
                result,
                overlap_thresh=nms_thresh,
                topk=nms_topk,
                valid_thresh=0.01,
                id_index=0,
                score_index=1,
                coord_start=2,
                force_suppress=False,
            )
            result = result.slice_axis(axis=1, begin=0, end=post_nms)
            return (
                F.slice_axis(result, axis=2, begin=0, end=1),
                F.slice_axis(result, axis=2, begin=1, end=2),
                F.slice_axis(result, axis=2, begin=2, end=6),
            )

    return Post()


def postprocess_jobs(z):
    """Callables by name: SSD's inference branch, per-class and argmax, imperative and hybridized."""
    import mxnet as mx

    cls_preds = mx.nd.array(z["cls_preds"])
    box_preds = mx.nd.array(z["box_preds"])
    anchors = mx.nd.array(z["anchors_cxcywh"][None])
    num_fg = cls_preds.shape[-1] - 1
    jobs = {}
    for decoder in ("per_class", "argmax"):
        for hybrid in (False, True):
            block = _post_block(num_fg, decoder)
            if hybrid:
                block.hybridize(static_alloc=True, static_shape=True)

            def call(block=block):
                for o in block(cls_preds, box_preds, anchors):
                    o.wait_to_read()

            jobs[f"{decoder}{'_hybrid' if hybrid else ''}"] = call
    return jobs


def background_offset(logits, target):
    """The value to add to every background logit so that about ``target`` (anchor, class) pairs per image
    score above 0.01 after softmax, as a trained detector's do. ``logits``: ``[B, A, C+1]`` numpy."""
    lo, hi = -50.0, 50.0
    z = logits - logits.max(axis=-1, keepdims=True)
    for _ in range(60):
        mid = (lo + hi) / 2
        e = np.exp(z)
        e[..., 0] *= np.exp(mid)
        count = ((e[..., 1:] / e.sum(axis=-1, keepdims=True)) > 0.01).sum() / len(logits)
        lo, hi = (mid, hi) if count > target else (lo, mid)
    return (lo + hi) / 2


def inference_jobs(z):
    """Callables by name ``"<model>:<batch>"``: GluonCV's SSD, hybridized (static_alloc), random weights whose
    background logits are offset so that about ``candidates`` pairs per image pass 0.01 (see
    ``background_offset``)."""
    import warnings

    import mxnet as mx
    from gluoncv import model_zoo

    jobs, info = {}, {}
    for name, size in zip(z["models"].tolist(), z["sizes"].tolist()):
        mx.random.seed(0)
        net = model_zoo.get_model(name, pretrained=False, pretrained_base=False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            net.initialize()
        x = mx.nd.random.uniform(shape=(2, 3, size, size))
        feats = net.features(x)
        num_c1 = net.num_classes + 1
        logits = np.concatenate(
            [
                cp(f).transpose((0, 2, 3, 1)).reshape((2, -1, num_c1)).asnumpy()
                for f, cp in zip(feats, net.class_predictors)
            ],
            axis=1,
        )
        offset = background_offset(logits, float(z["candidates"]))
        for cp in net.class_predictors:
            bias = cp.predictor.bias
            arr = bias.data().asnumpy()
            arr[0::num_c1] += offset
            bias.set_data(mx.nd.array(arr))
        net.hybridize(static_alloc=True, static_shape=True)
        info[name] = round(offset, 3)
        for batch in z["batches"].tolist():
            xb = mx.nd.random.uniform(shape=(batch, 3, size, size))

            def call(net=net, xb=xb):
                for o in net(xb):
                    o.wait_to_read()

            jobs[f"{name}:{batch}"] = call
    return jobs, info


def main():
    """Serve timing requests: reads a job name per stdin line, answers one JSON line ``{"sec": ...}``."""
    parser = argparse.ArgumentParser()
    parser.add_argument("what", choices=("targets", "postprocess", "inference"))
    parser.add_argument("inputs")
    args = parser.parse_args()
    with np.load(args.inputs) as f:
        z = {k: f[k] for k in f.files}
    info = {}
    if args.what == "inference":
        jobs, info = inference_jobs(z)
    else:
        jobs = target_jobs(z) if args.what == "targets" else postprocess_jobs(z)
    for fn in jobs.values():  # warm-up (and hybridization)
        fn()
    print(json.dumps({"ready": sorted(jobs), "info": info}), flush=True)
    for line in sys.stdin:
        name = line.strip()
        if name == "quit":
            break
        if name not in jobs:
            print(json.dumps({"error": f"unknown job {name!r}"}), flush=True)
            continue
        print(json.dumps({"sec": timed(jobs[name])}), flush=True)


if __name__ == "__main__":
    main()
