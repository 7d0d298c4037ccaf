"""Where and how a run computes: the device, CPU threads, seeds and the autocast dtype."""

from __future__ import annotations

import os
import random

import numpy as np
import torch

from ...models.presets import PRESETS
from ..config import ConfigError
from ..step import step_memory_format

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
]

# oneDNN's ISA names below AVX-512 (ONEDNN_MAX_CPU_ISA holds it to one of them)
_BELOW_AVX512 = ("SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2")


def select_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto``: CUDA when available (GPU ``local_rank`` of this machine), else the CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank % torch.cuda.device_count())
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ConfigError(f"--device {name!r} is not a device ({err})") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: CUDA is not available on this machine")
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank % torch.cuda.device_count())
    return device


def share_cpu_cores(device: torch.device, num_workers: int, procs: int = 1) -> int:
    """On CPU, give each of the ``procs`` training processes of this machine an equal share of the cores and leave
    one core to each DataLoader worker: intra-op threads = cores / procs - workers (at least 1), unless
    ``OMP_NUM_THREADS`` says otherwise (threads that compete with the workers for a core slow both down).
    Returns the thread count in use."""
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


def onednn_runs_avx512() -> bool:
    """Whether oneDNN's convolutions here use AVX-512 kernels: the CPU has AVX-512 and ``ONEDNN_MAX_CPU_ISA`` (or
    its old name ``DNNL_MAX_CPU_ISA``) does not hold oneDNN below it."""
    held = (os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or "").strip().upper()
    if held in _BELOW_AVX512:
        return False
    # a private PyTorch query; without it, assume AVX-512 (NHWC everywhere, as before the VGG exception)
    probe = getattr(torch.cpu, "_is_avx512_supported", None)
    return bool(probe()) if probe is not None else True


def run_memory_format(model: str | None, device: torch.device, amp_dtype: torch.dtype | None) -> torch.memory_format:
    """The memory format a run trains ``model`` in (:func:`..step.step_memory_format`): the model's preset asks for
    NCHW in float32 on CPUs whose oneDNN runs without AVX-512 (``ModelPreset.nchw_without_avx512``, the VGG models:
    their training step held to AVX2 takes 0.69-0.72x the NHWC time in NCHW, while the other models' steps are
    faster in NHWC there too; ``benchmarks/bench_train_step.py --other-layout``)."""
    preset = PRESETS.get(model or "")
    nchw = bool(preset and preset.nchw_without_avx512) and device.type == "cpu" and not onednn_runs_avx512()
    return step_memory_format(device, amp_dtype, nchw_fp32_cpu=nchw)


def synthetic_default_model(device: torch.device, amp: bool | None) -> str:
    """The model ``ssdkit train`` trains on the synthetic set when ``--model`` is not given: the tiny model with the
    64-channel stem where the run trains under autocast (native bfloat16, CUDA), the 48-channel one in float32.

    In float32 the narrow stem's step takes 0.72x the time (held to AVX2), so a 10-minute budget trains more images
    with it, which wins where few fit; where the whole recipe (nearly) fits, the wider stem learns more from each.
    Measured (default runs, three each, median): held to AVX2, 48 0.8911 against 64 0.8902 in 10 minutes, 0.8465 /
    0.8535 against 0.8332 / 0.8464 in 5 (two seeds); native bfloat16, 64 0.9043 against 48 0.8968
    (``docs/synthetic-recipe.md`` says which runs and budget versions these are).
    """
    return "ssd_tiny_synthetic" if amp_dtype_for(device, amp) is not None else "ssd_tiny48_synthetic"


def synthetic_default_dense_scale(device: torch.device, amp: bool | None, model: str | None = None) -> float:
    """``--synthetic-dense-scale`` when not given: 0.75 where the run trains a tiny model (``ssd_tiny*``, the ones
    this recipe was measured with; ``model`` None: the default) in float32 (the dense epochs draw 96 x 96 images for
    a 128 input), else 1 (under autocast; and for the VGG models, whose last layers need their full input).

    Held to AVX2 in float32 a 96 px dense epoch trains 1.53x the images per second of a 128 px one, and at the same
    cost the run learns more: 0.8652 / 0.8646 against 0.8521 / 0.8412 at two seeds, for the share of the recipe
    that a 5-minute budget fits (``benchmarks/results/dense-scale/summary.txt``). Under autocast the whole recipe
    (nearly) fits in the budget at full size, so smaller images would replace full-size ones instead of adding to
    them.
    """
    if amp_dtype_for(device, amp) is not None or not (model is None or model.startswith("ssd_tiny")):
        return 1.0
    return 0.75
