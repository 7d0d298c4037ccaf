"""The data-set registry (data/registry.py): built-in kinds, your own kind, clear errors."""

import pytest

from ssdkit.data.registry import DatasetRequest, get_dataset_kind, list_datasets, register_dataset
from ssdkit.engine.builders import build_datasets
from ssdkit.engine.config import ConfigError, TrainConfig, resolve_config


def test_the_builtin_kinds_are_registered():
    assert {"synthetic", "voc", "voc-folder", "coco"} <= set(list_datasets())
    assert not get_dataset_kind("synthetic").needs_root and get_dataset_kind("coco").needs_root
    with pytest.raises(ValueError, match="unknown data set kind 'nope'"):
        get_dataset_kind("nope")
    with pytest.raises(ValueError, match="already registered"):
        register_dataset("voc", lambda req: (None, None))


def test_a_registered_kind_is_built_like_the_builtin_ones(monkeypatch):
    from ssdkit.data import registry
    from ssdkit.data.synthetic import SyntheticShapes

    seen = []

    def tiny(req: DatasetRequest):
        seen.append(req)
        return (
            SyntheticShapes(6, seed=req.seed, transform=req.train_transform, image_size=req.image_size),
            SyntheticShapes(3, seed=req.seed + 1, transform=req.val_transform, image_size=req.image_size),
        )

    monkeypatch.setitem(registry._REGISTRY, "tiny", registry.DatasetKind("tiny", tiny, needs_root=False))
    cfg = resolve_config(TrainConfig(seed=9, synthetic_train_size=6))
    cfg.dataset = "tiny"
    train, val, classes = build_datasets(cfg, 64)
    assert (len(train), len(val)) == (6, 3) and classes == train.classes
    assert seen[0].seed == 9 and seen[0].image_size == 64 and seen[0].train_transform is not None
    cfg.dataset = "unregistered"
    with pytest.raises(ConfigError, match="unknown data set kind 'unregistered'"):
        build_datasets(cfg, 64)


@pytest.mark.parametrize("policy, val_policy", [("skip", "drop"), ("error", "error")])
def test_the_val_split_drops_what_training_skips(tmp_path, policy, val_policy):
    # a stand-in image would be scored twice in validation, so "skip" becomes "drop" there
    (tmp_path / "Annotations").mkdir()
    (tmp_path / "JPEGImages").mkdir()
    box = "<bndbox><xmin>1</xmin><ymin>1</ymin><xmax>5</xmax><ymax>5</ymax></bndbox>"
    (tmp_path / "Annotations" / "a.xml").write_text(f"<annotation><object><name>dot</name>{box}</object></annotation>")
    (tmp_path / "JPEGImages" / "a.jpg").write_bytes(b"not decoded at construction")
    req = DatasetRequest(root=str(tmp_path), on_bad_sample=policy)
    assert req.val_on_bad_sample == val_policy
    train_set, val_set = get_dataset_kind("voc-folder").factory(req)
    assert (train_set.on_bad_sample, val_set.on_bad_sample) == (policy, val_policy)
