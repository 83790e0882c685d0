"""A validation split held out *within* the training classes (PADS's reward set), seeded.

Two ways, both deterministic for a given seed:

* ``by="image"`` (default; the PADS supplement found it works much better than holding out
  classes): every class keeps ``floor(n_c * train_fraction)`` of its images for training and gives
  the rest to validation, so both splits contain every class;
* ``by="class"``: ``floor(C * train_fraction)`` classes train, the other classes validate
  (the original's SOP split).

``selection="random"`` (default) draws the images / classes with ``numpy.random.default_rng(seed)``
(the original's CARS196 split is random per class); ``selection="ordered"`` takes, per class, the
images at ``round(linspace(0, n_c - 1, n_train))`` (the original's CUB200 split) or, by class, the
first classes in label order (its SOP split).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from torch.utils.data import Dataset

__all__ = ["holdout_indices", "holdout_split", "LabelledSubset"]


def _num_train(n: int, fraction: float) -> int:
    """floor(n * fraction), kept in 1..n-1 so that both sides are non-empty (n >= 2); n = 1 trains."""
    if n == 1:
        return 1
    return int(min(n - 1, max(1, np.floor(n * fraction))))


def holdout_indices(labels: Sequence[int], *, train_fraction: float = 0.85, by: str = "image",
                    selection: str = "random", seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Split item indices 0..N-1 into (train, val), both sorted int64 arrays.

    Args:
        labels: (N,) class of every item.
        train_fraction: share kept for training (``--train_val_split``, default 0.85; 0.9 for CARS196 and SOP).
        by: "image" (per-class hold-out) or "class" (``--train_val_split_by_class``).
        selection: "random" (seeded) or "ordered" (evenly spaced images / first classes).
        seed: seed of the random selection.

    With ``by="image"`` a class with one image stays in training, and every class of >= 2 images
    keeps at least one image on each side (the original's floor can leave a class without training
    images). With ``by="class"`` at least one class goes to each side.
    """
    y = np.asarray(labels)
    if y.ndim != 1 or len(y) == 0 or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"holdout_indices: expected a non-empty 1-D array of integer labels, got shape {y.shape}")
    if not 0.0 < train_fraction < 1.0:
        raise ValueError(f"holdout_indices: train_fraction must lie in (0, 1), got {train_fraction}")
    if by not in ("image", "class"):
        raise ValueError(f"holdout_indices: by must be 'image' (per-class hold-out) or 'class', got {by!r}")
    if selection not in ("random", "ordered"):
        raise ValueError(f"holdout_indices: selection must be 'random' or 'ordered', got {selection!r}")
    rng = np.random.default_rng(seed)
    classes = np.unique(y)
    train = np.zeros(len(y), dtype=bool)
    if by == "class":
        if len(classes) < 2:
            raise ValueError("holdout_indices: by='class' needs at least 2 classes")
        n = _num_train(len(classes), train_fraction)
        chosen = rng.permutation(len(classes))[:n] if selection == "random" else np.arange(n)
        train = np.isin(y, classes[chosen])
    else:
        for c in classes:
            members = np.flatnonzero(y == c)  # in data set order
            n = _num_train(len(members), train_fraction)
            if selection == "random":
                keep = rng.permutation(len(members))[:n]
            else:
                keep = np.unique(np.round(np.linspace(0, len(members) - 1, n)).astype(np.int64))
            train[members[keep]] = True
    return np.flatnonzero(train).astype(np.int64), np.flatnonzero(~train).astype(np.int64)


class LabelledSubset(Dataset):
    """The items `indices` of a labelled data set, with its `labels` (original class ids) and `class_names`."""

    def __init__(self, dataset: Dataset, indices: Sequence[int], split: str = "subset"):
        if not hasattr(dataset, "labels"):
            raise ValueError("LabelledSubset: the data set must expose `labels` (every rankdml data set does)")
        self.dataset = dataset
        self.indices = np.asarray(indices, dtype=np.int64)
        self.labels = np.asarray(dataset.labels, dtype=np.int64)[self.indices]
        self.class_names = list(getattr(dataset, "class_names", []))
        self.split = split

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int):
        return self.dataset[int(self.indices[index])]

    def __repr__(self) -> str:
        return (f"LabelledSubset(split={self.split!r}, items={len(self)}, "
                f"classes present={len(np.unique(self.labels))})")


def holdout_split(dataset: Dataset, *, train_fraction: float = 0.85, by: str = "image", selection: str = "random",
                  seed: int = 0) -> tuple[LabelledSubset, LabelledSubset]:
    """(train, val) :class:`LabelledSubset` of a labelled data set; see :func:`holdout_indices`.

    Labels keep their values (a per-class β of the margin loss still indexes the same classes).
    """
    if not hasattr(dataset, "labels"):
        raise ValueError("holdout_split: the data set must expose `labels` (every rankdml data set does)")
    train, val = holdout_indices(dataset.labels, train_fraction=train_fraction, by=by, selection=selection, seed=seed)
    return LabelledSubset(dataset, train, "train"), LabelledSubset(dataset, val, "val")
