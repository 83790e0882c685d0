"""Properties every loss of rankdml.losses.LOSSES must have."""
from __future__ import annotations

import warnings

import pytest
import torch

from rankdml.losses import LOSSES, make_loss
from rankdml.mining import BatchHardMiner

from .conftest import make_batch

PAIR_LAYOUT = {"npairs", "angular"}  # exactly two samples per class
TAKES_INDICES = {"contrastive", "triplet", "margin"}


def _batch(name, dtype=torch.float64, seed=40):
    sizes = (2,) * 6 if name in PAIR_LAYOUT else (3, 2, 4, 3)
    return make_batch(sizes, dim=8, seed=seed, dtype=dtype)


@pytest.fixture(params=sorted(LOSSES))
def name(request):
    return request.param


def test_registry_and_make_loss(name):
    assert isinstance(make_loss(name), LOSSES[name])
    with pytest.raises(ValueError, match="angular.*contrastive"):
        make_loss("no_such_loss")
    with pytest.raises(TypeError):
        LOSSES[name](0.5)  # hyper-parameters are keyword-only


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_finite_scalar_and_gradient(name, dtype):
    x, y = _batch(name, dtype)
    x.requires_grad_(True)
    loss = make_loss(name).to(dtype)
    value = loss(x, y)
    assert value.shape == () and value.dtype == dtype and torch.isfinite(value)
    value.backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_batch_order_invariance(name):
    x, y = _batch(name)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(1))
    if name in PAIR_LAYOUT:
        # N-pair losses are asymmetric in (anchor, positive) = (first, second occurrence of the class):
        # any permutation that keeps the order *within* each class leaves the loss unchanged.
        for c in y.unique():
            slots = (y[perm] == c).nonzero().flatten()
            perm[slots] = (y == c).nonzero().flatten()
    loss = make_loss(name)
    assert loss(x[perm], y[perm]).item() == pytest.approx(loss(x, y).item(), abs=1e-10)


def test_bad_inputs_raise(name):
    x, y = _batch(name)
    loss = make_loss(name)
    with pytest.raises(ValueError, match="distinct classes"):
        loss(x, torch.zeros_like(y))
    with pytest.raises(ValueError, match="batch size"):
        loss(x, y[:-1])
    bad = x.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        loss(bad, y)
    with pytest.raises(ValueError, match="shape"):
        loss(x[0], y)


def test_all_distinct_labels_give_zero_and_warning(name):
    x, _ = _batch(name)
    y = torch.arange(len(x))
    x.requires_grad_(True)
    with pytest.warns(RuntimeWarning, match="all labels distinct"):
        value = make_loss(name)(x, y)
    assert value.item() == 0.0 and value.requires_grad
    value.backward()
    assert torch.equal(x.grad, torch.zeros_like(x))


def test_mined_indices(name):
    x, y = _batch(name)
    loss = make_loss(name)
    idx = BatchHardMiner()(x, y)
    if name in TAKES_INDICES:
        assert torch.isfinite(loss(x, y, indices=idx))
        empty = tuple(torch.empty(0, dtype=torch.long) for _ in range(3))
        with pytest.warns(RuntimeWarning, match="no triplet"):
            assert loss(x, y, indices=empty).item() == 0.0
    else:
        with pytest.raises(ValueError, match="no mined indices"):
            loss(x, y, indices=idx)


def test_follows_device_and_dtype(name):
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        x, y = _batch(name, torch.float32)
        value = make_loss(name).to(device)(x.to(device), y.to(device))
        assert value.device.type == device and value.dtype == torch.float32
