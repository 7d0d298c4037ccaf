import os

import pytest
import torch

from ssdkit.engine.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from ssdkit.engine.config import ConfigError, TrainConfig, resolve_config, scaled_decay_epochs
from ssdkit.engine.schedule import make_scheduler, step_decay_factor


def test_gluoncv_defaults_for_voc():
    cfg = resolve_config(TrainConfig(dataset="voc", data_root="/data"))
    assert (cfg.model, cfg.epochs, cfg.lr, cfg.batch_size, cfg.momentum, cfg.wd) == (
        "ssd_300_vgg16_atrous_voc",
        240,
        1e-3,
        32,
        0.9,
        5e-4,
    )
    assert cfg.lr_decay_epochs == [160, 200] and cfg.lr_decay == 0.1 and cfg.warmup_epochs == 0
    assert cfg.train_splits == "2007_trainval,2012_trainval" and cfg.val_splits == "2007_test"
    assert cfg.loss_norm == "batch" and cfg.decoder == "per_class" and cfg.seed == 233


def test_decay_scales_with_epochs():
    assert scaled_decay_epochs(240) == [160, 200]
    assert scaled_decay_epochs(24) == [16, 20]
    assert resolve_config(TrainConfig(dataset="voc", data_root="x", epochs=120)).lr_decay_epochs == [80, 100]
    syn = resolve_config(TrainConfig())
    halved = resolve_config(TrainConfig(epochs=syn.epochs // 2))
    last = syn.epochs // 2 - 1
    assert halved.lr_decay_epochs == sorted({min(last, max(1, round(e / 2))) for e in syn.lr_decay_epochs})
    # scaled points stay inside the run: a decay at the last epoch boundary would never apply
    assert resolve_config(TrainConfig(epochs=6, lr_decay_epochs=None)).lr_decay_epochs[-1] <= 5
    assert scaled_decay_epochs(3) == [2] and scaled_decay_epochs(1) == [1]
    assert resolve_config(TrainConfig(epochs=10, lr_decay_epochs=[3])).lr_decay_epochs == [3]


@pytest.mark.parametrize(
    "changes,msg",
    [
        (dict(dataset="imagenet"), "--dataset"),
        (dict(loss_norm="mean"), "--loss-norm"),
        (dict(init="normal"), "--init"),
        (dict(decoder="max"), "--decoder"),
        (dict(epochs=0), "--epochs"),
        (dict(lr=-1.0), "--lr"),
        (dict(lr=float("nan")), "--lr must be a positive number"),
        (dict(lr=float("inf")), "--lr must be a positive number"),
        (dict(momentum=float("nan")), "--momentum"),
        (dict(wd=-1e-4), "--wd"),
        (dict(lr_decay=float("inf")), "--lr-decay"),
        (dict(dataset="voc"), "--data-root"),
        (dict(optimizer="adam"), "--optimizer"),
        (dict(match_iou=0.0), "--match-iou"),
        (dict(match_iou=1.5), "--match-iou"),
        (dict(positive_weights="box"), "--positive-weights"),
        (dict(synthetic_train_objects=[0, 4]), "--synthetic-train-objects"),
        (dict(synthetic_train_objects=[5, 4]), "--synthetic-train-objects"),
        (dict(synthetic_train_objects=[3]), "--synthetic-train-objects"),
        (dict(synthetic_train_objects=[2.5, 4]), "--synthetic-train-objects"),
        (dict(synthetic_dense_epochs=-1), "--synthetic-dense-epochs"),
    ],
)
def test_config_errors(changes, msg):
    with pytest.raises(ConfigError, match=msg):
        resolve_config(TrainConfig(**changes))


def test_schedule():
    # 10 iterations per epoch, decay at epochs 2 and 4, 5 warmup iterations
    f = [step_decay_factor(i, 10, [2, 4], 0.1, warmup_iters=5) for i in range(50)]
    assert f[0] == pytest.approx(0.2) and f[4] == pytest.approx(1.0) and f[19] == 1.0
    assert f[20] == pytest.approx(0.1) and f[39] == pytest.approx(0.1) and f[40] == pytest.approx(0.01)
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=1.0)
    sched = make_scheduler(opt, 10, [2], 0.1)
    lrs = []
    for _ in range(25):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[19] == 1.0 and lrs[20] == pytest.approx(0.1)


def test_checkpoint_roundtrip_and_rng(tmp_path):
    torch.manual_seed(5)
    state = rng_state()
    a = torch.rand(3)
    path = str(tmp_path / "c.pt")
    save_checkpoint(path, {"model": {"w": torch.ones(2)}, "config": TrainConfig().to_dict(), "rng": state})
    ck = load_checkpoint(path)
    set_rng_state(ck["rng"])
    assert torch.equal(torch.rand(3), a)
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]  # no temporary files left


def test_checkpoint_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_checkpoint(str(tmp_path / "missing.pt"))
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="bad.pt"):
        load_checkpoint(str(bad))


def test_optimizer_choice():
    import ssdkit
    from ssdkit.engine.builders import build_optimizer

    net = ssdkit.get_model("ssd_tiny_synthetic")
    sgd = build_optimizer(net, resolve_config(TrainConfig(optimizer="sgd")))
    assert isinstance(sgd, torch.optim.SGD) and sgd.defaults["momentum"] == 0.9 and sgd.defaults["weight_decay"] == 5e-4
    adamw = build_optimizer(net, resolve_config(TrainConfig(lr=2e-3)))
    assert isinstance(adamw, torch.optim.AdamW) and adamw.defaults["lr"] == 2e-3
    assert adamw.defaults["weight_decay"] == 0.05
    assert sgd.defaults["fused"] and adamw.defaults["fused"]  # one kernel for all parameters on CPU/CUDA


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_fused_optimizer_steps_like_the_plain_one(optimizer):
    import copy

    import ssdkit
    from ssdkit.engine.builders import build_optimizer

    torch.manual_seed(0)
    net = ssdkit.get_model("ssd_tiny_synthetic")
    plain_net = copy.deepcopy(net)
    cfg = resolve_config(TrainConfig(optimizer=optimizer, lr=0.05, wd=5e-4))
    fused = build_optimizer(net, cfg)
    params = list(plain_net.parameters())
    plain = (
        torch.optim.SGD(params, lr=0.05, momentum=0.9, weight_decay=5e-4, foreach=False)
        if optimizer == "sgd"
        else torch.optim.AdamW(params, lr=0.05, weight_decay=5e-4, foreach=False)
    )
    for _ in range(3):
        for a, b in zip(net.parameters(), plain_net.parameters()):
            a.grad = torch.randn_like(a)
            b.grad = a.grad.clone()
        fused.step()
        plain.step()
    for a, b in zip(net.parameters(), plain_net.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_presets_amp_and_batch():
    syn = resolve_config(TrainConfig())
    # auto mixed precision; small steps for the CPU recipe: 8 images in each of two processes
    assert syn.amp is None and syn.batch_size == 16 and syn.procs == 2 and syn.num_workers == 0
    voc = resolve_config(TrainConfig(dataset="voc", data_root="/data"))
    assert voc.amp is False and voc.batch_size == 32 and voc.procs == 1  # GluonCV: float32, batch 32
    assert resolve_config(TrainConfig(dataset="voc", data_root="/data", amp=True, batch_size=4)).batch_size == 4


def test_loader_workers_fit_the_cores(monkeypatch):
    """GluonCV's 4 loader workers on a machine with fewer cores: one per core instead (PyTorch warns at every loader
    when a loader has more workers than the process may use); a number given by the user stays."""
    from ssdkit.engine import config as config_module

    monkeypatch.setattr(config_module, "usable_cpus", lambda: 2)
    assert resolve_config(TrainConfig(dataset="voc", data_root="/data")).num_workers == 2
    assert resolve_config(TrainConfig(dataset="voc", data_root="/data", procs=2, batch_size=32)).num_workers == 1
    assert resolve_config(TrainConfig(dataset="voc", data_root="/data", num_workers=4)).num_workers == 4
    monkeypatch.setattr(config_module, "usable_cpus", lambda: 16)
    assert resolve_config(TrainConfig(dataset="coco", data_root="/data")).num_workers == 4  # GluonCV's number


def test_amp_dtype_choice(monkeypatch):
    from ssdkit.engine.builders import runtime as trainer

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert trainer.amp_dtype_for(cpu, False) is None and trainer.amp_dtype_for(cuda, False) is None
    assert trainer.amp_dtype_for(cpu, True) == torch.bfloat16
    assert trainer.amp_dtype_for(cuda, None) == torch.float16 and trainer.amp_dtype_for(cuda, True) == torch.float16
    monkeypatch.setattr(trainer, "cpu_has_native_bf16", lambda: False)
    assert trainer.amp_dtype_for(cpu, None) is None  # emulated bf16 is slow: auto leaves it off
    monkeypatch.setattr(trainer, "cpu_has_native_bf16", lambda: True)
    assert trainer.amp_dtype_for(cpu, None) == torch.bfloat16


def test_cpu_threads_leave_cores_to_workers(monkeypatch):
    import os

    from ssdkit.engine import builders

    before = torch.get_num_threads()
    try:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        monkeypatch.setattr(os, "cpu_count", lambda: 2)
        assert builders.share_cpu_cores(torch.device("cpu"), 1) == 1
        assert builders.share_cpu_cores(torch.device("cpu"), 4) == 1
        monkeypatch.setattr(os, "cpu_count", lambda: 8)
        assert builders.share_cpu_cores(torch.device("cpu"), 2) == 6
        torch.set_num_threads(3)
        monkeypatch.setenv("OMP_NUM_THREADS", "3")
        assert builders.share_cpu_cores(torch.device("cpu"), 1) == 3  # the user's setting wins
    finally:
        torch.set_num_threads(before)


def test_match_iou_presets_and_the_training_loader_uses_it():
    from ssdkit.data.synthetic import SyntheticShapes
    from ssdkit.data.transforms import SSDValTransform
    from ssdkit.engine.builders import build_loader, model_anchors
    from ssdkit.models import get_model

    assert resolve_config(TrainConfig(dataset="voc", data_root="/d")).match_iou == 0.5  # GluonCV's threshold
    assert resolve_config(TrainConfig(dataset="coco", data_root="/d")).match_iou == 0.5
    assert resolve_config(TrainConfig()).match_iou == 0.4
    assert resolve_config(TrainConfig(match_iou=0.6)).match_iou == 0.6
    # the value comes with the model, whatever the data set: the tiny model on a VOC-format folder matches at 0.4
    from ssdkit.models.presets import PRESETS

    assert PRESETS["ssd_tiny_custom"].match_iou == 0.4 and PRESETS["ssd_300_vgg16_atrous_custom"].match_iou == 0.5
    assert resolve_config(TrainConfig(dataset="voc-folder", data_root="/d", model="ssd_tiny_custom")).match_iou == 0.4
    assert resolve_config(TrainConfig(model="ssd_300_vgg16_atrous_custom")).match_iou == 0.5
    data = SyntheticShapes(8, seed=5, transform=SSDValTransform(128))
    anchors = model_anchors(get_model("ssd_tiny_synthetic"), 128, torch.device("cpu"))
    positives = []
    for thresh in (0.3, 0.5, 0.7):
        cfg = resolve_config(TrainConfig(match_iou=thresh, batch_size=8, num_workers=0))
        batch = next(iter(build_loader(data, cfg, train=True, anchors=anchors)))
        positives.append(int((batch["cls_targets"] > 0).sum()))
    n_gt = sum(len(data[i][1]["boxes"]) for i in range(8))
    # every ground truth keeps its best anchor, and a lower threshold adds positives
    assert positives[0] > positives[1] > positives[2] >= n_gt


def test_positive_weights_come_with_the_model_and_the_training_loader_uses_them():
    from ssdkit.data.synthetic import SyntheticShapes
    from ssdkit.data.transforms import SSDValTransform
    from ssdkit.engine.builders import build_loader, model_anchors
    from ssdkit.models import get_model

    assert resolve_config(TrainConfig(dataset="voc", data_root="/d")).positive_weights == "anchor"  # GluonCV's
    assert resolve_config(TrainConfig(model="ssd_300_vgg16_atrous_custom")).positive_weights == "anchor"
    assert resolve_config(TrainConfig()).positive_weights == "object"
    assert resolve_config(TrainConfig(positive_weights="anchor")).positive_weights == "anchor"
    tiny_folder = TrainConfig(dataset="voc-folder", data_root="/d", model="ssd_tiny_custom")
    assert resolve_config(tiny_folder).positive_weights == "object"
    # a run saved before the option trained with every positive weighed alike, and resumes so
    old = TrainConfig().to_dict()
    del old["positive_weights"]
    assert TrainConfig.from_dict(old).positive_weights == "anchor"
    data = SyntheticShapes(8, seed=5, transform=SSDValTransform(128))
    anchors = model_anchors(get_model("ssd_tiny48_synthetic"), 128, torch.device("cpu"))
    batches = {}
    for weights in ("anchor", "object"):
        cfg = resolve_config(TrainConfig(positive_weights=weights, batch_size=8, num_workers=0))
        batches[weights] = next(iter(build_loader(data, cfg, train=True, anchors=anchors)))
    assert "pos_weights" not in batches["anchor"]
    ct, w = batches["object"]["cls_targets"], batches["object"]["pos_weights"]
    assert torch.equal(ct, batches["anchor"]["cls_targets"]) and torch.equal(w > 0, ct > 0)
    assert torch.allclose(w.sum(1), (ct > 0).sum(1).float()) and not torch.allclose(w, (ct > 0).float())


def test_synthetic_training_images_are_denser_than_the_val_split():
    from ssdkit.engine.builders import build_datasets, prepare_train_epoch
    from ssdkit.engine.config import SYNTHETIC_TRAIN_OBJECTS

    assert resolve_config(TrainConfig()).synthetic_train_objects == list(SYNTHETIC_TRAIN_OBJECTS)
    cfg = resolve_config(TrainConfig(synthetic_train_objects=[4, 6], synthetic_train_size=30, synthetic_val_size=30))
    train, val, _ = build_datasets(cfg, 128)
    assert (train.min_objects, train.max_objects) == (4, 6)
    assert (val.min_objects, val.max_objects) == (1, 10)  # mAP is measured on the data set's own 1-10
    counts = [len(train.render(i)[1]) for i in range(30)]
    assert min(counts) >= 1 and max(counts) <= 6 and sum(counts) / len(counts) > 3.5
    # dense until the first LR decay (or --synthetic-dense-epochs), then the val split's range
    assert resolve_config(TrainConfig(epochs=18, lr_decay_epochs=[14, 16])).synthetic_dense_epochs == 14
    assert resolve_config(TrainConfig(epochs=9)).synthetic_dense_epochs == min(
        resolve_config(TrainConfig(epochs=9)).lr_decay_epochs
    )
    assert resolve_config(TrainConfig(synthetic_dense_epochs=0)).synthetic_dense_epochs == 0
    cfg = resolve_config(TrainConfig(synthetic_train_objects=[4, 6], synthetic_dense_epochs=2))
    ranges = []
    for epoch in range(4):
        prepare_train_epoch(train, cfg, epoch)
        ranges.append((train.epoch, train.min_objects, train.max_objects))
    assert ranges == [(0, 4, 6), (1, 4, 6), (2, 1, 10), (3, 1, 10)]
    assert max(len(train.render(i)[1]) for i in range(30)) > 6  # the images follow the range
    with pytest.raises(ValueError, match="min_objects"):
        train.set_object_range(3, 2)
    # a config saved before the option existed resumes with what it trained on
    old = TrainConfig().to_dict()
    del old["synthetic_train_objects"]
    assert TrainConfig.from_dict(old).synthetic_train_objects == [1, 10]
    assert TrainConfig.from_dict(TrainConfig(synthetic_train_objects=[2, 3]).to_dict()).synthetic_train_objects == [
        2,
        3,
    ]


def test_default_val_interval_evaluates_at_least_three_times():
    from ssdkit.engine.config import default_val_interval

    for epochs in range(1, 60):
        for preset_interval in (1, 8, 10):
            interval = default_val_interval(epochs, preset_interval)
            evaluations = epochs // interval + (epochs % interval > 0)
            assert 1 <= interval <= max(1, preset_interval) and evaluations >= min(3, epochs)
    assert resolve_config(TrainConfig(epochs=6)).val_interval == 2  # was 8: one evaluation in six epochs
    assert resolve_config(TrainConfig(epochs=6, val_interval=8)).val_interval == 8  # the user's choice stays
    assert resolve_config(TrainConfig(dataset="coco", data_root="x", epochs=240)).val_interval == 10


def test_procs_on_cuda_are_one_per_gpu(monkeypatch):
    """The synthetic preset's two processes are one per CPU core: on one GPU the run takes one process (NCCL
    refuses two ranks on one GPU); an explicit --procs beyond the GPU count is a clear error."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_config(TrainConfig()).procs == 1  # device auto finds the GPU
    assert resolve_config(TrainConfig(device="cuda")).procs == 1
    assert resolve_config(TrainConfig(device="cpu")).procs == 2
    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    assert resolve_config(TrainConfig()).num_workers == 8  # the spare cores make the images for the GPU
    assert resolve_config(TrainConfig(num_workers=0)).num_workers == 0
    assert resolve_config(TrainConfig(device="cpu")).num_workers == 0
    with pytest.raises(ConfigError, match=r"--procs 2 on --device cuda needs 2 GPUs .* has 1"):
        resolve_config(TrainConfig(device="cuda", procs=2))
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert resolve_config(TrainConfig(device="cuda")).procs == 2  # the preset's two, one GPU each
    assert resolve_config(TrainConfig(device="cuda:0", procs=4)).procs == 4
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_config(TrainConfig()).procs == 2


def test_the_synthetic_default_model_follows_the_precision(monkeypatch, tmp_path):
    """48-channel stem in float32 (the common CPU), 64 under autocast (native bfloat16, CUDA); a given model stays."""
    from ssdkit.engine.builders import prepare_config, runtime

    assert resolve_config(TrainConfig()).model == "ssd_tiny48_synthetic"
    assert resolve_config(TrainConfig(model="ssd_tiny_synthetic")).model == "ssd_tiny_synthetic"

    def model(native_bf16, **kw):
        monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: native_bf16)
        return prepare_config(TrainConfig(device="cpu", output=str(tmp_path), **kw)).model

    assert model(False) == "ssd_tiny48_synthetic"
    assert model(True) == "ssd_tiny_synthetic"
    assert model(True, amp=False) == "ssd_tiny48_synthetic"  # --no-amp: float32
    assert model(False, amp=True) == "ssd_tiny_synthetic"  # --amp: bfloat16 even where emulated
    assert model(True, model="ssd_tiny48_synthetic") == "ssd_tiny48_synthetic"
    assert model(False, dataset="voc", data_root=str(tmp_path)) == "ssd_300_vgg16_atrous_voc"
    assert runtime.synthetic_default_model(torch.device("cuda"), None) == "ssd_tiny_synthetic"


def test_onednn_isa_hold_and_the_vgg_layout(monkeypatch):
    from ssdkit.engine.builders import runtime
    from ssdkit.models.presets import PRESETS

    monkeypatch.setattr(torch.cpu, "_is_avx512_supported", lambda: True)
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    for held, expected in (
        ("", True),
        ("AVX2", False),
        ("avx2_vnni", False),
        ("AVX512_CORE_BF16", True),
        ("ALL", True),
    ):
        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", held)
        assert runtime.onednn_runs_avx512() is expected, held
    monkeypatch.setattr(torch.cpu, "_is_avx512_supported", lambda: False)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "ALL")
    assert runtime.onednn_runs_avx512() is False
    # the VGG models train in NCHW float32 there; the others, autocast and CUDA keep their layouts
    assert {name for name, p in PRESETS.items() if p.nchw_without_avx512} == {
        f"ssd_{size}_vgg16_atrous_{kind}" for size in (300, 512) for kind in ("voc", "coco", "custom")
    }
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert runtime.run_memory_format("ssd_300_vgg16_atrous_voc", cpu, None) == torch.contiguous_format
    assert runtime.run_memory_format("ssd_300_vgg16_atrous_voc", cpu, torch.bfloat16) == torch.channels_last
    assert runtime.run_memory_format("ssd_512_resnet50_v1_voc", cpu, None) == torch.channels_last
    assert runtime.run_memory_format("not-a-preset", cpu, None) == torch.channels_last
    assert runtime.run_memory_format("ssd_300_vgg16_atrous_voc", cuda, torch.float16) == torch.channels_last
    monkeypatch.setattr(torch.cpu, "_is_avx512_supported", lambda: True)
    assert runtime.run_memory_format("ssd_300_vgg16_atrous_voc", cpu, None) == torch.channels_last
    monkeypatch.delattr(torch.cpu, "_is_avx512_supported")  # PyTorch without the private query: NHWC as before
    assert runtime.onednn_runs_avx512() is True


def test_the_dense_synthetic_epochs_may_draw_smaller_images():
    from ssdkit.engine.builders import build_datasets, prepare_train_epoch, synthetic_image_size, train_transform
    from ssdkit.engine.builders.run import prepare_config

    cfg = resolve_config(TrainConfig(synthetic_dense_scale=0.75, synthetic_dense_epochs=2, synthetic_train_size=4))
    assert resolve_config(TrainConfig()).synthetic_dense_scale == 1.0  # resolve_config alone: full size
    cfg.data_shape = 128
    assert [synthetic_image_size(cfg, e) for e in range(4)] == [96, 96, 128, 128]
    train, _, _ = build_datasets(cfg, 128, val=False)
    transforms = {s: train_transform(cfg.augment, s) for s in (96, 128)}
    shapes = []
    for epoch in range(4):
        prepare_train_epoch(train, cfg, epoch, transforms)
        shapes.append(tuple(train[0][0].shape[-2:]))
    assert shapes == [(96, 96), (96, 96), (128, 128), (128, 128)]
    # the default follows the precision, like the model: smaller dense images in float32, full size under autocast
    assert prepare_config(TrainConfig(amp=False, output="x")).synthetic_dense_scale == 0.75
    assert prepare_config(TrainConfig(amp=True, output="x")).synthetic_dense_scale == 1.0
    assert prepare_config(TrainConfig(amp=False, synthetic_dense_scale=1.0, output="x")).synthetic_dense_scale == 1.0
    # the VGG models' last layers need their full input: full size unless asked, and a clear error when asked
    vgg = TrainConfig(amp=False, model="ssd_300_vgg16_atrous_voc", output="x")
    assert prepare_config(vgg).synthetic_dense_scale == 1.0
    for bad in (0.0, 1.5, float("nan")):
        with pytest.raises(ConfigError, match="--synthetic-dense-scale"):
            resolve_config(TrainConfig(synthetic_dense_scale=bad))
    with pytest.raises(ConfigError, match="at least 16"):
        resolve_config(TrainConfig(synthetic_dense_scale=0.1, data_shape=128))
    # with smaller dense images the LR decays later (their epochs are cheap): at 14 and 15, scaled with --epochs
    small = prepare_config(TrainConfig(amp=False, output="x"))
    assert small.lr_decay_epochs == [14, 15] and small.synthetic_dense_epochs == 14
    assert prepare_config(TrainConfig(amp=True, output="x")).lr_decay_epochs == [12, 14]
    assert resolve_config(TrainConfig(synthetic_dense_scale=0.75, epochs=8)).lr_decay_epochs == [7]
    assert resolve_config(TrainConfig(synthetic_dense_scale=0.75, lr_decay_epochs=[9])).lr_decay_epochs == [9]
    old = TrainConfig().to_dict()  # a config saved before the option existed trained at full size
    del old["synthetic_dense_scale"]
    assert TrainConfig.from_dict(old).synthetic_dense_scale == 1.0


def test_a_dense_scale_the_model_cannot_take_is_a_clear_error(tmp_path):
    from ssdkit.engine.builders import build_run, prepare_config

    cfg = prepare_config(
        TrainConfig(
            model="ssd_300_vgg16_atrous_custom", amp=False, procs=1, synthetic_dense_scale=0.75,
            synthetic_train_size=4, synthetic_val_size=4, output=str(tmp_path / "run"),
        )
    )  # fmt: skip
    with pytest.raises(
        ConfigError, match=r"--synthetic-dense-scale 0.75: ssd_300_vgg16_atrous_custom cannot take 225 x"
    ):
        build_run(cfg, 0, 1)


def test_a_misspelt_model_or_class_is_told_before_any_process_starts(monkeypatch):
    """The parent checks the names: a training process that failed on them would be reported seconds later."""
    from ssdkit.engine import trainer

    monkeypatch.setattr(trainer, "launch", lambda *a, **k: pytest.fail("processes started for a bad config"))
    with pytest.raises(ConfigError, match="unknown model 'ssd_999'"):
        trainer.fit(TrainConfig(model="ssd_999", output="x"))
    with pytest.raises(ConfigError, match="--classes: .*'hexagon'"):
        trainer.fit(TrainConfig(classes=["circle", "hexagon"], output="x"))
    with pytest.raises(ConfigError, match="--classes: .*'circle', 'circle'"):
        trainer.fit(TrainConfig(classes=["circle", "circle"], output="x"))


def test_synthetic_rates_follow_the_optimizer():
    """The synthetic set trains AdamW at its own rate and decay; --optimizer sgd takes SGD's tuned pair, and a rate
    or decay the user gives wins. The real data sets keep GluonCV's SGD recipe."""
    adamw = resolve_config(TrainConfig())
    assert (adamw.optimizer, adamw.lr, adamw.wd, adamw.lr_decay) == ("adamw", 8e-3, 0.05, 0.25)
    sgd = resolve_config(TrainConfig(optimizer="sgd"))
    assert (sgd.optimizer, sgd.lr, sgd.wd, sgd.lr_decay) == ("sgd", 0.08, 5e-4, 0.1)
    own = resolve_config(TrainConfig(lr=0.02, wd=0.0, lr_decay=0.5))
    assert (own.optimizer, own.lr, own.wd, own.lr_decay) == ("adamw", 0.02, 0.0, 0.5)
    voc = resolve_config(TrainConfig(dataset="voc", data_root="x", optimizer="adamw"))
    assert (voc.lr, voc.wd, voc.lr_decay) == (1e-3, 5e-4, 0.1)
