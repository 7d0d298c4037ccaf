"""The non-finite guard (engine/guard.py): a bad step changes nothing and is counted; K in a row stop the run."""

from __future__ import annotations

import copy
import os

import pytest
import torch

from ssdkit.engine.builders import build_optimizer
from ssdkit.engine.config import TrainConfig, resolve_config
from ssdkit.engine.guard import NonFiniteGuard
from ssdkit.engine.trainer import NonFiniteStop, fit
from ssdkit.loss import SSDMultiBoxLoss


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_a_step_with_a_non_finite_gradient_changes_nothing(optimizer):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    ref = copy.deepcopy(net)
    cfg = resolve_config(TrainConfig(optimizer=optimizer, lr=0.1))
    opt, ref_opt = build_optimizer(net, cfg), build_optimizer(ref, cfg)
    guard = NonFiniteGuard(opt, torch.device("cpu"), patience=2)
    bad_steps = {0, 2, 3}  # the first step too: no state may be created by a skipped step
    for step in range(6):
        x = torch.randn(5, 4)
        for model, o in ((net, opt), (ref, ref_opt)):
            o.zero_grad()
            loss = model(x).square().sum()
            if model is net and step in bad_steps:
                loss = loss * float("nan") if step != 3 else loss + float("inf")
            if model is net:
                guard.guard_loss(loss, loss).backward()
                guard.step()
            elif step not in bad_steps:
                loss.backward()
                o.step()
    for a, b in zip(net.parameters(), ref.parameters()):
        assert torch.equal(a, b)
    if optimizer == "adamw":
        assert opt.state_dict()["state"][0]["step"] == ref_opt.state_dict()["state"][0]["step"] == 3
    assert guard.read() == {"skipped": 3, "streak": 0, "steps": 6, "stop_step": 4}  # 2 in a row at step 4


class _LossWithNaN(SSDMultiBoxLoss):
    """The training loss, non-finite at the given calls (1-based)."""

    bad: set[int] = set()
    calls = 0

    def forward(self, *args):
        sum_loss, cls_loss, box_loss = super().forward(*args)
        type(self).calls += 1
        if type(self).calls in self.bad:
            sum_loss = sum_loss * float("nan")
        return sum_loss, cls_loss, box_loss


def _cfg(tmp_path, name, **kw):
    return TrainConfig(
        synthetic_train_size=16,
        synthetic_val_size=4,
        data_shape=64,
        batch_size=4,
        epochs=2,
        procs=1,
        num_workers=0,
        progress=False,
        log_interval=2,
        val_interval=1,
        output=str(tmp_path / name),
        amp=False,
        **kw,
    )


def test_a_run_skips_a_bad_step_counts_it_and_goes_on(tmp_path, monkeypatch):
    monkeypatch.setattr("ssdkit.engine.builders.run.SSDMultiBoxLoss", _LossWithNaN)
    monkeypatch.setattr(_LossWithNaN, "bad", {2, 6})
    monkeypatch.setattr(_LossWithNaN, "calls", 0)
    messages = []
    result = fit(_cfg(tmp_path, "recovers"), say=messages.append)
    assert [int(r["skipped_steps"]) for r in result.history] == [1, 1]
    assert all(float(r["train_loss"]) == float(r["train_loss"]) for r in result.history)  # finite means
    assert any("skipped 1 step(s) with a non-finite loss" in m for m in messages)
    ckpt = torch.load(tmp_path / "recovers" / "last.pt", weights_only=True)
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())


def test_k_bad_steps_in_a_row_stop_the_run_and_keep_the_last_good_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setattr("ssdkit.engine.builders.run.SSDMultiBoxLoss", _LossWithNaN)
    monkeypatch.setattr(_LossWithNaN, "bad", set(range(5, 100)))  # from the first step of epoch 2 on
    monkeypatch.setattr(_LossWithNaN, "calls", 0)
    out = tmp_path / "stops"
    with pytest.raises(NonFiniteStop) as err:
        fit(_cfg(tmp_path, "stops", max_bad_steps=3, checkpoint_steps=1), say=lambda m: None)
    message = str(err.value)
    assert "3 steps in a row" in message and "the last at step 7" in message and "learning rate" in message
    assert f"the last good checkpoint is {out / 'last.pt'}" in message and "\n" not in message
    assert int(torch.load(out / "last.pt", weights_only=True)["epoch"]) == 0  # epoch 1's, not a bad step's


def test_the_cli_reports_the_stop_in_one_line_and_exits_1(tmp_path, monkeypatch, capsys):
    from ssdkit.cli import main

    monkeypatch.setattr("ssdkit.engine.builders.run.SSDMultiBoxLoss", _LossWithNaN)
    monkeypatch.setattr(_LossWithNaN, "bad", set(range(1, 100)))
    monkeypatch.setattr(_LossWithNaN, "calls", 0)
    code = main(
        [
            "train",
            "--data-shape",
            "64",
            "--synthetic-train-size",
            "8",
            "--synthetic-val-size",
            "4",
            "--batch-size",
            "4",
            "--epochs",
            "1",
            "--procs",
            "1",
            "--no-progress",
            "--no-amp",
            "--max-bad-steps",
            "2",
            "--log-interval",
            "1",
            "--output",
            os.fspath(tmp_path / "cli"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "2 steps in a row had a non-finite loss" in err


def test_a_skipped_step_leaves_the_batch_norm_statistics_as_they_were(tmp_path, monkeypatch):
    """An inf pixel reaches the running statistics in the forward pass, before any loss or gradient is seen; the
    skipped step must put them back, so the run ends exactly as one whose step 2 was skipped for a NaN loss."""
    calls = {"n": 0}

    def inf_pixel_at_step_2(module, args):
        if isinstance(module, torch.nn.Conv2d) and module.in_channels == 3 and module.training:
            calls["n"] += 1
            if calls["n"] == 2:
                x = args[0].clone()
                x[0, 0, 0, 0] = float("inf")
                return (x,)
        return None

    handle = torch.nn.modules.module.register_module_forward_pre_hook(inf_pixel_at_step_2)
    try:
        fit(_cfg(tmp_path, "inf"), say=lambda m: None)
    finally:
        handle.remove()
    monkeypatch.setattr("ssdkit.engine.builders.run.SSDMultiBoxLoss", _LossWithNaN)
    monkeypatch.setattr(_LossWithNaN, "bad", {2})
    monkeypatch.setattr(_LossWithNaN, "calls", 0)
    fit(_cfg(tmp_path, "nan"), say=lambda m: None)
    a = torch.load(tmp_path / "inf" / "last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "nan" / "last.pt", weights_only=True)["model"]
    assert calls["n"] > 2
    for key, value in a.items():
        assert torch.equal(value, b[key]), key
        assert not value.is_floating_point() or torch.isfinite(value).all(), key


def test_restore_batch_norms_unit():
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    guard = NonFiniteGuard(opt, torch.device("cpu"))
    guard.watch_batch_norms(net)
    before = {k: v.clone() for k, v in net[1].state_dict().items()}
    guard.save_batch_norms()
    net(torch.randn(2, 3, 8, 8))  # a good forward pass, then a step that is skipped for another reason
    guard.restore_batch_norms(torch.ones(()))
    assert all(torch.equal(v, before[k]) for k, v in net[1].state_dict().items())
    guard.save_batch_norms()
    net(torch.randn(2, 3, 8, 8))
    moved = {k: v.clone() for k, v in net[1].state_dict().items()}
    guard.restore_batch_norms(torch.zeros(()))  # a good step keeps what it learned
    assert all(torch.equal(v, moved[k]) for k, v in net[1].state_dict().items())
    assert not torch.equal(moved["running_mean"], before["running_mean"])
