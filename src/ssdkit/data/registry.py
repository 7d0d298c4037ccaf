"""Data-set registry: ``register_dataset(name, factory)``, as the models' ``register_model``.

A factory turns a :class:`DatasetRequest` into ``(train_set | None, val_set | None)``, transforms attached. It
raises ``ValueError`` / ``FileNotFoundError`` naming the file or argument at fault. The val set takes the policy
``req.val_on_bad_sample`` (``"drop"`` for ``"skip"``: an unreadable validation image is left out, not replaced).
The four built-in kinds (``synthetic``, ``voc``, ``voc-folder``, ``coco``) are registered below; your own kind
plugs in the same way:

    @register_dataset("my-set", needs_root=True)
    def my_set(req):
        return (
            MyTrain(req.root, transform=req.train_transform, on_bad_sample=req.on_bad_sample),
            MyVal(req.root, transform=req.val_transform, on_bad_sample=req.val_on_bad_sample),
        )
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

__all__ = ["DatasetRequest", "DatasetKind", "register_dataset", "get_dataset_kind", "list_datasets"]


@dataclass
class DatasetRequest:
    """What a factory is asked to build. ``train`` / ``val`` say which splits are wanted."""

    root: str | None = None
    train_splits: list[str] = field(default_factory=list)
    val_splits: list[str] = field(default_factory=list)
    classes: tuple[str, ...] | None = None
    train_transform: Callable | None = None
    val_transform: Callable | None = None
    train: bool = True
    val: bool = True
    on_bad_sample: str = "skip"
    seed: int = 0
    image_size: int = 300
    options: dict[str, Any] = field(default_factory=dict)  # kind-specific (synthetic sizes, object ranges)

    @property
    def val_on_bad_sample(self) -> str:
        """The val split's policy: ``"skip"`` becomes ``"drop"``, since an image standing in for an unreadable one
        would be scored twice (see :mod:`ssdkit.data.errors`)."""
        return "drop" if self.on_bad_sample == "skip" else self.on_bad_sample


@dataclass(frozen=True)
class DatasetKind:
    name: str
    factory: Callable[[DatasetRequest], tuple[Any, Any]]
    needs_root: bool = True


_REGISTRY: dict[str, DatasetKind] = {}


def register_dataset(name: str, factory: Callable | None = None, needs_root: bool = True):
    """Register ``factory(request) -> (train_set, val_set)`` under ``name``; usable as a decorator."""

    def _add(fn: Callable) -> Callable:
        if name in _REGISTRY:
            raise ValueError(f"data set kind {name!r} is already registered")
        _REGISTRY[name] = DatasetKind(name, fn, needs_root)
        return fn

    return _add(factory) if factory is not None else _add


def get_dataset_kind(name: str) -> DatasetKind:
    if name not in _REGISTRY:
        raise ValueError(f"unknown data set kind {name!r}; choose one of: {', '.join(list_datasets())}")
    return _REGISTRY[name]


def list_datasets() -> list[str]:
    return sorted(_REGISTRY)


@register_dataset("synthetic", needs_root=False)
def _synthetic(req: DatasetRequest):
    from .synthetic import SyntheticShapes

    kw: dict[str, Any] = dict(image_size=req.image_size)
    if req.classes:
        kw["classes"] = tuple(req.classes)
    opts = req.options
    train_set = val_set = None
    if req.train:
        low, high = opts.get("train_objects", (1, 10))
        train_set = SyntheticShapes(
            opts.get("train_size", 4000),
            seed=req.seed,
            transform=req.train_transform,
            fresh_per_epoch=opts.get("fresh", True),
            min_objects=low,
            max_objects=high,
            **kw,
        )
    if req.val:
        val_set = SyntheticShapes(
            opts.get("val_size", 500), seed=req.seed + 1_000_003, transform=req.val_transform, **kw
        )
    return train_set, val_set


@register_dataset("voc")
def _voc(req: DatasetRequest):
    from .voc import VOC_CLASSES, VOCDetection

    unknown = [c for c in req.classes or () if c not in VOC_CLASSES]
    if unknown:
        raise ValueError(f"--classes: {', '.join(unknown)} not among the 20 VOC classes")
    classes = tuple(req.classes) if req.classes else VOC_CLASSES
    train_set = val_set = None
    if req.train:
        train_set = VOCDetection(
            req.root, req.train_splits, req.train_transform, classes, on_bad_sample=req.on_bad_sample
        )
    if req.val:
        val_set = VOCDetection(
            req.root, req.val_splits, req.val_transform, classes, on_bad_sample=req.val_on_bad_sample
        )
    return train_set, val_set


@register_dataset("voc-folder")
def _voc_folder(req: DatasetRequest):
    from .voc import VOCFolder

    def make(splits, transform, classes, on_bad_sample):
        return VOCFolder(
            req.root, classes=classes, split=",".join(splits) or None, transform=transform, on_bad_sample=on_bad_sample
        )

    train_set = make(req.train_splits, req.train_transform, req.classes, req.on_bad_sample) if req.train else None
    val_set = None
    if req.val:
        classes = req.classes or (train_set.classes if train_set else None)
        val_set = make(req.val_splits, req.val_transform, classes, req.val_on_bad_sample)
    if train_set is not None and val_set is not None and tuple(val_set.classes) != tuple(train_set.classes):
        raise ValueError(
            f"train and val splits disagree on the classes: {tuple(train_set.classes)} vs {tuple(val_set.classes)}"
        )
    return train_set, val_set


@register_dataset("coco")
def _coco(req: DatasetRequest):
    from .coco import COCODetection

    def make(splits, transform, train):  # GluonCV skips images without boxes for training only
        policy = req.on_bad_sample if train else req.val_on_bad_sample
        return COCODetection(req.root, splits=splits, transform=transform, skip_empty=train, on_bad_sample=policy)

    train_set = make(req.train_splits, req.train_transform, True) if req.train else None
    val_set = make(req.val_splits, req.val_transform, False) if req.val else None
    return train_set, val_set
