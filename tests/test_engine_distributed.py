"""Data-parallel training in several processes (engine/distributed.py, ``--procs``) on the CPU with gloo."""

from __future__ import annotations

import datetime
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest
import torch
import torch.distributed as dist
from torch import nn

from ssdkit.data.errors import BadSampleLog
from ssdkit.engine import builders, distributed
from ssdkit.engine.config import ConfigError, TrainConfig, resolve_config
from ssdkit.engine.distributed import ProcessFailed, gather_bad_samples, run_in_processes
from ssdkit.engine.trainer import fit, train_one_epoch
from ssdkit.loss import SSDMultiBoxLoss

from conftest import TINY_TRAIN, run_metrics, same_weights, tiny_env

NUM_CLASSES, BATCH = 3, 8


class _GridDetector(nn.Module):
    """No batch norm, so one step on the whole batch and the same step split over processes must agree."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 2 * (NUM_CLASSES + 1 + 4), 4, 4)

    def forward(self, x):
        y = self.conv(x).permute(0, 2, 3, 1).reshape(x.shape[0], -1, NUM_CLASSES + 1 + 4)
        return y[..., : NUM_CLASSES + 1], y[..., NUM_CLASSES + 1 :], None


def _batch(lo: int, hi: int) -> dict:
    g = torch.Generator().manual_seed(7)
    images = torch.randn(BATCH, 3, 16, 16, generator=g)
    cls_targets = torch.randint(0, NUM_CLASSES + 1, (BATCH, 32), generator=g)
    cls_targets[torch.rand(BATCH, 32, generator=g) < 0.6] = 0
    cls_targets[2] = 0  # an image without positives
    box_targets = torch.randn(BATCH, 32, 4, generator=g)
    return {"images": images[lo:hi], "cls_targets": cls_targets[lo:hi], "box_targets": box_targets[lo:hi]}


def _one_step(cfg: TrainConfig, say, rank: int, world: int):
    torch.manual_seed(0)
    net = _GridDetector()
    model = nn.parallel.DistributedDataParallel(net) if world > 1 else net
    optimizer = torch.optim.SGD(net.parameters(), lr=0.5)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: 1.0)
    share = BATCH // world
    stats = train_one_epoch(
        model,
        [_batch(rank * share, (rank + 1) * share)],
        SSDMultiBoxLoss(normalization=cfg.loss_norm),
        optimizer,
        scheduler,
        torch.device("cpu"),
        0,
        log_interval=1,
        progress=False,
    )
    return [p.detach().clone() for p in net.parameters()], stats


@pytest.mark.parametrize("loss_norm", ["batch", "sample"])
def test_a_step_in_two_processes_equals_the_step_on_the_whole_batch(loss_norm):
    cfg = TrainConfig(procs=2, loss_norm=loss_norm)
    single, single_stats = _one_step(cfg, None, 0, 1)
    split, split_stats = run_in_processes(_one_step, cfg, lambda m: None)
    for a, b in zip(single, split):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)
    # the logged loss is that of the whole batch on every rank
    assert split_stats["loss"] == pytest.approx(single_stats["loss"], rel=1e-5)
    assert not dist.is_initialized()


def _epoch_with_deadline(cfg: TrainConfig, say, rank: int, world: int):
    """12 batches; the deadline passes at the second check (step 8) on rank ``cfg.extra["late"]`` only."""
    net = _GridDetector()
    model = nn.parallel.DistributedDataParallel(net) if world > 1 else net
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: 1.0)
    share = BATCH // world
    checks: list[int] = []

    def time_up() -> bool:
        checks.append(1)
        return rank == cfg.extra["late"] and len(checks) == 2

    stats = train_one_epoch(
        model,
        [_batch(rank * share, (rank + 1) * share)] * 12,
        SSDMultiBoxLoss(),
        optimizer,
        scheduler,
        torch.device("cpu"),
        0,
        log_interval=5,
        progress=False,
        time_up=time_up,
    )
    return stats, len(checks)


@pytest.mark.parametrize("world", [1, 2])
def test_a_deadline_on_any_process_ends_the_epoch_on_all_of_them(world):
    """A time budget's last epoch stops at its deadline: asked every TIME_CHECK_STEPS steps, and when one process
    finds it passed, every process ends the epoch after the same step (else the others would wait in the next
    step's all-reduce)."""
    from ssdkit.engine.trainer import TIME_CHECK_STEPS

    cfg = TrainConfig(procs=world, extra={"late": world - 1})
    if world == 1:
        stats, checks = _epoch_with_deadline(cfg, None, 0, 1)
    else:
        stats, checks = run_in_processes(_epoch_with_deadline, cfg, lambda m: None)
    assert TIME_CHECK_STEPS == 4 and checks == 2
    assert stats["cut"] == 1.0 and stats["steps"] == 8 and stats["images"] == 8 * BATCH
    assert math.isfinite(stats["loss"])


def _fail_in_child(cfg, say, rank, world):
    if rank == 1:
        raise ValueError("bad thing in rank 1")
    dist.barrier()


def test_a_failing_child_is_reported_by_rank_0_with_its_message():
    with pytest.raises(ProcessFailed, match="process 1 failed: ValueError: bad thing in rank 1") as caught:
        run_in_processes(_fail_in_child, TrainConfig(procs=2), lambda m: None)
    assert "_fail_in_child" in caught.value.child_traceback
    assert not dist.is_initialized()


def _killed_in_child(cfg, say, rank, world):
    """Rank 1 is killed (SIGKILL: what the out-of-memory killer sends) while rank 0 waits in a collective, or while
    rank 0 works alone (as it evaluates) and only then reaches one; the others wait in the collective."""
    kill = lambda: os.kill(os.getpid(), signal.SIGKILL)
    if rank == 1 and cfg.extra["when"] == "rank 0 waits":
        time.sleep(1.0)
        kill()
    if rank == 1 and cfg.extra["when"] == "rank 0 works alone":
        threading.Timer(0.5, kill).start()  # once it waits in the barrier
    if rank == 0 and cfg.extra["when"] == "rank 0 works alone":
        time.sleep(2.0)
    dist.barrier()


@pytest.mark.parametrize("when, procs", [("rank 0 waits", 2), ("rank 0 works alone", 2), ("rank 0 waits", 3)])
def test_a_child_killed_from_outside_is_reported_with_its_signal_and_the_last_checkpoint(when, procs, tmp_path):
    (tmp_path / "last.pt").write_bytes(b"")
    cfg = TrainConfig(procs=procs, output=str(tmp_path), extra={"when": when})
    # with 3 processes rank 2 reports "connection closed": the killed rank is the cause to name
    last = re.escape(str(tmp_path / "last.pt"))
    expected = (
        rf"^training process 1 died \(signal 9: SIGKILL\); the last checkpoint is {last} \(continue with --resume auto"
    )
    with pytest.raises(ProcessFailed, match=expected):
        run_in_processes(_killed_in_child, cfg, lambda m: None)
    assert not dist.is_initialized()


def _on_arrival(how: str) -> None:
    if how == "killed":
        os.kill(os.getpid(), signal.SIGKILL)
    elif how == "crashes":
        raise ImportError("the child cannot start")
    else:
        time.sleep(60)


class _EndsOnArrival:
    """A ``fn`` whose unpickling ends the child as it starts, before it joins the process group."""

    def __init__(self, how: str):
        self.how = how

    def __reduce__(self):
        return _on_arrival, (self.how,)


@pytest.mark.parametrize(
    "how, expected",
    [
        ("killed", r"^training process 1 died \(signal 9: SIGKILL\)$"),
        ("crashes", r"^training process 1 exited with code 1$"),
    ],
    ids=["killed", "crashes"],
)
def test_a_child_that_ends_before_it_joins_is_reported_at_once(how, expected, monkeypatch):
    # rank 0 used to wait for it in the rendezvous until the group's timeout (hours; shortened here)
    monkeypatch.setattr(distributed, "_TIMEOUT", datetime.timedelta(seconds=60))
    start = time.monotonic()
    with pytest.raises(ProcessFailed, match=expected):
        run_in_processes(_EndsOnArrival(how), TrainConfig(procs=2), lambda m: None)
    assert time.monotonic() - start < 50
    assert not dist.is_initialized()


def test_a_child_that_never_joins_is_reported_after_the_timeout(monkeypatch):
    monkeypatch.setattr(distributed, "_TIMEOUT", datetime.timedelta(seconds=2))
    with pytest.raises(ProcessFailed, match="did not start within 0:00:02"):
        run_in_processes(_EndsOnArrival("stuck"), TrainConfig(procs=2), lambda m: None)


def _skip_some(cfg, say, rank, world):
    log = BadSampleLog()
    log.add(f"img{rank}.jpg", "corrupt", warn=False)
    log.add("shared.jpg", "corrupt", warn=False)
    gather_bad_samples(log)
    return log.entries


def test_rank_0_reports_the_samples_every_rank_skipped():
    entries = run_in_processes(_skip_some, TrainConfig(procs=2), lambda m: None)
    assert entries == [("img0.jpg", "corrupt"), ("shared.jpg", "corrupt"), ("img1.jpg", "corrupt")]


def _warn_in_each_rank(cfg, say, rank, world):
    BadSampleLog().add(f"only-in-rank-{rank}.jpg", "corrupt")  # warns through the ssdkit.data logger
    gather_bad_samples(BadSampleLog())


def test_only_rank_0_warns_about_bad_samples(capfd, caplog):
    """Every rank meets the same bad files while it builds its data sets; one warning each, from rank 0."""
    with caplog.at_level("WARNING", logger="ssdkit.data"):
        run_in_processes(_warn_in_each_rank, TrainConfig(procs=2), lambda m: None)
    assert "only-in-rank-0.jpg" in caplog.text
    assert "only-in-rank-1.jpg" not in capfd.readouterr().err


def test_batch_size_must_split_evenly_over_the_processes():
    with pytest.raises(ConfigError, match="--batch-size 10 must be a multiple of --procs 4"):
        resolve_config(TrainConfig(procs=4, batch_size=10))
    with pytest.raises(ConfigError, match="--procs must be at least 1"):
        resolve_config(TrainConfig(procs=0))


def test_each_process_gets_its_share_of_the_cores(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    old = torch.get_num_threads()
    try:
        assert builders.share_cpu_cores(torch.device("cpu"), num_workers=1, procs=2) == 3
        assert builders.share_cpu_cores(torch.device("cpu"), num_workers=0, procs=8) == 1
        assert builders.share_cpu_cores(torch.device("cpu"), num_workers=2, procs=4) == 1
    finally:
        torch.set_num_threads(old)


def test_the_loader_of_each_rank_takes_its_own_half_of_the_epoch():
    cfg = resolve_config(TrainConfig(batch_size=4, procs=2, num_workers=0))
    data = [
        (torch.zeros(3, 8, 8), {"boxes": torch.tensor([[float(i), 0.0, i + 2.0, 2.0]]), "labels": torch.tensor([0])})
        for i in range(10)
    ]
    seen = []
    for rank in (0, 1):
        loader = builders.build_loader(data, cfg, train=False, shard=(rank, 2))
        # the evaluation deals the batches of one process (of the global batch size) in turn
        assert list(loader.batch_sampler) == [[[0, 1, 2, 3], [8, 9]], [[4, 5, 6, 7]]][rank]
        loader = builders.build_loader(
            data, cfg, train=True, anchors=torch.tensor([[0.0, 0.0, 4.0, 4.0]]), shard=(rank, 2)
        )
        assert loader.batch_sampler.batch_size == 2
        loader.batch_sampler.sampler.set_epoch(3)
        seen.append([int(b["gt_boxes"][k, 0, 0]) for b in loader for k in range(len(b["gt_boxes"]))])
    assert sorted(seen[0] + seen[1]) == list(range(10))


def test_fit_in_two_processes_writes_one_run_and_resumes(tmp_path):
    out = str(tmp_path / "run")
    cfg = TrainConfig(
        output=out,
        procs=2,
        batch_size=4,
        num_workers=0,
        epochs=1,
        synthetic_train_size=16,
        synthetic_val_size=8,
        progress=False,
        lr=0.01,
    )
    messages = []
    result = fit(cfg, say=messages.append)
    assert any("in 2 processes" in m for m in messages)
    assert result.epochs_run == 1 and len(result.history) == 1
    assert os.path.isfile(os.path.join(out, "last.pt")) and os.path.isfile(os.path.join(out, "metrics.csv"))
    more = fit(TrainConfig(resume=os.path.join(out, "last.pt"), epochs=2, progress=False), say=messages.append)
    assert more.epochs_run == 1 and [int(r["epoch"]) for r in more.history] == [1, 2]
    assert not dist.is_initialized()


# --- torchrun: the same worker as --procs, joined from the environment --------------------------------------------


def _port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(*args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", *args]


@pytest.fixture
def procs_run(tiny_run_procs2):
    return tiny_run_procs2


def test_torchrun_two_processes_on_one_node_train_as_procs_2(procs_run, tmp_path):
    out = tmp_path / "one-node"
    proc = subprocess.run(
        _torchrun("--standalone", "--nproc-per-node", "2", "-m", "ssdkit", *TINY_TRAIN, "--output", str(out)),
        env=tiny_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "in 2 processes" in proc.stdout and proc.stdout.count("done: final") == 1
    assert run_metrics(out) == run_metrics(procs_run)
    assert same_weights(out, procs_run)


def test_torchrun_two_nodes_of_one_process_train_as_procs_2(procs_run, tmp_path):
    out, port = tmp_path / "two-nodes", str(_port())
    nodes = [
        subprocess.Popen(
            _torchrun(
                "--nnodes",
                "2",
                "--node-rank",
                str(rank),
                "--nproc-per-node",
                "1",
                "--master-addr",
                "127.0.0.1",
                "--master-port",
                port,
                "-m",
                "ssdkit",
                *TINY_TRAIN,
                "--output",
                str(out),
            ),
            env=tiny_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in (0, 1)
    ]
    results = [node.communicate(timeout=600) for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], results[0][1][-3000:] + results[1][1][-3000:]
    assert run_metrics(out) == run_metrics(procs_run)
    assert same_weights(out, procs_run)


# The test's own wrapper around the CLI: rank 0 kills itself (SIGKILL) once, right after its third checkpoint.
_KILL_ONCE = """
import os, signal, sys
from ssdkit.cli import main
from ssdkit.engine.checkpoint import Checkpointer

marker, saved = os.environ["KILL_ONCE_MARKER"], []
original = Checkpointer.save

def save(self, name, *args, **kwargs):
    path = original(self, name, *args, **kwargs)
    saved.append(name)
    if len(saved) == 3 and not os.path.exists(marker):
        open(marker, "w").close()
        os.kill(os.getpid(), signal.SIGKILL)
    return path

Checkpointer.save = save
sys.exit(main(sys.argv[1:]))
"""


def test_resume_auto_under_torchrun_max_restarts_survives_a_killed_worker(procs_run, tmp_path):
    wrapper, marker, out = tmp_path / "kill_once.py", tmp_path / "killed", tmp_path / "restarted"
    wrapper.write_text(_KILL_ONCE)
    proc = subprocess.run(
        _torchrun(
            "--standalone",
            "--nproc-per-node",
            "2",
            "--max-restarts",
            "1",
            str(wrapper),
            *TINY_TRAIN,
            "--output",
            str(out),
            "--resume",
            "auto",
            "--checkpoint-steps",
            "1",
        ),
        env=dict(tiny_env(), KILL_ONCE_MARKER=str(marker)),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert marker.exists() and "resumed from" in proc.stdout
    assert run_metrics(out) == run_metrics(procs_run)
    assert same_weights(out, procs_run)
