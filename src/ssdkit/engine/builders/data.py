"""The data of a run: transforms, the two splits (through the data-set registry), loaders and the per-epoch
set-up of the synthetic set."""

from __future__ import annotations

import os

import torch
from torch.utils.data import DataLoader

from ...data.errors import BadSampleError, NoValidSampleError
from ...data.registry import DatasetRequest, get_dataset_kind
from ..config import ConfigError, TrainConfig, dense_image_size
from ..sampler import EvalShard, ResumableSampler, TrainBatches
from .runtime import worker_init

__all__ = [
    "train_transform",
    "synthetic_object_range",
    "synthetic_image_size",
    "prepare_train_epoch",
    "build_datasets",
    "build_loader",
    "SplitLoader",
    "split_ids",
    "split_overlap",
]


def train_transform(augment: str, data_shape: int):
    """``gluoncv``: GluonCV's full SSD train preset; ``light``: colour distortion + flip + resize; ``none``: resize
    only (the synthetic set's default: it brings new images every epoch, varied in scale and position)."""
    from torchvision.transforms import v2

    from ...data import transforms as T

    if augment == "gluoncv":
        return T.SSDTrainTransform(data_shape)
    if augment == "light":
        return v2.Compose([T.RandomColorDistort(), v2.RandomHorizontalFlip(0.5), T.SSDValTransform(data_shape)])
    return T.SSDValTransform(data_shape)


def synthetic_object_range(cfg: TrainConfig, epoch: int) -> tuple[int, int]:
    """Objects per synthetic training image in epoch ``epoch`` (0-based): ``cfg.synthetic_train_objects`` in the
    first ``cfg.synthetic_dense_epochs`` epochs, the data set's own range (as the val split) after them."""
    from ...data.synthetic import DEFAULT_OBJECT_RANGE

    low, high = cfg.synthetic_train_objects if epoch < cfg.synthetic_dense_epochs else DEFAULT_OBJECT_RANGE
    return low, high


def synthetic_image_size(cfg: TrainConfig, epoch: int) -> int:
    """The size (pixels, square) that synthetic training images of epoch ``epoch`` (0-based) are drawn at: in the
    dense epochs ``cfg.synthetic_dense_scale`` of ``cfg.data_shape`` (cheaper steps early in the run), after them
    ``cfg.data_shape``. Needs the resolved ``cfg.data_shape``."""
    if cfg.data_shape is None:
        raise ValueError("synthetic_image_size needs cfg.data_shape")
    if epoch < cfg.synthetic_dense_epochs:
        return dense_image_size(cfg.data_shape, cfg.synthetic_dense_scale or 1.0)
    return cfg.data_shape


def synthetic_train_sizes(cfg: TrainConfig) -> set[int]:
    """Every size :func:`synthetic_image_size` gives for ``cfg``'s run."""
    return {synthetic_image_size(cfg, 0), synthetic_image_size(cfg, cfg.synthetic_dense_epochs)}


def prepare_train_epoch(train_set, cfg: TrainConfig, epoch: int, transforms: dict | None = None) -> None:
    """Point the training set at epoch ``epoch`` (0-based) before its loader starts (workers copy the set then):
    the synthetic set's new images, how many (the last epoch's may differ: :func:`~ssdkit.engine.budget.epoch_images`),
    its objects per image (:func:`synthetic_object_range`) and the size it draws them at
    (:func:`synthetic_image_size`), with that size's transform from ``transforms`` (size -> transform)."""
    from ..budget import epoch_images

    if hasattr(train_set, "set_epoch"):
        train_set.set_epoch(epoch)
    if cfg.dataset == "synthetic" and hasattr(train_set, "set_num_images"):
        train_set.set_num_images(epoch_images(cfg, epoch))
    if cfg.dataset == "synthetic" and hasattr(train_set, "set_object_range"):
        train_set.set_object_range(*synthetic_object_range(cfg, epoch))
    if cfg.dataset == "synthetic" and transforms and hasattr(train_set, "set_image_size"):
        size = synthetic_image_size(cfg, epoch)
        train_set.set_image_size(size)
        train_set.transform = transforms[size]


def _splits(text: str | None) -> list[str]:
    return [s.strip() for s in (text or "").split(",") if s.strip()]


def build_datasets(cfg: TrainConfig, data_shape: int, train: bool = True, val: bool = True):
    """``(train_set | None, val_set | None, classes)``, transforms attached. Errors name the file or option."""
    from ...data import transforms as T

    try:
        kind = get_dataset_kind(cfg.dataset)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    root = None
    if kind.needs_root:
        root = os.path.expanduser(cfg.data_root or "")
        if not os.path.isdir(root):
            raise ConfigError(f"--data-root {cfg.data_root}: no such folder")
    request = DatasetRequest(
        root=root,
        train_splits=_splits(cfg.train_splits),
        val_splits=_splits(cfg.val_splits),
        classes=tuple(cfg.classes) if cfg.classes else None,
        train_transform=train_transform(cfg.augment, data_shape),
        val_transform=T.SSDValTransform(data_shape),
        train=train,
        val=val,
        on_bad_sample=cfg.on_bad_sample,
        seed=cfg.seed,
        image_size=data_shape,
        options=dict(
            train_size=cfg.synthetic_train_size,
            val_size=cfg.synthetic_val_size,
            fresh=cfg.synthetic_fresh,
            train_objects=synthetic_object_range(cfg, 0),
        ),
    )
    try:
        train_set, val_set = kind.factory(request)
    except (ConfigError, BadSampleError):  # a bad file under --on-bad-sample error: the CLI names the policy
        raise
    except (FileNotFoundError, ValueError) as err:
        raise ConfigError(str(err).strip('"')) from None
    any_set = train_set if train_set is not None else val_set
    classes = tuple(any_set.classes)
    for name, ds in (("train", train_set), ("val", val_set)):
        if ds is not None and len(ds) == 0:
            raise ConfigError(f"the {name} split of --dataset {cfg.dataset} has no usable images")
    return train_set, val_set, classes


def split_ids(dataset, name: str = "") -> list[str]:
    """The image ids of ``dataset`` as strings (the synthetic set: ``<name>/<seed>/<index>``)."""
    ids = getattr(dataset, "image_ids", None)
    if ids is None:
        seed = getattr(dataset, "seed", 0)
        ids = [f"{name}/{seed}/{i}" for i in range(len(dataset))]
    return [str(i) for i in ids]


def split_overlap(train_set, val_set) -> int:
    """How many validation images are also training images, compared by image file (by id without files)."""
    train_paths, val_paths = getattr(train_set, "image_paths", None), getattr(val_set, "image_paths", None)
    if train_paths is not None and val_paths is not None:
        train_keys = {os.path.realpath(p) for p in train_paths}
        return sum(os.path.realpath(p) in train_keys for p in val_paths)
    train_keys = set(split_ids(train_set, "train"))
    return sum(i in train_keys for i in split_ids(val_set, "val"))


class SplitLoader(DataLoader):
    """The loader of one split; ``split`` names it in errors (``"the val split of --dataset voc-folder
    (--val-splits val)"``). A split where no image can be read (:class:`NoValidSampleError`, raised here or in a
    worker) is a :class:`ConfigError`, one line for the command line. With ``evaluation``, batches whose images
    were all dropped (``on_bad_sample="drop"``) are passed over (:func:`~ssdkit.data.collate.nonempty_batches`):
    the evaluation loop gets images to score only. A process's share of the evaluation (:class:`EvalShard`, world > 1)
    whose images are all unreadable gives one batch without images instead, carrying what was dropped: whether the
    whole split is unreadable is told when the shares are gathered (:func:`~ssdkit.engine.validate.evaluate_shared`)."""

    def __init__(self, dataset, split: str, evaluation: bool = False, **kwargs):
        super().__init__(dataset, **kwargs)
        self.split = split
        self.evaluation = evaluation
        # one process's share of an evaluation: its images may all be unreadable while the other shares' are not
        self.share = evaluation and isinstance(self.batch_sampler, EvalShard) and self.batch_sampler.world > 1

    def __iter__(self):
        from ...data.collate import nonempty_batches

        batches = super().__iter__()
        try:
            yield from nonempty_batches(batches, self.share) if self.evaluation else batches
        except NoValidSampleError as err:
            raise ConfigError(f"{self.split}: {err}") from None


def _split_name(cfg: TrainConfig, train: bool) -> str:
    name, splits = ("train", cfg.train_splits) if train else ("val", cfg.val_splits)
    option = f" (--{name}-splits {splits})" if splits else ""
    return f"the {name} split of --dataset {cfg.dataset}{option}"


def build_loader(
    dataset,
    cfg: TrainConfig,
    train: bool,
    anchors: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    shard: tuple[int, int] = (0, 1),
    anchor_grid=None,
    other_sizes: dict | None = None,
) -> DataLoader:
    """A :class:`SplitLoader`. Training loaders compute SSD targets in their workers (``TargetCollate``);
    evaluation loaders only pad, and leave out the images that the val split's ``"drop"`` policy dropped.

    An evaluation loader takes its :class:`EvalShard` of the batches of ``batch_size`` (``shard=(rank, world)``).
    A training loader takes ``batch_size / world`` images a step (:class:`TrainBatches`) from its
    :class:`ResumableSampler` shard (``shard=(rank, world)``; call ``batch_sampler.sampler.set_epoch`` every epoch).
    ``other_sizes`` (``(H, W) -> (anchors, anchor_grid)``) serves training images of other sizes than ``anchors``'.
    """
    from ...data.collate import TargetCollate, detection_collate

    rank, world = shard
    workers = cfg.num_workers
    common = dict(
        split=_split_name(cfg, train),
        num_workers=workers,
        worker_init_fn=worker_init if workers else None,
        generator=generator,
        persistent_workers=False,
        pin_memory=torch.cuda.is_available(),
        prefetch_factor=4 if workers else None,
    )
    if not train:  # each process its share of the batches (all of them in one process)
        shares = EvalShard(len(dataset), cfg.batch_size, rank, world)
        return SplitLoader(dataset, evaluation=True, batch_sampler=shares, collate_fn=detection_collate, **common)
    from ...targets import SSDTargetGenerator

    # no sampling in the targets (negative_mining_ratio=-1): hard negatives are mined in the loss, as GluonCV
    collate = TargetCollate(
        anchors,
        SSDTargetGenerator(
            iou_thresh=cfg.match_iou, negative_mining_ratio=-1, positive_weights=cfg.positive_weights or "anchor"
        ),
        anchor_grid=anchor_grid,
        other_sizes=other_sizes,
    )
    batches = TrainBatches(
        ResumableSampler(dataset, num_replicas=world, rank=rank, seed=cfg.seed), cfg.batch_size // world
    )
    return SplitLoader(dataset, batch_sampler=batches, collate_fn=collate, **common)
