"""engine/validate.py: evaluate() scores the images it could read; an unreadable one left out of the batches is not
scored, so its objects do not count as missed (the VOC metric never sees them; the COCO one holds every image's
annotations and must be told)."""

from __future__ import annotations

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


def coco_run(root):
    cfg = TrainConfig(
        dataset="coco",
        data_root=str(root),
        val_splits="instances_val2017",
        model="ssd_tiny_custom",
        batch_size=2,
        num_workers=0,
    )
    cfg = resolve_config(cfg)
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
