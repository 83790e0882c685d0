"""LiftedStructureLoss, NPairsLoss, AngularLoss: naive references, PML cross-checks, pair layout."""
from __future__ import annotations

import pytest
import torch
from pytorch_metric_learning import distances as pml_distances
from pytorch_metric_learning import losses as pml_losses

from rankdml.losses import AngularLoss, LiftedStructureLoss, NPairsLoss
from reference import losses as ref

from .conftest import make_batch


# --- lifted structure ---------------------------------------------------------------------------

@pytest.mark.parametrize("margin", [1.0, 0.5])
def test_lifted_matches_reference(batch, margin):
    x, y = batch
    got = LiftedStructureLoss(margin=margin)(x, y)
    assert got.item() == pytest.approx(ref.lifted(x.numpy(), y.numpy(), margin), abs=1e-6)


def test_lifted_smooth_matches_reference(batch):
    x, y = batch
    got = LiftedStructureLoss(smooth=True)(x, y)
    assert got.item() == pytest.approx(ref.lifted_generalized(x.numpy(), y.numpy(), 1.0), abs=1e-6)


def test_lifted_matches_pml():
    # Same definition: PML averages relu(J)^2 / 2 over ordered positive pairs = 1/(2|P|) over unordered ones.
    for sizes in [(3, 3, 3, 3), (2, 4, 3), (1, 2, 3, 5)]:
        x, y = make_batch(sizes, seed=11, normalize=False)
        pml = pml_losses.LiftedStructureLoss(neg_margin=1.0, pos_margin=0.0,
                                             distance=pml_distances.LpDistance(normalize_embeddings=False))
        assert LiftedStructureLoss()(x, y).item() == pytest.approx(pml(x, y).item(), abs=1e-6)


def test_lifted_smooth_matches_pml_generalized():
    # PML's GeneralizedLiftedStructureLoss averages over *all* anchors (an anchor without positive gives
    # relu(0 + log-sum-exp of its negatives)); ours averages over anchors with a positive. Equal when every
    # class has at least two samples, as here.
    x, y = make_batch((3, 2, 4), seed=12, normalize=False)
    pml = pml_losses.GeneralizedLiftedStructureLoss(neg_margin=1.0, pos_margin=0.0,
                                                    distance=pml_distances.LpDistance(normalize_embeddings=False))
    assert LiftedStructureLoss(smooth=True)(x, y).item() == pytest.approx(pml(x, y).item(), abs=1e-6)


def test_lifted_is_stable_for_large_distances():
    x, y = make_batch((3, 3, 3), seed=13, normalize=False)
    got = LiftedStructureLoss(margin=1.0)(1e3 * x, y)  # exp(m - D) underflows, exp(D) would overflow
    assert torch.isfinite(got)
    assert LiftedStructureLoss(smooth=True)(1e3 * x, y).isfinite()


@pytest.mark.parametrize("smooth", [False, True])
def test_lifted_gradcheck(smooth):
    x, y = make_batch((2, 3, 2), dim=3, seed=14)
    x.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda e: LiftedStructureLoss(smooth=smooth)(e, y), (x,))


def test_lifted_equal_rows_finite_gradient():
    x, y = make_batch((3, 3), dim=4, seed=15)
    x = x.clone()
    x[1] = x[0]
    x[2] = x[0]
    x.requires_grad_(True)
    LiftedStructureLoss()(x, y).backward()
    assert torch.isfinite(x.grad).all()


# --- N-pairs ------------------------------------------------------------------------------------

@pytest.mark.parametrize("l2_reg", [0.002, 0.0, 0.5])
def test_npairs_matches_reference(pair_batch, l2_reg):
    x, y = pair_batch
    got = NPairsLoss(l2_reg=l2_reg)(3.0 * x, y)
    assert got.item() == pytest.approx(ref.npairs(3.0 * x.numpy(), y.numpy(), l2_reg), abs=1e-6)


def test_npairs_matches_pml(pair_batch):
    # PML's NPairsLoss: same pairs (first two occurrences of each label), dot products, mean cross-entropy;
    # it has no L2 penalty (that would be an embedding_regularizer): compare with l2_reg=0.
    x, y = pair_batch
    assert NPairsLoss(l2_reg=0.0)(x, y).item() == pytest.approx(pml_losses.NPairsLoss()(x, y).item(), abs=1e-6)


def test_npairs_rejects_other_layouts():
    x, y = make_batch((2, 3, 2), seed=16)
    with pytest.raises(ValueError, match="exactly two samples per class.*samples_per_class=2"):
        NPairsLoss()(x, y)
    x, y = make_batch((2, 1, 2), seed=16)
    with pytest.raises(ValueError, match="exactly two samples per class"):
        AngularLoss()(x, y)


def test_npairs_gradcheck():
    x, y = make_batch((2, 2, 2), dim=3, seed=17)
    x.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda e: NPairsLoss()(e, y), (x,))


# --- angular ------------------------------------------------------------------------------------

@pytest.mark.parametrize("kw", [{}, {"alpha_degrees": 36.0, "l2_reg": 0.0},
                                {"combine_npairs": True}, {"combine_npairs": True, "angular_weight": 0.5}])
def test_angular_matches_reference(pair_batch, kw):
    x, y = pair_batch
    got = AngularLoss(**kw)(x, y)
    assert got.item() == pytest.approx(ref.angular(x.numpy(), y.numpy(), **kw), abs=1e-6)


def test_angular_equals_triplet_form_for_one_negative():
    # With N = 2 pairs each anchor has a single negative (the other pair's positive): the loss is the
    # mean of two soft-plus terms of f = 4 t (xa + xp).xn - 2 (1 + t) xa.xp.
    x, y = make_batch((2, 2), seed=18)
    t = torch.tan(torch.deg2rad(torch.tensor(45.0, dtype=torch.float64))) ** 2
    got = AngularLoss(l2_reg=0.0)(x, y)
    a0, a1 = (y == y.min()).nonzero().flatten().tolist()
    b0, b1 = (y == y.max()).nonzero().flatten().tolist()
    f0 = 4 * t * (x[a0] + x[a1]) @ x[b1] - 2 * (1 + t) * x[a0] @ x[a1]
    f1 = 4 * t * (x[b0] + x[b1]) @ x[a1] - 2 * (1 + t) * x[b0] @ x[b1]
    expected = (torch.nn.functional.softplus(f0) + torch.nn.functional.softplus(f1)) / 2
    assert got.item() == pytest.approx(expected.item(), abs=1e-12)


def test_angular_pml_definition_differs():
    # PML's AngularLoss uses, for every ordered positive pair, *all* other-class samples of the batch
    # (anchors and positives) as negatives, and normalises inside; the paper's / TF's N-pair form uses
    # only the other pairs' positives. Not comparable numerically: we only check PML gives a different,
    # larger value here (twice as many negative terms in each log(1 + sum exp)).
    x, y = make_batch((2,) * 5, seed=19)
    pml = pml_losses.AngularLoss(alpha=45)(x, y)
    ours = AngularLoss(l2_reg=0.0)(x, y)
    assert pml.item() > ours.item()


def test_angular_gradcheck():
    x, y = make_batch((2, 2, 2), dim=3, seed=20)
    x.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda e: AngularLoss(combine_npairs=True)(e, y), (x,))
