from collections import Counter

import numpy as np
import pytest

from rankdml.data import PKSampler


def uneven_labels(seed=0, classes=40):
    rng = np.random.default_rng(seed)
    return rng.permutation(np.repeat(np.arange(classes), rng.integers(4, 11, classes)))


@pytest.mark.parametrize("P,K", [(8, 4), (5, 2), (3, 3)])
def test_batches_have_p_distinct_classes_of_k_distinct_items(P, K):
    labels = uneven_labels()
    for batch in PKSampler(labels, P, K, seed=1):
        assert len(batch) == P * K and len(set(batch)) == P * K
        blocks = labels[np.array(batch)].reshape(P, K)
        assert (blocks == blocks[:, :1]).all()           # K items of one class next to each other
        assert len(set(blocks[:, 0])) == P                # P different classes


def test_every_item_seen_once_per_epoch_except_topups_and_last_classes():
    labels = uneven_labels()
    P, K = 8, 4
    sampler = PKSampler(labels, P, K, seed=3)
    counts = Counter(i for batch in sampler for i in batch)
    # An item appears at most twice (its own chunk and a top-up of its class's short chunk).
    assert max(counts.values()) <= 2
    # Unseen items can only come from the fewer than P classes left over at the end of the epoch.
    unseen_classes = {labels[i] for i in range(len(labels)) if i not in counts}
    assert len(unseen_classes) < P
    # Every chunk is used except those of the last < P classes: batches * P >= chunks - leftovers.
    chunks_per_class = -(-np.bincount(labels) // K)
    assert len(sampler) * P >= chunks_per_class.sum() - (P - 1) * chunks_per_class.max()


def test_seeded_and_epoch_dependent():
    labels = uneven_labels()
    a, b = PKSampler(labels, 6, 3, seed=7), PKSampler(labels, 6, 3, seed=7)
    first_a, first_b = list(a), list(b)
    assert first_a == first_b
    assert list(a) != first_a                 # the next epoch is a different permutation
    b.set_epoch(0)
    assert list(b) == first_a                 # set_epoch replays an epoch (resume)
    assert list(PKSampler(labels, 6, 3, seed=8)) != first_a


def test_len_matches_iteration():
    sampler = PKSampler(uneven_labels(), 8, 4, seed=0)
    n = len(sampler)
    assert n == len(list(sampler))


def test_small_class_needs_replacement():
    labels = np.array([0] * 5 + [1] * 2 + [2] * 6)
    with pytest.raises(ValueError, match="fewer than K = 3"):
        PKSampler(labels, 2, 3)
    batches = list(PKSampler(labels, 2, 3, allow_replacement=True))
    assert batches and all(len(b) == 6 for b in batches)


def test_bad_arguments():
    with pytest.raises(ValueError, match="only 2 classes"):
        PKSampler([0, 0, 1, 1], 3, 2)
    with pytest.raises(ValueError, match="positive"):
        PKSampler([0, 0, 1, 1], 2, 0)
    with pytest.raises(ValueError, match="non-empty"):
        PKSampler([], 2, 2)
