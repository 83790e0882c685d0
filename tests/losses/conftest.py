"""Fixtures for the loss tests: labelled batches of several layouts, in float64."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

# Make `reference` (tests/reference) importable whatever pytest's rootdir/import mode.
_TESTS = str(Path(__file__).resolve().parents[1])
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)


def make_batch(sizes, dim=6, seed=0, labels=None, normalize=True, dtype=torch.float64):
    """A shuffled batch with classes of the given sizes (label values not contiguous)."""
    g = torch.Generator().manual_seed(seed)
    if labels is None:
        labels = torch.cat([torch.full((k,), 3 * c + 1, dtype=torch.long) for c, k in enumerate(sizes)])
    labels = labels[torch.randperm(labels.numel(), generator=g)]
    x = torch.randn(labels.numel(), dim, generator=g, dtype=dtype)
    if normalize:
        x = torch.nn.functional.normalize(x, dim=1)
    return x, labels


LAYOUTS = {
    "pk_4x3_shuffled": (3, 3, 3, 3),
    "unequal_1_2_3_5": (1, 2, 3, 5),
    "unequal_2_4_3": (2, 4, 3),
    "pairs_5x2": (2,) * 5,
}


@pytest.fixture(params=["pk_4x3_shuffled", "unequal_1_2_3_5", "unequal_2_4_3", "pairs_5x2"])
def batch(request):
    return make_batch(LAYOUTS[request.param], seed=list(LAYOUTS).index(request.param))


@pytest.fixture(params=[0, 1, 2])
def pair_batch(request):
    """Exactly two samples per class, shuffled (N-pairs / angular layout)."""
    return make_batch((2,) * 5, seed=10 + request.param)
