"""The training sampler: ``DistributedSampler``'s shuffle and sharding, able to start an epoch part-way; and the
evaluation's share of each process (:class:`EvalShard`).

Every process of a run (one or many) draws its share of the epoch's permutation, which depends only on
``(seed, epoch)``. ``set_start(n)`` skips this process's first ``n`` samples of the epoch without loading them, so
a run resumed from a checkpoint taken after ``k`` steps replays exactly the batches that were left.
"""

from __future__ import annotations

import itertools
import math

from torch.utils.data import BatchSampler, Sampler
from torch.utils.data.distributed import DistributedSampler

__all__ = ["EvalShard", "ResumableSampler", "TrainBatches"]


class ResumableSampler(DistributedSampler):
    def __init__(self, dataset, num_replicas: int = 1, rank: int = 0, seed: int = 0):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=False)
        self.start = 0

    def set_epoch(self, epoch: int) -> None:
        """Shuffle for ``epoch``, over the data set's length now (an epoch may hold more or fewer images than the
        one before: a time budget's last epoch)."""
        super().set_epoch(epoch)
        self.start = 0
        self.num_samples = math.ceil(len(self.dataset) / self.num_replicas)
        self.total_size = self.num_samples * self.num_replicas

    def set_start(self, samples_done: int) -> None:
        """Begin the current epoch after this process's first ``samples_done`` samples."""
        self.start = max(0, min(int(samples_done), self.num_samples))

    def __iter__(self):
        return itertools.islice(super().__iter__(), self.start, None)

    def __len__(self) -> int:
        return self.num_samples - self.start


class TrainBatches(BatchSampler):
    """Batches of ``batch_size`` from ``sampler``, except that a last batch of a single image joins the batch
    before it (batch norm cannot train on one image when a feature map is 1x1). ``sampler`` may start part-way."""

    def __init__(self, sampler: ResumableSampler, batch_size: int):
        super().__init__(sampler, batch_size, drop_last=False)

    def __iter__(self):
        pending = None
        for batch in super().__iter__():
            if pending is not None:
                if len(batch) == 1:
                    yield pending + batch
                    return
                yield pending
            pending = batch
        if pending is not None:
            yield pending

    def __len__(self) -> int:
        n = super().__len__()
        return n - 1 if n > 1 and len(self.sampler) % self.batch_size == 1 else n


class EvalShard(Sampler[list[int]]):
    """Process ``rank``'s share of the evaluation: the batches ``rank``, ``rank + world``, ... of the data set's
    images in order, ``batch_size`` each (the last may be smaller). The batches are those that one process
    evaluating alone takes, so the detections are the same, and batch ``k`` of this process is batch
    ``k * world + rank`` of the whole (:func:`.validate.evaluate_shared` feeds the metric in that order)."""

    def __init__(self, num_images: int, batch_size: int, rank: int = 0, world: int = 1):
        if batch_size < 1 or not 0 <= rank < world:
            raise ValueError(f"need batch_size >= 1 and 0 <= rank < world, got {batch_size}, {rank}, {world}")
        self.num_images, self.batch_size, self.rank, self.world = int(num_images), int(batch_size), rank, world

    @property
    def batches(self) -> range:
        """This process's batch numbers among those of one process alone."""
        return range(self.rank, math.ceil(self.num_images / self.batch_size), self.world)

    def __iter__(self):
        for b in self.batches:
            yield list(range(b * self.batch_size, min(self.num_images, (b + 1) * self.batch_size)))

    def __len__(self) -> int:
        return len(self.batches)
