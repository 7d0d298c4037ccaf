"""Checkpoints (engine/checkpoint.py): atomic writes, the Checkpointer's round trip, ``--resume auto``."""

from __future__ import annotations

import os

import pytest
import torch

from ssdkit.engine.builders import prepare_config
from ssdkit.engine.checkpoint import Checkpointer, load_checkpoint, rng_state, save_checkpoint
from ssdkit.engine.config import ConfigError, TrainConfig
from ssdkit.engine.guard import NonFiniteGuard


def test_a_failed_write_leaves_the_previous_checkpoint_and_no_temporary_file(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint(str(path), {"model": {"w": torch.ones(2)}, "config": {}})

    def broken_save(obj, f):
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(str(path), {"model": {"w": torch.zeros(2)}, "config": {}})
    monkeypatch.undo()
    assert torch.equal(load_checkpoint(str(path))["model"]["w"], torch.ones(2))
    assert os.listdir(tmp_path) == ["last.pt"]


def _parts():
    net = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda it: 0.5**it)
    return net, opt, sched, NonFiniteGuard(opt, torch.device("cpu"))


def test_the_checkpointer_restores_what_it_saved(tmp_path):
    net, opt, sched, guard = _parts()
    net(torch.randn(4, 3)).sum().backward()
    opt.step()
    sched.step()
    guard.counters[0] = 3
    ckpt = Checkpointer(str(tmp_path), net, opt, sched, None, guard, {"config": {"seed": 1}, "classes": ["a"]})
    ranks = [{"rng": rng_state(), "window": torch.tensor([1.0, 2, 3, 4, 0]), "guard": guard.state_dict()}]
    expected = torch.rand(3)  # the draw after the saved RNG state
    path = ckpt.save(
        "last.pt",
        4,
        0.5,
        progress={"epoch": 5, "steps": 7, "images": 56, "seconds": 1.0, "sums": [1.0] * 5},
        ranks=ranks,
        bad_samples=[("x.jpg", "bad")],
    )
    assert Checkpointer(str(tmp_path), *_parts()[:3], enabled=False).save("last.pt", 0, 0.0) is None
    net2, opt2, sched2, guard2 = _parts()
    restored = Checkpointer(str(tmp_path), net2, opt2, sched2, None, guard2).restore(load_checkpoint(path))
    assert restored["start_epoch"] == 5 and restored["progress"]["steps"] == 7 and restored["best"] == 0.5
    assert restored["bad_samples"] == [("x.jpg", "bad")] and torch.equal(
        restored["rank_state"]["window"], ranks[0]["window"]
    )
    assert torch.equal(torch.rand(3), expected)
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), net2.state_dict().values()))
    assert sched2.last_epoch == 1 and guard2.read()["skipped"] == 3
    assert torch.equal(
        opt2.state_dict()["state"][0]["momentum_buffer"], opt.state_dict()["state"][0]["momentum_buffer"]
    )


def test_a_restored_momentum_takes_the_layout_of_the_weights_it_is_restored_into(tmp_path):
    """Saved from NHWC weights (a bfloat16 or NHWC run), resumed into NCHW ones (VGG in float32 on an AVX2 CPU)."""

    def conv_parts(layout):
        torch.manual_seed(0)
        net = torch.nn.Conv2d(3, 4, 3).to(memory_format=layout)
        opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, fused=True)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda it: 1.0)
        return net, opt, sched, NonFiniteGuard(opt, torch.device("cpu"))

    net, opt, sched, guard = conv_parts(torch.channels_last)
    net(torch.randn(2, 3, 8, 8).contiguous(memory_format=torch.channels_last)).sum().backward()
    opt.step()
    path = Checkpointer(str(tmp_path), net, opt, sched, None, guard, {"config": {}}).save("last.pt", 1, 0.0)
    saved = load_checkpoint(path)["optimizer"]["state"][0]["momentum_buffer"]
    assert saved.is_contiguous(memory_format=torch.channels_last) and not saved.is_contiguous()
    net2, opt2, sched2, guard2 = conv_parts(torch.contiguous_format)
    Checkpointer(str(tmp_path), net2, opt2, sched2, None, guard2).restore(load_checkpoint(path))
    buf = opt2.state[net2.weight]["momentum_buffer"]
    assert buf.stride() == net2.weight.stride() and torch.equal(buf, opt.state[net.weight]["momentum_buffer"])


def test_resume_auto_continues_the_output_folder_when_it_has_a_last_checkpoint(tmp_path):
    with pytest.raises(ConfigError, match="--resume auto needs --output"):
        prepare_config(TrainConfig(resume="auto"))
    fresh = TrainConfig(resume="auto", output=str(tmp_path))
    assert prepare_config(fresh).resume is None and fresh.resume == "auto"  # the caller's config is not changed
    save_checkpoint(str(tmp_path / "last.pt"), {"model": {}, "config": TrainConfig(seed=7, epochs=3).to_dict()})
    resumed = prepare_config(TrainConfig(resume="auto", output=str(tmp_path)))
    assert resumed.resume == str(tmp_path / "last.pt") and resumed.seed == 7 and resumed.epochs == 3


@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")  # making the TorchScript file, not loading it
def test_other_model_files_get_a_pointer_not_a_pickle_error(tmp_path):
    """A GluonCV user tries --checkpoint with a .params file first; an export is no checkpoint either."""
    import shutil
    import warnings

    from ssdkit.engine.config import ConfigError

    params = tmp_path / "ssd_300_vgg16_atrous_voc.params"
    shutil.copy(os.path.join(os.path.dirname(__file__), "data", "model_mxnet_v2.params"), params)
    scripted = tmp_path / "model.ts"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(scripted))
    onnx_file = tmp_path / "model.onnx"
    onnx_file.write_bytes(b"\x08\x08\x12\x06ssdkit")
    cases = [
        (params, "MXNet .params file .*ssdkit convert"),
        (scripted, "TorchScript file .*torch.jit.load"),
        (onnx_file, "ONNX file; run it with `ssdkit predict --onnx`"),
        (tmp_path, "is a folder; give the checkpoint file in it"),
    ]
    for path, pattern in cases:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # torch.load's TorchScript warning must not reach the user
            with pytest.raises(ConfigError, match=pattern) as err:
                load_checkpoint(str(path))
        assert str(path) in str(err.value) and "\n" not in str(err.value)
    # a plain torch.save zip that is no checkpoint keeps the generic message
    torch.save({"w": torch.ones(1)}, tmp_path / "state.pt")
    with pytest.raises(ConfigError, match="not an ssdkit training checkpoint"):
        load_checkpoint(str(tmp_path / "state.pt"))


def test_checkpoint_file_mode_follows_umask(tmp_path):
    mask = os.umask(0o027)
    try:
        save_checkpoint(str(tmp_path / "a.pt"), {"model": {}, "config": {}})
    finally:
        os.umask(mask)
    assert (tmp_path / "a.pt").stat().st_mode & 0o777 == 0o640
    save_checkpoint(str(tmp_path / "b.pt"), {"model": {}, "config": {}})
    assert (tmp_path / "b.pt").stat().st_mode & 0o777 == 0o666 & ~mask
