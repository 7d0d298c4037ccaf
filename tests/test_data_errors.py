"""ssdkit.data.errors: the bad-sample policy, its log, and the wrapper for any data set."""

from __future__ import annotations

import pickle

import pytest
import torch
from torchvision import tv_tensors

from ssdkit.data.errors import BadSampleError, BadSampleLog, SkipBadSamples, check_policy


def item(label):
    target = {
        "boxes": tv_tensors.BoundingBoxes(torch.tensor([[0.0, 0.0, 2.0, 2.0]]), format="XYXY", canvas_size=(4, 4)),
        "labels": torch.tensor([label]),
    }
    return tv_tensors.Image(torch.zeros(3, 4, 4, dtype=torch.uint8)), target


class FlakyDataset(torch.utils.data.Dataset):
    def __init__(self, bad):
        self.bad = set(bad)

    def __len__(self):
        return 5

    def __getitem__(self, i):
        if i in self.bad:
            raise BadSampleError(f"img{i}.jpg", "cannot decode image")
        return item(i)


def test_skip_wrapper_replaces_bad_items_and_reports_them():
    ds = SkipBadSamples(FlakyDataset(bad={1, 2}))
    image, target = ds[1]
    assert target["labels"].tolist() == [3]  # next valid index
    assert target["bad_samples"] == [("img1.jpg", "cannot decode image"), ("img2.jpg", "cannot decode image")]
    assert ds[4][1]["bad_samples"] == []
    assert ds[1][1]["labels"].tolist() == [3]  # known-bad indices are skipped without retrying
    assert "img1.jpg: cannot decode image" in ds.bad_sample_log.summary()
    with pytest.raises(BadSampleError, match="img2.jpg"):
        SkipBadSamples(FlakyDataset(bad={2}), on_bad_sample="error")[2]
    with pytest.raises(RuntimeError, match="no valid sample"):
        SkipBadSamples(FlakyDataset(bad=range(5)))[0]


def test_log_keeps_each_problem_once_and_crosses_processes():
    log = BadSampleLog([("a.jpg", "empty"), ("a.jpg", "empty"), ("b.jpg", "corrupt")])
    assert len(log) == 2 and log.paths == ["a.jpg", "b.jpg"]
    assert log.record_batch({"bad_samples": [("b.jpg", "corrupt"), ("c.jpg", "missing")]}) == 1
    assert pickle.loads(pickle.dumps(log)).entries == log.entries
    err = pickle.loads(pickle.dumps(BadSampleError("x.jpg", "cannot decode")))
    assert (err.path, err.reason, str(err)) == ("x.jpg", "cannot decode", "x.jpg: cannot decode")
    with pytest.raises(ValueError, match="on_bad_sample"):
        check_policy("ignore")


def test_moved_names_stay_importable_from_errors():
    from ssdkit.data import errors, image_io, mixins, sample

    assert errors.read_image is image_io.read_image and errors.make_target is sample.make_target
    assert errors.PolicyLoading is mixins.PolicyLoading and errors.NamedClasses is mixins.NamedClasses
    with pytest.raises(AttributeError):
        errors.no_such_name  # noqa: B018
