"""DistributedPKSampler: the ranks' shares, gathered in rank order, are PKSampler's batches."""
from __future__ import annotations

import numpy as np
import pytest

from rankdml.data import DistributedPKSampler, PKSampler


def uneven_labels(seed=0, classes=30):
    rng = np.random.default_rng(seed)
    return rng.permutation(np.repeat(np.arange(classes), rng.integers(4, 9, classes)))


def shards(labels, P, K, world, seed=4):
    return [DistributedPKSampler(PKSampler(labels, P, K, seed=seed), num_replicas=world, rank=r) for r in range(world)]


@pytest.mark.parametrize("world,P,K", [(2, 6, 3), (3, 6, 3), (3, 9, 2), (4, 8, 4), (1, 5, 2)])
def test_union_over_ranks_is_pk_sampler_for_several_epochs(world, P, K):
    labels = uneven_labels()
    reference = PKSampler(labels, P, K, seed=4)
    ranks = shards(labels, P, K, world)
    for epoch in range(3):  # the epoch advances after each full pass, as PKSampler's
        lengths = [len(s) for s in ranks]  # before iterating: len() is the coming epoch's, as PKSampler's
        assert lengths == [len(reference)] * world
        expected = list(reference)
        per_rank = [list(s) for s in ranks]
        assert [len(b) for b in per_rank] == [len(expected)] * world == lengths
        for step, batch in enumerate(expected):
            got = [i for r in range(world) for i in per_rank[r][step]]
            assert got == batch, f"epoch {epoch}, step {step}"
            for r in range(world):
                share = labels[np.array(per_rank[r][step])].reshape(P // world, K)
                assert (share == share[:, :1]).all()  # whole classes, K items each, on one rank
            blocks = labels[np.array(got)].reshape(P, K)
            assert len(set(blocks[:, 0])) == P


def test_set_epoch_is_pk_samplers():
    labels = uneven_labels(1)
    ranks = shards(labels, 6, 2, 2)
    for s in ranks:
        s.set_epoch(5)
    assert all(s.epoch == 5 for s in ranks)
    reference = PKSampler(labels, 6, 2, seed=4)
    reference.set_epoch(5)
    expected = list(reference)
    got = [a + b for a, b in zip(*[list(s) for s in ranks])]
    assert got == expected
    assert all(s.epoch == 6 for s in ranks) and reference.epoch == 6
    # another epoch gives other batches (the check above could not pass by accident)
    reference.set_epoch(0)
    assert list(reference) != expected


def test_p_not_divisible_raises():
    with pytest.raises(ValueError, match="multiple of 4"):
        DistributedPKSampler(PKSampler(uneven_labels(), 6, 2), num_replicas=4, rank=0)


@pytest.mark.parametrize("kwargs", [dict(num_replicas=2, rank=2), dict(num_replicas=0, rank=0),
                                    dict(num_replicas=2, rank=-1)])
def test_bad_rank_raises(kwargs):
    with pytest.raises(ValueError, match="rank"):
        DistributedPKSampler(PKSampler(uneven_labels(), 6, 2), **kwargs)


def test_not_a_pk_sampler_raises():
    with pytest.raises(ValueError, match="PKSampler"):
        DistributedPKSampler([[0, 1], [2, 3]], num_replicas=1, rank=0)


def test_defaults_without_process_group_are_one_rank():
    labels = uneven_labels()
    s = DistributedPKSampler(PKSampler(labels, 4, 2, seed=1))
    assert (s.num_replicas, s.rank) == (1, 0)
    assert list(s) == list(PKSampler(labels, 4, 2, seed=1))
