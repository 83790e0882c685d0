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


def _contrastive_by_autograd(x, y, *, pos_margin=0.0, neg_margin=1.0, scale=0.5, eps=0.0):
    """The same formula through `pairwise_distances` and autograd: what the hand-written backward must equal."""
    from rankdml.distances import pairwise_distances

    b = x.shape[0]
    dist = pairwise_distances(x, eps=eps)
    same = y[:, None] == y[None, :]
    hinge = torch.where(same, dist - pos_margin, neg_margin - dist).clamp(min=0)
    hinge = hinge.masked_fill(torch.eye(b, dtype=torch.bool), 0.0)
    return scale * hinge.square().sum() / (b * (b - 1))


@pytest.mark.parametrize("layout", [(2, 2), (3, 3, 3), (4, 1, 2, 5), (2,) * 8])
@pytest.mark.parametrize("kw", [{}, {"pos_margin": 0.2, "neg_margin": 1.4, "eps": 1e-4},
                                {"pos_margin": -0.1, "neg_margin": 0.8, "scale": 1.0}])
@pytest.mark.parametrize("collapse", [False, True])
def test_contrastive_backward_equals_autograd(layout, kw, collapse):
    x, y = make_batch(layout, dim=5, seed=len(layout))
    if collapse:  # rows that coincide (a same-class pair and a cross-class pair): D = 0 there
        x = x.clone()
        x[1] = x[0]
        x[-1] = x[0]
    a = x.clone().requires_grad_(True)
    b = x.clone().requires_grad_(True)
    got, want = ContrastiveLoss(**kw)(a, y), _contrastive_by_autograd(b, y, **kw)
    got.backward()
    want.backward()
    assert got.item() == pytest.approx(want.item(), abs=1e-12, rel=1e-12)
    # Where rows coincide D^2 is rounding-sized and 1/D amplifies its last bits on both sides.
    tol = 1e-8 if collapse else 1e-10
    torch.testing.assert_close(a.grad, b.grad, atol=tol, rtol=tol)


def test_contrastive_gradcheck_eps_and_negative_pos_margin():
    x, y = make_batch((3, 2, 2), dim=4, seed=5)
    x.requires_grad_(True)
    loss = ContrastiveLoss(pos_margin=-0.05, neg_margin=1.3, eps=1e-3)
    assert torch.autograd.gradcheck(lambda e: loss(e, y), (x,))


def test_contrastive_gradient_scales_with_upstream():
    # The hand-written backward must multiply by the incoming gradient (here 3), not assume 1.
    x, y = make_batch((3, 3), dim=4, seed=6)
    a, b = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    (3.0 * ContrastiveLoss()(a, y)).backward()
    ContrastiveLoss()(b, y).backward()
    torch.testing.assert_close(a.grad, 3.0 * b.grad, atol=1e-12, rtol=1e-12)
