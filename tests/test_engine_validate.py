"""engine/validate.py: evaluate() scores the images it could read; an unreadable one left out of the batches is not
scored, so its objects do not count as missed (the VOC metric never sees them; the COCO one holds every image's
annotations and must be told)."""

from __future__ import annotations

import dataclasses
import warnings

import pytest
import torch
from test_data_coco import ann, make_coco

from ssdkit.data.errors import BadSampleLog
from ssdkit.engine.builders import build_datasets, build_loader, build_metric
from ssdkit.engine.config import TrainConfig, resolve_config
from ssdkit.engine.validate import evaluate

pytestmark = pytest.mark.usefixtures("one_thread")


class Oracle(torch.nn.Module):
    """Answers each batch with that batch's ground truths, in the loader's order: every object found, score 0.9."""

    def __init__(self, loader):
        super().__init__()
        self.answers = [(b["gt_ids"].clone(), b["gt_boxes"].clone()) for b in loader]
        self.postprocessor = torch.nn.Module()
        self.postprocessor.decoder = "per-class"

    def detect(self, images):
        ids, boxes = self.answers.pop(0)
        assert len(ids) == len(images)
        scores = torch.where(ids >= 0, 0.9, -1.0)
        return ids.float().unsqueeze(-1), scores.unsqueeze(-1), boxes


def coco_run_config(root) -> TrainConfig:
    cfg = TrainConfig(
        dataset="coco",
        data_root=str(root),
        val_splits="instances_val2017",
        model="ssd_tiny_custom",
        batch_size=2,
        num_workers=0,
    )
    return resolve_config(cfg)


def coco_run(root):
    cfg = coco_run_config(root)
    _, val_set, classes = build_datasets(cfg, 64, train=False)
    return build_loader(val_set, cfg, train=False), build_metric(cfg, classes, val_set, 64)


def test_an_unreadable_coco_image_left_out_is_not_scored(tmp_path):
    make_coco(tmp_path, extra_anns=[ann(10, 11, [1, 1, 10, 10], 3)])  # objects in images 10 and 11
    loader, metric = coco_run(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, clean = evaluate(Oracle(loader), loader, metric, torch.device("cpu"), BadSampleLog())
    assert clean[-1] > 0.5  # the boxes come back from 64 x 64 input pixels, so not exactly 1

    (tmp_path / "val2017" / "b.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    loader, metric = coco_run(tmp_path)
    bad = BadSampleLog()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "their objects count as missed"
        names, dirty = evaluate(Oracle(loader), loader, metric, torch.device("cpu"), bad)
    assert bad.dropped == 1 and bad.paths[0].endswith("b.jpg")
    # image 10 alone, scored as it was among the others: its class's AP is unchanged, image 11's car is not missed
    assert dict(zip(names, dirty))["AP/car"] == pytest.approx(dict(zip(names, clean))["AP/car"])

    # without the log, the caller has not said it left images out: the missing image's object is missed, loudly
    loader, metric = coco_run(tmp_path)
    with pytest.warns(UserWarning, match="count as missed"):
        _, unknown = evaluate(Oracle(loader), loader, metric, torch.device("cpu"))
    assert dict(zip(names, unknown))["AP/car"] < dict(zip(names, clean))["AP/car"]


def _scored_by(cfg, rank: int, world: int):
    """The val split of ``cfg`` scored by an untrained default model in process ``rank`` of ``world``, each rank
    holding its share of the batches; rank 1's batch-norm statistics are changed (as training leaves them: each
    rank's own) and must not count."""
    from ssdkit import get_model
    from ssdkit.engine.validate import evaluate_shared

    _, val_set, classes = build_datasets(cfg, 128, train=False)
    torch.manual_seed(0)
    net = get_model("ssd_tiny48_synthetic", classes=classes)
    if rank == 1:
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.add_(0.5)
    loader = build_loader(val_set, cfg, train=False, shard=(0, 1) if cfg.extra.get("whole") else (rank, world))
    return evaluate_shared(net, loader, build_metric(cfg, classes, val_set, 128), torch.device("cpu")), len(loader)


def _shared_in_processes(cfg, say, rank, world):
    result, batches = _scored_by(cfg, rank, world)
    return result, batches


def test_the_val_split_shared_by_two_processes_scores_as_one_process_alone():
    """Three batches (16, 16, 8 images): rank 0 detects on the first and third, rank 1 on the second; rank 0 feeds
    the metric in the order of one process alone, so every class's AP is the same to the bit."""
    from ssdkit.engine.distributed import run_in_processes

    cfg = resolve_config(TrainConfig(dataset="synthetic", synthetic_val_size=40, batch_size=16, procs=2, seed=3))
    (alone, all_batches) = _scored_by(cfg, 0, 1)
    shared, rank0_batches = run_in_processes(_shared_in_processes, cfg, lambda m: None)
    assert (all_batches, rank0_batches) == (3, 2)
    names, values = alone
    assert shared == (names, values)
    assert 0 < values[-1] < 1  # an untrained model's detections: some true, most false


def test_a_loader_that_is_not_the_ranks_share_is_refused():
    """Each rank handed the whole split would score every image on every rank, and rank 0 count each twice (rank 0
    is the calling process: its own error comes first, or rank 1's as ProcessFailed)."""
    from ssdkit.engine.distributed import ProcessFailed, run_in_processes

    cfg = resolve_config(TrainConfig(dataset="synthetic", synthetic_val_size=8, batch_size=4, procs=2, seed=3))
    cfg.extra = {"whole": True}
    with pytest.raises((ProcessFailed, ValueError), match="evaluate_shared needs each rank's share of the batches"):
        run_in_processes(_shared_in_processes, cfg, lambda m: None)


def _coco_shared(cfg, say, rank, world):
    """The COCO split of ``make_coco`` at ``cfg.data_root``, one image a batch, scored by the oracle over the
    processes; returns rank 0's result and what each rank dropped."""
    from ssdkit.engine.validate import evaluate_shared

    one = dataclasses.replace(cfg, batch_size=1)
    _, val_set, classes = build_datasets(one, 64, train=False)
    loader = build_loader(val_set, one, train=False, shard=(rank, world))
    bad = BadSampleLog()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "their objects count as missed" on rank 0
        result = evaluate_shared(
            Oracle(loader), loader, build_metric(one, classes, val_set, 64), torch.device("cpu"), bad
        )
    return result, bad.dropped


def test_an_image_that_another_rank_left_out_is_not_scored_either(tmp_path):
    """The unreadable image (the second of three) is rank 1's: rank 0 has dropped nothing itself and must still tell
    the COCO metric to score only the images that were read, as one process does."""
    from ssdkit.engine.distributed import run_in_processes

    make_coco(tmp_path, extra_anns=[ann(10, 11, [1, 1, 10, 10], 3)])
    (tmp_path / "val2017" / "b.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    loader, metric = coco_run(tmp_path)
    _, alone = evaluate(Oracle(loader), loader, metric, torch.device("cpu"), BadSampleLog())
    cfg = dataclasses.replace(coco_run_config(tmp_path), procs=2)
    (names, shared), rank0_dropped = run_in_processes(_coco_shared, cfg, lambda m: None)
    assert rank0_dropped == 0
    assert dict(zip(names, shared))["AP/car"] == pytest.approx(dict(zip(names, alone))["AP/car"])


def test_a_split_without_a_readable_image_is_told_as_in_one_process(tmp_path):
    from ssdkit.engine.config import ConfigError
    from ssdkit.engine.distributed import ProcessFailed, run_in_processes

    make_coco(tmp_path)
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        (tmp_path / "val2017" / name).write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    loader, _ = coco_run(tmp_path)
    with pytest.raises(ConfigError, match="none of its 3 images can be read"):  # one process: its loader says so
        list(loader)
    cfg = dataclasses.replace(coco_run_config(tmp_path), procs=2)
    with pytest.raises((ConfigError, ProcessFailed), match="none of its 3 images can be read"):
        run_in_processes(_coco_shared, cfg, lambda m: None)
