"""Data-parallel training in several processes: ``--procs N`` on one machine, or ``torchrun`` on one or many.

:func:`launch` runs ``fn(cfg, say, rank, world)`` in every process of the run, inside a process group (gloo on the
CPU, NCCL with one GPU per process on CUDA), and returns rank 0's result:

* under ``torchrun`` (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT`` in the
  environment) this process joins from those variables, as ``env://`` does, as the rank torchrun gave it;
* with ``cfg.procs > 1`` it starts ``N - 1`` child processes and runs rank 0 in the calling process, so the
  caller keeps its console messages, its return value and its exceptions; a child that fails reports its error
  through a queue, and rank 0 raises it with the child's message; a child that dies without a word (killed from
  outside: SIGKILL, the out-of-memory killer) is raised as how it died, with the run's last checkpoint;
* otherwise it calls ``fn`` directly (rank 0 of 1).

Gradients are averaged by ``DistributedDataParallel``; the loss's batch-wise normalization sums the positives of
all processes (:func:`ssdkit.loss.global_positive_count`), as GluonCV does across devices.
"""

from __future__ import annotations

import datetime
import inspect
import logging
import os
import signal
import socket
import threading
import time
import traceback
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.distributed as dist

__all__ = [
    "wrap_ddp",
    "launch",
    "run_in_processes",
    "torchrun_env",
    "is_distributed",
    "world_size",
    "all_reduce_sum",
    "gather_bad_samples",
    "gather_objects",
    "broadcast_object",
    "ProcessFailed",
    "TorchrunEnv",
]

# long enough for rank 0 to evaluate a large validation set while the others wait at their next collective
_TIMEOUT = datetime.timedelta(hours=6)
# the store key each child of ``--procs`` adds 1 to once it reaches rank 0's store
_JOINED = "ssdkit/joined"


class ProcessFailed(RuntimeError):
    """A training process other than rank 0 failed; the message is the child's (its traceback: ``child_traceback``)."""

    def __init__(self, message: str, child_traceback: str = ""):
        super().__init__(message)
        self.child_traceback = child_traceback


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum of ``t`` over all processes (``t`` itself when not distributed)."""
    if is_distributed():
        t = t.clone()
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank (a collective); ``[obj]`` when not distributed."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (a collective); ``obj`` itself when not distributed."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


@dataclass(frozen=True)
class TorchrunEnv:
    rank: int
    world: int
    local_rank: int
    local_world: int


def torchrun_env() -> TorchrunEnv | None:
    """The rank of this process when ``torchrun`` (or another launcher with its variables) started it."""
    env = os.environ
    if not all(k in env for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")):
        return None
    world = int(env["WORLD_SIZE"])
    return TorchrunEnv(
        rank=int(env["RANK"]),
        world=world,
        local_rank=int(env.get("LOCAL_RANK", 0)),
        local_world=int(env.get("LOCAL_WORLD_SIZE", world)),
    )


def wrap_ddp(net: torch.nn.Module, device: torch.device) -> torch.nn.parallel.DistributedDataParallel:
    """``net`` in DistributedDataParallel: every rank starts from rank 0's weights and buffers (broadcast here).

    Buffers are not broadcast again before each forward: in training mode BatchNorm normalizes with the batch's
    own statistics, so the running statistics of ranks other than 0 are never used (rank 0 evaluates and saves),
    as GluonCV keeps one copy per device; and the per-forward broadcast over NCCL failed on the VGG models'
    channels-last input-scale buffer ``Tensor[1, 3, 1, 1]`` ("refer to a single memory location", torch 2.11).
    """
    ddp = torch.nn.parallel.DistributedDataParallel
    # newer PyTorch turns off the per-forward broadcast with `forward_sync_buffers` and deprecates
    # `broadcast_buffers` (a FutureWarning in every run's log); the new switch also keeps the broadcast of the
    # buffers at construction, which `broadcast_buffers=False` (older PyTorch) leaves out
    no_forward_sync = (
        {"forward_sync_buffers": False}
        if "forward_sync_buffers" in inspect.signature(ddp.__init__).parameters
        else {"broadcast_buffers": False}
    )
    return ddp(net, device_ids=[device] if device.type == "cuda" else None, **no_forward_sync)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env_store(rank: int, world: int) -> dist.Store:
    """The store of ``env://`` (``MASTER_ADDR:MASTER_PORT``; torchrun's agent hosts it, else rank 0), with the keys
    of each torchrun restart under their own prefix: torchrun keeps one store across restarts, and a restarted
    rank could otherwise read a dead rank's address left by the previous attempt."""
    agent = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    store = dist.TCPStore(
        os.environ["MASTER_ADDR"],
        int(os.environ["MASTER_PORT"]),
        world,
        is_master=not agent and rank == 0,
        timeout=_TIMEOUT,
        multi_tenant=True,
    )
    return dist.PrefixStore(f"ssdkit/attempt-{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}", store)


def _init(rank: int, world: int, local_rank: int, store: dist.Store, device_type: str) -> None:
    backend = "nccl" if device_type == "cuda" else "gloo"
    if device_type == "cuda":
        torch.cuda.set_device(local_rank % max(1, torch.cuda.device_count()))
    dist.init_process_group(backend, store=store, rank=rank, world_size=world, timeout=_TIMEOUT)


def _exit_with_parent(parent: int) -> None:
    """A child of a killed rank 0 (SIGKILL, a lost machine) would wait in its next collective for hours: end it."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="ssdkit-parent-watch").start()


def _quiet_data_warnings() -> None:
    """Every rank builds the same data sets and meets the same bad files; rank 0 alone warns about them, and
    :func:`gather_bad_samples` brings what the others met into its summary at the end."""
    logging.getLogger("ssdkit.data").setLevel(logging.ERROR)


def _child(
    fn, cfg_dict: dict[str, Any], rank: int, world: int, port: int, device_type: str, errors, parent: int
) -> None:
    from .config import TrainConfig

    _exit_with_parent(parent)
    try:
        store = dist.TCPStore("127.0.0.1", port, world, is_master=False, timeout=_TIMEOUT)
        store.add(_JOINED, 1)  # rank 0 waits for this while it watches that this process is alive
        _init(rank, world, rank, store, device_type)
        _quiet_data_warnings()
        try:
            fn(TrainConfig.from_dict(cfg_dict), lambda message: None, rank, world)
        finally:
            dist.destroy_process_group()
    except KeyboardInterrupt:
        os._exit(130)  # rank 0 tells the user; no traceback from every process
    except BaseException as err:  # noqa: BLE001 - every failure must reach rank 0
        errors.put((rank, f"{type(err).__name__}: {err}", traceback.format_exc()))
        os._exit(1)


def run_in_processes(fn: Callable, cfg, say: Callable[[str], None], device_type: str = "cpu"):
    """Run ``fn(cfg, say, rank, world)`` in ``cfg.procs`` processes; returns rank 0's result."""
    import torch.multiprocessing as mp

    world = int(cfg.procs)
    port = _free_port()
    # spawn, not fork: a forked child hangs in its first OpenMP region with more than one thread once the parent
    # has used OpenMP, and CUDA cannot be forked. A script that calls fit() with
    # procs > 1 needs the usual ``if __name__ == "__main__":`` guard.
    ctx = mp.get_context("spawn")
    errors = ctx.SimpleQueue()
    children = [
        ctx.Process(
            target=_child, args=(fn, cfg.to_dict(), rank, world, port, device_type, errors, os.getpid()), daemon=False
        )
        for rank in range(1, world)
    ]  # may start DataLoader workers
    # rank 0 hosts the store but does not wait in it for the children (``wait_for_workers``): one that dies before
    # it connects would keep rank 0 there until the timeout, hours; _await_children watches them instead
    store = dist.TCPStore("127.0.0.1", port, world, is_master=True, timeout=_TIMEOUT, wait_for_workers=False)
    for p in children:
        p.start()
    output = getattr(cfg, "output", None)
    finished = False
    try:
        _await_children(store, children, errors, output)
        try:
            _init(0, world, 0, store, device_type)
            result = fn(cfg, say, 0, world)
            finished = True
            return result
        except RuntimeError as err:
            # a collective that failed because a child died (gloo notices a closed connection at once): raise the
            # child's own error, or how it died, instead
            failure = _child_failure(children, errors, output, wait=10)
            if failure is not None:
                raise failure from err
            raise
        finally:
            if is_distributed():
                dist.destroy_process_group()
    finally:
        for p in children:  # after a failure or Ctrl-C of rank 0 the others cannot go on: stop them
            if not _exited(p, 60 if finished else 2):
                p.terminate()  # SIGTERM asks a training child to stop at its next step; a child blocked in a
                if not _exited(p, 10):  # collective cannot, so it is killed
                    p.kill()
                    p.join()


def _await_children(store: dist.Store, children: list, errors, output: str | None) -> None:
    """Wait until every child has reached the store; raise how one failed if it ends first (a child that cannot
    start, or is killed while it imports). The children join the group's rendezvous right after this."""
    deadline = time.monotonic() + _TIMEOUT.total_seconds()
    while store.add(_JOINED, 0) < len(children):
        if any(p.exitcode is not None for p in children):
            failure = _child_failure(children, errors, output, wait=0)
            if failure is not None:
                raise failure
        if time.monotonic() > deadline:
            raise ProcessFailed(f"the training processes did not start within {_TIMEOUT}")
        time.sleep(0.05)


def _child_failure(children: list, errors, output: str | None, wait: float) -> ProcessFailed | None:
    """What ended the run on a child's side, after up to ``wait`` seconds for the children to end: a child killed
    by a signal (its peers' reports are then only "connection closed"), else the first error a child reported,
    else a child that exited with an error code; ``None`` when every child is still running or ended well."""
    deadline = time.monotonic() + wait
    while any(p.exitcode is None for p in children) and time.monotonic() < deadline:
        if any(p.exitcode is not None and p.exitcode < 0 for p in children):
            break  # the cause is known; the others may be in the middle of a step
        time.sleep(0.05)
    codes = [(rank, p.exitcode) for rank, p in enumerate(children, start=1) if p.exitcode]
    killed = [(rank, code) for rank, code in codes if code < 0]
    if killed:
        rank, code = killed[0]
        return ProcessFailed(f"training process {rank} died ({_signal_name(-code)}){_resume_hint(output)}")
    if not errors.empty():
        rank, message, child_traceback = errors.get()
        return ProcessFailed(f"training process {rank} failed: {message}", child_traceback)
    if codes:
        rank, code = codes[0]
        return ProcessFailed(f"training process {rank} exited with code {code}{_resume_hint(output)}")
    return None


def _signal_name(number: int) -> str:
    try:
        return f"signal {number}: {signal.Signals(number).name}"
    except ValueError:
        return f"signal {number}"


def _resume_hint(output: str | None) -> str:
    """Where a run killed from outside can continue from (a child's own error would only recur on resume)."""
    last = os.path.join(output, "last.pt") if output else ""
    if not last or not os.path.isfile(last):
        return ""
    return f"; the last checkpoint is {last} (continue with --resume auto or --resume <that file>)"


def _exited(process, seconds: float) -> bool:
    """Whether ``process`` ends within ``seconds``, polled without blocking (``join(timeout)`` can block in
    ``waitpid`` once the child's sentinel pipe is readable while it still runs)."""
    deadline = time.monotonic() + seconds
    while process.is_alive():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def launch(fn: Callable, cfg, say: Callable[[str], None], device_type: str = "cpu"):
    """Run ``fn(cfg, say, rank, world)`` in every process of the run (see the module docstring)."""
    env = torchrun_env()
    if env is not None:
        _init(env.rank, env.world, env.local_rank, _env_store(env.rank, env.world), device_type)
        if env.rank:
            _quiet_data_warnings()
        try:
            return fn(cfg, say if env.rank == 0 else (lambda message: None), env.rank, env.world)
        finally:
            dist.destroy_process_group()
    if cfg.procs > 1:
        return run_in_processes(fn, cfg, say, device_type)
    return fn(cfg, say, 0, 1)


def gather_bad_samples(log) -> None:
    """Merge every rank's skipped-sample records into rank 0's ``log`` (a collective: all ranks call it)."""
    if not is_distributed():
        return
    entries = list(log.entries) if dist.get_rank() else []
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, entries)
    if dist.get_rank() == 0:
        for part in gathered[1:]:
            log.extend(part or [])
