import os

import pytest
import torch

import ssdkit
from ssdkit.data.collate import TargetCollate
from ssdkit.data.synthetic import SyntheticShapes
from ssdkit.data.transforms import SSDValTransform
from ssdkit.engine.config import TrainConfig
from ssdkit.engine.trainer import fit


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
    for step in range(120):
        cls_preds, box_preds, _ = net(batch["images"])
        loss = loss_fn(cls_preds, box_preds, batch["cls_targets"], batch["box_targets"])[0].sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = loss.item() if first is None else first
    assert loss.item() < 0.05 * first and loss.item() < 1.0, (first, loss.item())


def _tiny_cfg(tmp_path, name, **kw):
    base = dict(synthetic_train_size=32, synthetic_val_size=8, batch_size=16, epochs=2, val_interval=1,
                num_workers=0, progress=False, output=str(tmp_path / name), log_interval=1)
    base.update(kw)
    return TrainConfig(**base)


@pytest.mark.parametrize("procs", [1, 2])
def test_resume_continues_exactly(tmp_path, procs):
    full = fit(_tiny_cfg(tmp_path, "full", procs=procs), say=lambda m: None)

    def stop_after_first_epoch(message):
        if message.startswith("epoch 1/2"):
            raise KeyboardInterrupt  # as a user's Ctrl-C right after epoch 1

    with pytest.raises(KeyboardInterrupt):
        fit(_tiny_cfg(tmp_path, "part", procs=procs), say=stop_after_first_epoch)
    assert os.path.exists(tmp_path / "part" / "last.pt")
    resumed = fit(_tiny_cfg(tmp_path, "part", resume=str(tmp_path / "part" / "last.pt")), say=lambda m: None)
    assert resumed.epochs_run == 1
    loss_full = [float(r["train_loss"]) for r in full.history]
    loss_resumed = [float(r["train_loss"]) for r in resumed.history]
    assert loss_full == loss_resumed  # epoch 1 from the first part, epoch 2 after the resume
    a = torch.load(tmp_path / "full" / "last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "part" / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_run_folder_contents(tmp_path):
    res = fit(_tiny_cfg(tmp_path, "run", epochs=1), say=lambda m: None)
    files = set(os.listdir(res.output))
    assert {"best.pt", "last.pt", "metrics.csv", "config.json", "loss.png", "map.png", "tensorboard"} <= files
    header = open(os.path.join(res.output, "metrics.csv")).readline().strip().split(",")
    assert "epoch" in header and "voc07_map" in header
    assert 0.0 <= res.best_map <= 1.0


def test_amp_on_cpu_trains_with_bfloat16(tmp_path):
    res = fit(_tiny_cfg(tmp_path, "amp", epochs=1, amp=True), say=lambda m: None)
    assert res.epochs_run == 1 and 0.0 <= res.best_map <= 1.0
    assert all(float(r["train_loss"]) > 0 for r in res.history)


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
