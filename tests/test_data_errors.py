"""ssdkit.data.errors: the bad-sample policy, its log, and the wrapper for any data set."""

from __future__ import annotations

import pickle

import pytest
import torch
from torchvision import tv_tensors

from ssdkit.data.errors import (
    BadSampleError,
    BadSampleLog,
    DroppedSample,
    NoValidSampleError,
    SkipBadSamples,
    check_policy,
    worker_message,
)


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
    with pytest.raises(NoValidSampleError, match="none of its 5 images can be read"):
        SkipBadSamples(FlakyDataset(bad=range(5)))[0]


def test_no_valid_sample_is_one_line_naming_the_first_problems():
    with pytest.raises(NoValidSampleError) as info:
        SkipBadSamples(FlakyDataset(bad=range(5)))[1]
    assert isinstance(info.value, RuntimeError)  # what the error used to be
    assert str(info.value) == (
        "none of its 5 images can be read (img1.jpg: cannot decode image; img2.jpg: cannot decode image; "
        "img3.jpg: cannot decode image and 2 more)"
    )
    from ssdkit.data.errors import load_with_policy

    def load(i):
        raise BadSampleError(f"img{i}.jpg", "empty")

    with pytest.raises(NoValidSampleError, match=r"^the 3 images from index 4 on cannot be read \(img4.jpg: empty;"):
        load_with_policy(load, 4, 10, "skip", BadSampleLog(), max_tries=3)


def test_drop_gives_the_problems_in_place_of_a_bad_item_and_never_another_item():
    ds = SkipBadSamples(FlakyDataset(bad={1, 2}), on_bad_sample="drop")
    for _ in range(2):  # a known bad index is dropped again, with its problem (a worker may report it first)
        assert ds[1] == DroppedSample([("img1.jpg", "cannot decode image")])
    assert ds[3][1]["labels"].tolist() == [3] and ds[3][1]["bad_samples"] == []
    assert ds.bad_sample_log.paths == ["img1.jpg"]
    assert pickle.loads(pickle.dumps(ds[2])) == DroppedSample([("img2.jpg", "cannot decode image")])
    assert check_policy("drop") == "drop"


def loader(dataset):
    return torch.utils.data.DataLoader(
        dataset, batch_size=None, num_workers=1, collate_fn=lambda x: x, multiprocessing_context="fork"
    )


def test_bad_sample_error_from_a_worker_keeps_path_and_reason():
    # PyTorch re-raises a worker's error as type(err)(its traceback text): one argument
    with pytest.raises(BadSampleError) as info:
        list(loader(SkipBadSamples(FlakyDataset(bad={0}), on_bad_sample="error")))
    assert (info.value.path, info.value.reason) == ("img0.jpg", "cannot decode image")
    assert str(info.value) == "img0.jpg: cannot decode image"


def test_no_valid_sample_from_a_worker_keeps_its_message():
    with pytest.raises(NoValidSampleError) as info:
        list(loader(SkipBadSamples(FlakyDataset(bad=range(5)))))
    assert str(info.value).startswith("none of its 5 images can be read (img0.jpg: cannot decode image;")
    assert "\n" not in str(info.value)


def test_one_argument_bad_sample_error_splits_at_the_path(tmp_path):
    odd = tmp_path / "scan: 2024"  # a folder name with the separator in it
    odd.mkdir()
    (odd / "a.jpg").write_bytes(b"")
    err = BadSampleError(f"{odd}/a.jpg: image file is empty: 0 bytes")
    assert (err.path, err.reason) == (f"{odd}/a.jpg", "image file is empty: 0 bytes")
    assert (BadSampleError("x.jpg: broken").path, BadSampleError("no path").reason) == ("x.jpg", "no path")
    assert str(BadSampleError("no path")) == "no path"


def test_worker_message_leaves_other_text_alone():
    assert worker_message(BadSampleError, "a.jpg: empty") == "a.jpg: empty"
    text = "Caught BadSampleError in DataLoader worker process 0.\nOriginal Traceback:\n  ...\n"
    assert worker_message(BadSampleError, text + "ssdkit.data.errors.BadSampleError: a.jpg: empty\n") == "a.jpg: empty"
    assert worker_message(ValueError, "Caught ValueError in x.\nTraceback\nValueError: bad\n") == "bad"
    assert worker_message(BadSampleError, text + "KeyError: 'k'\n") == text + "KeyError: 'k'\n"


def test_log_keeps_each_problem_once_and_crosses_processes():
    log = BadSampleLog([("a.jpg", "empty"), ("a.jpg", "empty"), ("b.jpg", "corrupt")])
    assert len(log) == 2 and log.paths == ["a.jpg", "b.jpg"]
    assert log.record_batch({"bad_samples": [("b.jpg", "corrupt"), ("c.jpg", "missing")]}) == 1
    assert log.dropped == 0 and log.record_batch({"bad_samples": [("c.jpg", "missing")], "dropped": 2}) == 0
    assert log.record_batch({"dropped": 1}) == 0 and log.dropped == 3
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
