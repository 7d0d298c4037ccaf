"""The training sampler (engine/sampler.py): DistributedSampler's order, able to start an epoch part-way."""

import pytest
from torch.utils.data.distributed import DistributedSampler

from ssdkit.engine.sampler import ResumableSampler, TrainBatches


@pytest.mark.parametrize("world", [1, 2, 3])
def test_the_order_is_distributed_samplers_and_a_late_start_takes_its_tail(world):
    data = list(range(23))
    for rank in range(world):
        ours, theirs = ResumableSampler(data, world, rank, seed=4), DistributedSampler(data, world, rank, seed=4)
        ours.set_epoch(3)
        theirs.set_epoch(3)
        full = list(ours)
        assert full == list(theirs) and len(ours) == len(full)
        ours.set_start(5)
        assert list(ours) == full[5:] and len(ours) == len(full) - 5
        ours.set_epoch(4)  # a new epoch starts from its beginning
        assert len(list(ours)) == len(full)


@pytest.mark.parametrize("n,size", [(9, 4), (8, 4), (5, 2), (1, 4), (3, 2)])
def test_a_lone_last_image_joins_the_batch_before_it_and_every_image_is_used(n, size):
    sampler = ResumableSampler(list(range(n)), seed=1)
    batches = list(TrainBatches(sampler, size))
    assert sorted(i for b in batches for i in b) == list(range(n)) and len(batches) == len(TrainBatches(sampler, size))
    assert all(len(b) > 1 for b in batches) or n == 1


def test_a_new_epoch_follows_the_data_sets_length():
    """A time budget may give the last epoch more images: the sampler's next epoch covers the set as it is then."""
    data = list(range(10))
    sampler = ResumableSampler(data, 2, 1, seed=3)
    sampler.set_epoch(0)
    assert len(sampler) == 5
    data.extend(range(10, 17))
    sampler.set_epoch(1)
    theirs = DistributedSampler(data, 2, 1, seed=3)
    theirs.set_epoch(1)
    assert list(sampler) == list(theirs) and len(sampler) == 9
