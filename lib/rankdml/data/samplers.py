"""Batch samplers: P classes x K samples per class.

Ranking losses need positives and negatives inside every batch, so batches are built from
P = `num_classes_per_batch` classes with K = `samples_per_class` images each (B = P K).

The protocol `rankdml.train.fit` relies on: a batch sampler may have `set_epoch(e)` (the batches
of epoch e, also after a resume), `state_dict()` / `load_state_dict()` (saved in checkpoints),
and the class attribute `updates_during_epoch`: True for a sampler that a callback changes
between steps (Magnet's cluster sampler). Such a sampler must draw each batch when it is asked
for it (lazily, in `__iter__`), and `fit` refuses a loader with worker processes for it, because
workers ask for batches ahead of time and would not see the update.
"""
from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Sampler


class PKSampler(Sampler[list[int]]):
    """Yield batches of P distinct classes x K indices each, seeded and epoch-aware.

    Each epoch, every class's indices are shuffled and cut into chunks of K; a class's last,
    short chunk is topped up with other images of the same class, so a chunk never holds an
    index twice. Batches then take one chunk from each of P classes drawn without replacement,
    with probability proportional to their remaining chunks, so large classes are spread over
    the epoch. The epoch ends when fewer than P classes have chunks left; every image is seen
    once per epoch except, at most, the chunks of those last < P classes.

    Args:
        labels: (N,) integer class of every item (e.g. `dataset.labels`).
        num_classes_per_batch: P.
        samples_per_class: K.
        allow_replacement: if False (default), a class with fewer than K items is an error;
            if True, its chunk is filled by drawing its items with replacement (duplicates).
        seed: the batches of epoch e depend only on (seed, e).

    Batches come out as lists of P*K indices, the K items of a class next to each other.
    """

    updates_during_epoch = False  # its batches depend only on (seed, epoch): workers may prefetch them

    def __init__(self, labels: Sequence[int], num_classes_per_batch: int, samples_per_class: int, *,
                 allow_replacement: bool = False, seed: int = 0):
        labels = np.asarray(labels)
        if labels.ndim != 1 or len(labels) == 0:
            raise ValueError(f"expected a non-empty 1-D array of labels, got shape {labels.shape}")
        if num_classes_per_batch < 1 or samples_per_class < 1:
            raise ValueError(f"P and K must be positive, got P={num_classes_per_batch}, K={samples_per_class}")
        classes, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
        if len(classes) < num_classes_per_batch:
            raise ValueError(f"P = {num_classes_per_batch} classes per batch, but the data has only "
                             f"{len(classes)} classes; lower num_classes_per_batch")
        small = counts < samples_per_class
        if small.any() and not allow_replacement:
            raise ValueError(f"{int(small.sum())} classes have fewer than K = {samples_per_class} items "
                             f"(smallest: {int(counts.min())}); lower samples_per_class or pass "
                             f"allow_replacement=True to repeat their items")
        order = np.argsort(inverse, kind="stable")
        self._members = np.split(order, np.cumsum(counts)[:-1])  # item indices of each class
        self.P, self.K = num_classes_per_batch, samples_per_class
        self.allow_replacement = allow_replacement
        self.seed = seed
        self.epoch = 0
        self._plan_cache: tuple[int, list[list[int]]] | None = None

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose batches the next iteration yields (for resuming training)."""
        self.epoch = epoch

    def _chunks(self, members: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
        if len(members) < self.K:
            return [rng.choice(members, size=self.K, replace=True)]
        perm = rng.permutation(members)
        chunks = [perm[i:i + self.K] for i in range(0, len(perm), self.K)]
        short = self.K - len(chunks[-1])
        if short:
            others = rng.choice(perm[:len(perm) - len(chunks[-1])], size=short, replace=False)
            chunks[-1] = np.concatenate([chunks[-1], others])
        return chunks

    def _plan(self, epoch: int) -> list[list[int]]:
        if self._plan_cache is not None and self._plan_cache[0] == epoch:
            return self._plan_cache[1]
        rng = np.random.default_rng([self.seed, epoch])
        chunks = [self._chunks(m, rng) for m in self._members]
        remaining = np.array([len(c) for c in chunks], dtype=np.float64)
        batches = []
        while np.count_nonzero(remaining) >= self.P:
            picked = rng.choice(len(chunks), size=self.P, replace=False, p=remaining / remaining.sum())
            batches.append(np.concatenate([chunks[c][int(len(chunks[c]) - remaining[c])] for c in picked]).tolist())
            remaining[picked] -= 1
        self._plan_cache = (epoch, batches)
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        batches = self._plan(self.epoch)
        self.epoch += 1
        yield from batches

    def __len__(self) -> int:
        return len(self._plan(self.epoch))
