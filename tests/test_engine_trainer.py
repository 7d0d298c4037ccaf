import csv
import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch

import ssdkit
from ssdkit.data.collate import TargetCollate
from ssdkit.data.synthetic import SyntheticShapes
from ssdkit.data.transforms import SSDValTransform
from ssdkit.engine.config import TrainConfig
from ssdkit.engine.trainer import fit

from conftest import TINY_TRAIN, run_metrics, same_weights, tensorboard_losses, tiny_env


def test_overfit_one_batch():
    torch.manual_seed(0)
    net = ssdkit.get_model("ssd_tiny_synthetic")
    ds = SyntheticShapes(4, seed=7, transform=SSDValTransform(128))
    with torch.no_grad():
        anchors = net.eval()(torch.zeros(1, 3, 128, 128))[2]
    batch = TargetCollate(anchors)([ds[i] for i in range(4)])
    loss_fn = ssdkit.SSDMultiBoxLoss()
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    net.train()
    first = None
    for _ in range(120):
        cls_preds, box_preds, _ = net(batch["images"])
        loss = loss_fn(cls_preds, box_preds, batch["cls_targets"], batch["box_targets"])[0].sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = loss.item() if first is None else first
    assert loss.item() < 0.05 * first and loss.item() < 1.0, (first, loss.item())


def _tiny_cfg(tmp_path, name, **kw):
    """A tiny run in one process: two processes (the synthetic default) are the subject of test_engine_distributed
    and of the killed-run tests below, and cost each run here a few seconds of start-up."""
    base = dict(
        procs=1,
        synthetic_train_size=32,
        synthetic_val_size=8,
        batch_size=16,
        epochs=2,
        val_interval=1,
        num_workers=0,
        progress=False,
        output=str(tmp_path / name),
        log_interval=1,
    )
    base.update(kw)
    return TrainConfig(**base)


def test_momentum_buffers_share_the_layout_of_their_weights(tmp_path):
    """CUDA's fused SGD takes weights, gradients and momentum buffers of one layout: the run puts the model in its
    step's memory format (channels-last) before the optimizer copies the weights' layout into the buffers."""
    from ssdkit.engine.builders import build_run, prepare_config

    cfg = _tiny_cfg(tmp_path, "layout", procs=1, device="cpu", optimizer="sgd")
    parts = build_run(prepare_config(cfg), 0, 1)
    convs = [p for p in parts.net.parameters() if p.dim() == 4]
    assert convs and all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)
    for p in parts.net.parameters():
        assert parts.optimizer.state[p]["momentum_buffer"].stride() == p.stride()


def test_a_model_that_asks_for_nchw_without_avx512_trains_in_it(tmp_path, monkeypatch):
    """VGG's preset asks for NCHW float32 steps where oneDNN runs without AVX-512: the weights, their momentum and
    the images of every step take that layout (a tiny model given the flag stands in for VGG here)."""
    import dataclasses

    from ssdkit.engine.builders import build_run, prepare_config, runtime
    from ssdkit.engine.trainer import train_parts_epoch
    from ssdkit.models.presets import PRESETS

    tiny = PRESETS["ssd_tiny48_synthetic"]
    monkeypatch.setitem(runtime.PRESETS, tiny.name, dataclasses.replace(tiny, nchw_without_avx512=True))
    monkeypatch.setattr(runtime, "onednn_runs_avx512", lambda: False)
    cfg = prepare_config(_tiny_cfg(tmp_path, "nchw", procs=1, device="cpu", amp=False, epochs=1, optimizer="sgd"))
    parts = build_run(cfg, 0, 1)
    assert parts.memory_format == torch.contiguous_format
    convs = [p for p in parts.net.parameters() if p.dim() == 4 and p.shape[-1] > 1]
    assert convs and all(p.is_contiguous() and not p.is_contiguous(memory_format=torch.channels_last) for p in convs)
    seen = []
    hook = parts.net.register_forward_pre_hook(lambda module, args: seen.append(args[0].is_contiguous()))
    parts.prepare_epoch(0)
    train_parts_epoch(parts, 0, log_interval=1)
    hook.remove()
    assert seen and all(seen)
    for p in parts.net.parameters():
        assert parts.optimizer.state[p]["momentum_buffer"].stride() == p.stride()
    monkeypatch.setattr(runtime, "onednn_runs_avx512", lambda: True)
    assert runtime.run_memory_format(tiny.name, torch.device("cpu"), None) == torch.channels_last


def test_resume_continues_exactly(tmp_path):
    """Stopped after an epoch and resumed, in one process (in two, the SIGTERM and SIGKILL tests below stop and
    resume a run inside an epoch)."""
    full = fit(_tiny_cfg(tmp_path, "full"), say=lambda m: None)

    def stop_after_first_epoch(message):
        if message.startswith("epoch 1/2"):
            raise KeyboardInterrupt  # as a user's Ctrl-C right after epoch 1

    with pytest.raises(KeyboardInterrupt):
        fit(_tiny_cfg(tmp_path, "part"), say=stop_after_first_epoch)
    assert os.path.exists(tmp_path / "part" / "last.pt")
    resumed = fit(_tiny_cfg(tmp_path, "part", resume=str(tmp_path / "part" / "last.pt")), say=lambda m: None)
    assert resumed.epochs_run == 1
    with open(tmp_path / "part" / "epochs.csv") as f:
        elapsed = [float(r["elapsed_s"]) for r in csv.DictReader(f)]
    assert len(elapsed) == 2 and 0 < elapsed[0] < elapsed[1]  # the resumed part's clock goes on from epoch 1's
    loss_full = [float(r["train_loss"]) for r in full.history]
    loss_resumed = [float(r["train_loss"]) for r in resumed.history]
    assert loss_full == loss_resumed  # epoch 1 from the first part, epoch 2 after the resume
    a = torch.load(tmp_path / "full" / "last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "part" / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    # resuming a finished run trains nothing and reports the run's last evaluation, not NaN
    said = []
    again = fit(_tiny_cfg(tmp_path, "part", resume="auto"), say=said.append)
    assert again.epochs_run == 0 and again.last_map == pytest.approx(resumed.last_map, abs=1e-6)
    assert any("finished all 2 epochs already: nothing to train" in m for m in said)
    assert not any("ignored" in m for m in said)
    # recipe options given with --resume do not change the run, and the run says so
    said.clear()
    saved_model = torch.load(tmp_path / "part" / "last.pt", weights_only=True)["config"]["model"]
    other = "ssd_tiny_synthetic" if saved_model == "ssd_tiny48_synthetic" else "ssd_tiny48_synthetic"
    fit(_tiny_cfg(tmp_path, "part", resume="auto", lr=0.5, model=other), say=said.append)
    notes = [m for m in said if "resuming keeps the checkpoint's recipe" in m]
    assert len(notes) == 1 and "--lr 0.5" in notes[0] and f"--model {other}" in notes[0]


def test_a_step_checkpoint_keeps_the_epoch_time_so_far(tmp_path, monkeypatch):
    """A run resumed inside an epoch counts the steps before the checkpoint with their time: a checkpoint that
    kept the images but not the seconds made the resumed epoch report several times its images/s."""
    from ssdkit.engine import trainer

    saved = []
    real_save = trainer._save

    def spy(parts, names, epoch_done, best, bad, state=None):
        if state is not None:
            saved.append(state.progress())
        return real_save(parts, names, epoch_done, best, bad, state)

    monkeypatch.setattr(trainer, "_save", spy)
    fit(_tiny_cfg(tmp_path, "steps", epochs=1, synthetic_train_size=64, checkpoint_steps=2), say=lambda m: None)
    assert [p["steps"] for p in saved] == [2]  # 4 steps of 16: a checkpoint after step 2 (not after the last)
    assert saved[0]["images"] == 32 and saved[0]["seconds"] > 0


def test_a_run_repeats_exactly_and_writes_its_folder(tmp_path):
    first = fit(_tiny_cfg(tmp_path, "run", epochs=1), say=lambda m: None)
    files = set(os.listdir(first.output))
    assert {
        "best.pt",
        "last.pt",
        "metrics.csv",
        "config.json",
        "splits.json",
        "loss.png",
        "map.png",
        "tensorboard",
    } <= files
    splits = json.load(open(os.path.join(first.output, "splits.json")))
    assert len(splits["train"]) == 32 and len(splits["val"]) == 8 and not set(splits["train"]) & set(splits["val"])
    epochs_csv = open(os.path.join(first.output, "epochs.csv")).read().splitlines()
    header, last = epochs_csv[0].split(","), epochs_csv[-1].split(",")
    assert last[header.index("voc07_map")] != "" and last[header.index("elapsed_s")] != ""  # the last epoch too
    again = fit(_tiny_cfg(tmp_path, "again", epochs=1), say=lambda m: None)
    assert run_metrics(first.output) == run_metrics(again.output)
    assert same_weights(first.output, again.output)
    other = fit(_tiny_cfg(tmp_path, "other", epochs=1, seed=5), say=lambda m: None)
    assert run_metrics(other.output) != run_metrics(first.output)  # the seed matters: the test can fail


def test_the_loss_gets_the_batches_positive_weights(tmp_path, monkeypatch):
    from ssdkit.loss import SSDMultiBoxLoss

    seen = []
    forward = SSDMultiBoxLoss.forward

    def recording(self, cls_preds, box_preds, cls_targets, box_targets, pos_weights=None):
        seen.append(None if pos_weights is None else (pos_weights.sum(1), (cls_targets > 0).sum(1)))
        return forward(self, cls_preds, box_preds, cls_targets, box_targets, pos_weights)

    monkeypatch.setattr(SSDMultiBoxLoss, "forward", recording)
    objects = fit(_tiny_cfg(tmp_path, "object", epochs=1), say=lambda m: None)
    saved = json.load(open(os.path.join(objects.output, "config.json")))
    assert saved["positive_weights"] == "object" and len(seen) == 2  # the tiny model's default
    assert all(s is not None and torch.allclose(s[0], s[1].float()) for s in seen)
    seen.clear()
    anchors = fit(_tiny_cfg(tmp_path, "anchor", epochs=1, positive_weights="anchor"), say=lambda m: None)
    assert seen == [None, None]
    assert run_metrics(objects.output) != run_metrics(anchors.output)


def test_amp_on_cpu_trains_with_bfloat16_and_the_loss_falls(tmp_path):
    res = fit(_tiny_cfg(tmp_path, "amp", epochs=3, amp=True, lr=0.02), say=lambda m: None)
    losses = [float(r["train_loss"]) for r in res.history]
    assert losses[2] < losses[0], losses
    plain = fit(_tiny_cfg(tmp_path, "fp32", epochs=1, amp=False, lr=0.02), say=lambda m: None)
    assert float(plain.history[0]["train_loss"]) != losses[0]  # autocast changed the arithmetic


@pytest.mark.parametrize("fresh", [True, False])
def test_synthetic_training_images_change_each_epoch_unless_disabled(tmp_path, monkeypatch, fresh):
    seen = []
    render = SyntheticShapes.render

    def spy(self, index, *args, **kwargs):
        if self.fresh_per_epoch or self.num_images == 32:  # the train split
            seen.append((self.epoch, tuple(self._key(index))))
        return render(self, index, *args, **kwargs)

    monkeypatch.setattr(SyntheticShapes, "render", spy)
    # one process: the spy sees every rendered image
    fit(_tiny_cfg(tmp_path, f"fresh{fresh}", synthetic_fresh=fresh, procs=1), say=lambda m: None)
    keys = {epoch: {key for e, key in seen if e == epoch} for epoch in (0, 1)}
    assert len(keys[0]) == len(keys[1]) == 32
    if fresh:
        assert keys[0].isdisjoint(keys[1]) and all(len(k) == 3 and k[2] == 1 for k in keys[1])
    else:  # the same 32 images in both epochs
        assert keys[0] == keys[1]


@pytest.fixture
def left_alone(tiny_run_procs2):
    return tiny_run_procs2


def _resumable(out, *extra):
    return [
        sys.executable,
        "-m",
        "ssdkit",
        *TINY_TRAIN,
        "--procs",
        "2",
        "--output",
        str(out),
        "--resume",
        "auto",
        *extra,
    ]


def _wait_for_checkpoints(proc, path, count: int, limit: float = 300) -> int:
    """Wait until ``path`` was written ``count`` times (as seen by polling) or ``proc`` ends; returns the count."""
    seen, last, deadline = 0, None, time.monotonic() + limit
    while proc.poll() is None and seen < count and time.monotonic() < deadline:
        stamp = os.stat(path).st_mtime_ns if os.path.exists(path) else None
        if stamp is not None and stamp != last:
            seen, last = seen + 1, stamp
        time.sleep(0.005)
    return seen


def test_sigkill_at_a_random_step_then_resume_ends_as_the_run_left_alone(left_alone, tmp_path):
    out = tmp_path / "killed"
    kill_after = random.randint(1, 6)  # checkpoints seen: a random step of the 8
    proc = subprocess.Popen(
        _resumable(out, "--checkpoint-steps", "1"),
        env=tiny_env(),
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _wait_for_checkpoints(proc, out / "last.pt", kill_after)
    os.killpg(proc.pid, signal.SIGKILL)  # every process of the run, as a machine that loses power
    proc.wait()
    resumed = subprocess.run(
        _resumable(out, "--checkpoint-steps", "1"), env=tiny_env(), capture_output=True, text=True, timeout=600
    )
    assert resumed.returncode == 0, resumed.stderr
    assert run_metrics(out) == run_metrics(left_alone), f"killed after {kill_after} checkpoints"
    assert same_weights(out, left_alone)


def test_sigterm_saves_the_step_and_exits_cleanly_then_resume_ends_as_the_run_left_alone(left_alone, tmp_path):
    out = tmp_path / "preempted"
    proc = subprocess.Popen(
        _resumable(out, "--checkpoint-steps", "1"),
        env=tiny_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _wait_for_checkpoints(proc, out / "last.pt", 2)
    proc.send_signal(signal.SIGTERM)  # to rank 0 only, as `kill PID`
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 143, (stdout, stderr)
    assert "SIGTERM: stopped" in stdout and "Traceback" not in stderr
    assert "stopped by SIGTERM" in stdout and os.path.isfile(out / "last.pt")
    resumed = subprocess.run(_resumable(out), env=tiny_env(), capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert run_metrics(out) == run_metrics(left_alone)
    assert same_weights(out, left_alone)
    # TensorBoard: the steps before the stop from the first part, the rest from the resumed one, each step once
    assert tensorboard_losses(out) == tensorboard_losses(left_alone)
