"""Checkpoints: model, optimizer, scheduler, epoch, RNG states and config, written atomically.

Loaded with ``torch.load(..., weights_only=True)``: everything stored is tensors, numbers, strings, lists and dicts.

A checkpoint taken inside an epoch (``--checkpoint-steps``, SIGTERM) also holds ``progress``: the epoch, the steps
done in it and the epoch's running loss sums, and ``ranks``: every process's RNG state and its not yet reduced
loss window, so that a resumed run continues with exactly the batches, random numbers and logged losses of the
run left alone.
"""

from __future__ import annotations

import os
import random
import tempfile
from typing import Any

import numpy as np
import torch

from .step import match_state_layouts

__all__ = ["save_checkpoint", "load_checkpoint", "rng_state", "set_rng_state", "Checkpointer"]


def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    py_state = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "gauss": float(np_state[4]),
        },
        "python": {
            "version": py_state[0],
            "state": list(py_state[1]),
            "gauss": py_state[2] if py_state[2] is not None else None,
        },
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def save_checkpoint(path: str, payload: dict[str, Any]) -> None:
    """Write ``payload`` to ``path`` atomically (a temporary file in the same folder, then ``os.replace``)."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".pt", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        # mkstemp makes the file private (0600); a checkpoint is shared like the run's other files
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_checkpoint(path: str, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`; a clear error names the file when it is not one."""
    from .config import ConfigError

    if os.path.isdir(path):
        inside = [name for name in ("last.pt", "best.pt") if os.path.isfile(os.path.join(path, name))]
        example = os.path.join(path, inside[0] if inside else "last.pt")
        raise ConfigError(f"{path} is a folder; give the checkpoint file in it, e.g. {example}")
    if not os.path.isfile(path):
        raise ConfigError(f"checkpoint not found: {path}")
    if hint := _foreign_file_hint(path):
        raise ConfigError(f"{path} is not an ssdkit checkpoint: {hint}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:
        detail = (str(err).strip().splitlines() or [""])[0]
        raise ConfigError(f"{path} is not a readable ssdkit checkpoint ({type(err).__name__}: {detail})") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt or "config" not in ckpt:
        raise ConfigError(f"{path} is not an ssdkit training checkpoint (no 'model' and 'config' entries)")
    return ckpt


def _foreign_file_hint(path: str) -> str | None:
    """What to do instead when ``path`` is one of the other files ssdkit users hold: GluonCV's MXNet ``.params``,
    a TorchScript or ONNX export. Read from the file's first bytes (and the zip's member names), so the check
    neither loads the file nor trusts its extension alone."""
    import zipfile

    from ..models.mxnet_params import is_mxnet_params

    if is_mxnet_params(path):
        return "it is an MXNet .params file (GluonCV's weights); convert it first with `ssdkit convert`"
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, OSError):
            return None
        if any(name.split("/", 1)[-1].startswith(("code/", "constants.pkl")) for name in names):
            return "it is a TorchScript file (`ssdkit export --format torchscript`); load it with torch.jit.load"
        return None
    if path.lower().endswith(".onnx"):
        return "it looks like an ONNX file; run it with `ssdkit predict --onnx`"
    return None


class Checkpointer:
    """Saves and restores the state of one run into ``folder`` (rank 0 saves; every rank restores).

    ``meta`` is stored as is in every checkpoint (config, classes, model name, data shape); ``scaler`` and
    ``guard`` may be None.
    """

    def __init__(
        self,
        folder: str,
        net,
        optimizer,
        scheduler,
        scaler=None,
        guard=None,
        meta: dict[str, Any] | None = None,
        enabled: bool = True,
    ):
        self.folder = folder
        self.net, self.optimizer, self.scheduler, self.scaler, self.guard = net, optimizer, scheduler, scaler, guard
        self.meta = dict(meta or {})
        self.enabled = enabled

    def path(self, name: str) -> str:
        return os.path.join(self.folder, name)

    def save(
        self,
        name: str,
        epoch_done: int,
        best: float,
        progress: dict[str, Any] | None = None,
        ranks: list[dict[str, Any]] | None = None,
        bad_samples: list | None = None,
    ) -> str | None:
        """Write ``name`` atomically; ``epoch_done`` is the last finished epoch (0-based, -1 for none)."""
        if not self.enabled:
            return None
        payload = {
            "model": self.net.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "epoch": epoch_done,
            "best_map": best,
            "rng": rng_state(),
            "bad_samples": [list(e) for e in bad_samples or ()],
            **self.meta,
        }
        if progress is not None:
            payload["progress"] = progress
        if ranks is not None:
            payload["ranks"] = ranks
        path = self.path(name)
        save_checkpoint(path, payload)
        return path

    def restore(self, ckpt: dict[str, Any], rank: int = 0) -> dict[str, Any]:
        """Load ``ckpt`` into the run's objects. Returns ``start_epoch``, ``best``, ``progress`` (None at an epoch
        boundary), ``rank_state`` (this rank's saved RNG state and loss window, or None) and ``bad_samples``."""
        self.net.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        match_state_layouts(self.optimizer)
        self.scheduler.load_state_dict(ckpt["scheduler"])
        if self.scaler is not None and ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        ranks = ckpt.get("ranks")
        rank_state = ranks[rank] if ranks and rank < len(ranks) else None
        if self.guard is not None and rank_state and rank_state.get("guard"):
            self.guard.load_state_dict(rank_state["guard"])
        set_rng_state(rank_state["rng"] if rank_state else ckpt["rng"])
        progress = ckpt.get("progress")
        return {
            "start_epoch": int(progress["epoch"]) if progress else int(ckpt["epoch"]) + 1,
            "best": float(ckpt.get("best_map", -1.0)),
            "progress": progress,
            "rank_state": rank_state,
            "bad_samples": [tuple(e) for e in ckpt.get("bad_samples", ())],
        }
