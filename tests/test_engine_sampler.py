"""The training sampler (engine/sampler.py): DistributedSampler's order, able to start an epoch part-way; and the
evaluation's shares."""

import hypothesis.strategies as st
import pytest
from hypothesis import given, settings
from torch.utils.data.distributed import DistributedSampler

from ssdkit.engine.sampler import EvalShard, ResumableSampler, TrainBatches


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


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 70), st.integers(1, 9), st.integers(1, 4))
def test_the_evaluation_shares_are_the_batches_of_one_process_dealt_in_turn(images, batch_size, world):
    alone = list(EvalShard(images, batch_size))
    assert [i for b in alone for i in b] == list(range(images))
    assert all(len(b) == batch_size for b in alone[:-1])
    shares = [list(EvalShard(images, batch_size, rank, world)) for rank in range(world)]
    assert [len(EvalShard(images, batch_size, rank, world)) for rank in range(world)] == [len(s) for s in shares]
    for k, batch in enumerate(alone):  # batch k of the whole is batch k // world of rank k % world
        assert shares[k % world][k // world] == batch
    assert sum(len(s) for s in shares) == len(alone)


def test_an_evaluation_share_needs_a_rank_below_the_world():
    with pytest.raises(ValueError, match="rank < world"):
        EvalShard(10, 4, rank=2, world=2)
