"""The validation hold-out within the training classes: per class (default) and by class, seeded."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from rankdml.data.base import ArrayDataset
from rankdml.data.holdout import LabelledSubset, holdout_indices, holdout_split


def _labels():
    # class sizes 10, 3, 1, 7, 2 in a shuffled order
    y = np.repeat(np.arange(5), [10, 3, 1, 7, 2])
    return np.random.default_rng(0).permutation(y)


@pytest.mark.parametrize("selection", ["random", "ordered"])
def test_per_class_holdout_counts_cover_and_disjoint(selection):
    y = _labels()
    train, val = holdout_indices(y, train_fraction=0.85, selection=selection, seed=3)
    assert len(np.intersect1d(train, val)) == 0 and np.array_equal(np.sort(np.r_[train, val]), np.arange(len(y)))
    n_train = np.bincount(y[train], minlength=5)
    # floor(n * 0.85) kept in 1..n-1: 10 -> 8, 3 -> 2, 1 -> 1 (no validation), 7 -> 5, 2 -> 1
    assert n_train.tolist() == [8, 2, 1, 5, 1]
    assert np.bincount(y[val], minlength=5).tolist() == [2, 1, 0, 2, 1]


def test_ordered_per_class_is_evenly_spaced_as_the_cub_split():
    y = np.zeros(10, dtype=np.int64)
    train, val = holdout_indices(y, train_fraction=0.85, selection="ordered")
    # round(linspace(0, 9, 8)) = round([0, 1.29, 2.57, 3.86, 5.14, 6.43, 7.71, 9])
    assert train.tolist() == [0, 1, 3, 4, 5, 6, 8, 9] and val.tolist() == [2, 7]


def test_random_holdout_is_seeded():
    y = _labels()
    a = holdout_indices(y, seed=1)
    b = holdout_indices(y, seed=1)
    c = holdout_indices(y, seed=2)
    assert all(np.array_equal(u, v) for u, v in zip(a, b))
    assert not all(np.array_equal(u, v) for u, v in zip(a, c))


def test_by_class_holdout():
    y = np.repeat(np.arange(10), 3)
    train, val = holdout_indices(y, train_fraction=0.75, by="class", seed=0)
    tc, vc = set(y[train].tolist()), set(y[val].tolist())
    assert not tc & vc and len(tc) == 7 and len(vc) == 3  # floor(10 * 0.75) = 7 classes train
    train, val = holdout_indices(y, train_fraction=0.75, by="class", selection="ordered")
    assert set(y[train].tolist()) == set(range(7))  # the first classes, as the original's SOP split


def test_holdout_split_datasets_keep_labels():
    y = _labels()
    images = np.arange(len(y) * 4 * 4 * 3, dtype=np.uint8).reshape(len(y), 4, 4, 3)
    ds = ArrayDataset(images, y, [f"c{i}" for i in range(5)])
    train, val = holdout_split(ds, seed=0)
    assert isinstance(train, LabelledSubset) and len(train) + len(val) == len(ds)
    assert np.array_equal(train.labels, y[train.indices]) and val.class_names == ds.class_names
    x, label = val[0]
    assert label == int(y[val.indices[0]]) and torch.equal(x, ds[int(val.indices[0])][0])


def test_bad_input_raises():
    with pytest.raises(ValueError, match="train_fraction"):
        holdout_indices([0, 0, 1, 1], train_fraction=1.0)
    with pytest.raises(ValueError, match="by must be"):
        holdout_indices([0, 0, 1, 1], by="images")
    with pytest.raises(ValueError, match="selection"):
        holdout_indices([0, 0, 1, 1], selection="first")
    with pytest.raises(ValueError, match="integer labels"):
        holdout_indices([0.5, 1.0])
    with pytest.raises(ValueError, match="2 classes"):
        holdout_indices([0, 0, 0], by="class")
    with pytest.raises(ValueError, match="labels"):
        holdout_split(torch.utils.data.TensorDataset(torch.zeros(3)))
