"""ContrastiveLoss: naive reference, PML cross-check, gradients."""
from __future__ import annotations

import pytest
import torch
from pytorch_metric_learning import distances as pml_distances
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning.reducers import DoNothingReducer

from rankdml.losses import ContrastiveLoss
from rankdml.mining import BatchHardMiner
from reference import losses as ref

from .conftest import make_batch


@pytest.mark.parametrize("kw", [{}, {"pos_margin": 0.3, "neg_margin": 1.2}, {"scale": 1.0, "eps": 1e-5}])
def test_contrastive_matches_reference(batch, kw):
    x, y = batch
    got = ContrastiveLoss(**kw)(x, y)
    assert got.dtype == torch.float64
    assert got.item() == pytest.approx(ref.contrastive(x.numpy(), y.numpy(), **kw), abs=1e-6, rel=1e-6)


def test_contrastive_with_mined_triplets_matches_reference(batch):
    x, y = batch
    idx = BatchHardMiner()(x, y)
    trip = list(zip(*(t.tolist() for t in idx)))
    got = ContrastiveLoss(neg_margin=1.5)(x, y, indices=idx)
    assert got.item() == pytest.approx(ref.contrastive(x.numpy(), y.numpy(), neg_margin=1.5, triplets=trip), abs=1e-6)


def test_contrastive_matches_pml(batch):
    # PML's ContrastiveLoss has no square and no 1/2, and averages the non-zero positive and the
    # non-zero negative terms separately (AvgNonZeroReducer). Map: take its per-pair terms
    # (DoNothingReducer), square, halve, and average over all pairs.
    x, y = batch
    pml = pml_losses.ContrastiveLoss(pos_margin=0.1, neg_margin=1.1, reducer=DoNothingReducer(),
                                     distance=pml_distances.LpDistance(normalize_embeddings=False))
    out = pml(x, y)
    pos, neg = out["pos_loss"]["losses"], out["neg_loss"]["losses"]
    expected = 0.5 * ((pos ** 2).sum() + (neg ** 2).sum()) / (pos.numel() + neg.numel())
    got = ContrastiveLoss(pos_margin=0.1, neg_margin=1.1)(x, y)
    assert got.item() == pytest.approx(expected.item(), abs=1e-6)


def test_contrastive_gradcheck():
    x, y = make_batch((2, 3, 2), dim=3, seed=3)
    x.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda e: ContrastiveLoss(pos_margin=0.1, neg_margin=1.5)(e, y), (x,))


@pytest.mark.parametrize("eps", [0.0, 1e-8])
def test_contrastive_equal_rows_finite_gradient(eps):
    x, y = make_batch((3, 3), dim=4, seed=4)
    x = x.clone()
    x[1] = x[0]  # a collapsed pair: same class or not, the distance is exactly 0
    x[2] = x[0]
    x.requires_grad_(True)
    ContrastiveLoss(eps=eps)(x, y).backward()
    assert torch.isfinite(x.grad).all()
