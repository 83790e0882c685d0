"""MarginLoss: naive reference, PML cross-check, learnable β, param_groups, sampler protocol."""
from __future__ import annotations

import pytest
import torch
from pytorch_metric_learning import distances as pml_distances
from pytorch_metric_learning import losses as pml_losses

from rankdml.losses import MarginLoss, param_groups
from rankdml.masks import all_triplets
from rankdml.mining import DistanceWeightedSampler, SemiHardMiner
from reference import losses as ref

from .conftest import make_batch


@pytest.mark.parametrize("kw", [{}, {"margin": 0.3, "beta": 0.9, "eps": 0.0}, {"nu": 0.1}])
def test_margin_matches_reference(batch, kw):
    x, y = batch
    got = MarginLoss(**kw)(x, y)
    rkw = {"alpha": kw.get("margin", 0.2), "beta": kw.get("beta", 1.2), "nu": kw.get("nu", 0.0),
           "eps": kw.get("eps", 1e-8)}
    assert got.item() == pytest.approx(ref.margin(x.numpy(), y.numpy(), **rkw), abs=1e-6)


def test_margin_per_class_beta_matches_reference():
    x, y = make_batch((3, 2, 4), seed=21, labels=torch.tensor([0] * 3 + [2] * 2 + [3] * 4))
    loss = MarginLoss(num_classes=5)
    with torch.no_grad():
        loss.beta.copy_(torch.tensor([1.0, 1.1, 1.2, 0.9, 1.3]))
    got = loss(x, y)
    assert loss.beta.shape == (5,)
    assert got.item() == pytest.approx(ref.margin(x.numpy(), y.numpy(), beta=[1.0, 1.1, 1.2, 0.9, 1.3]), abs=1e-6)
    got.backward()
    assert loss.beta.grad[1] == 0 and loss.beta.grad[4] == 0  # classes absent from the batch
    with pytest.raises(ValueError, match="num_classes"):
        loss(x, y + 3)


def test_margin_with_sampler_matches_reference_on_its_triplets():
    x, y = make_batch((3, 3, 3, 3), dim=16, seed=22)
    sampler = DistanceWeightedSampler(generator=torch.Generator().manual_seed(0))
    idx = sampler(x, y)
    trip = list(zip(*(t.tolist() for t in idx)))
    got = MarginLoss(sampler=DistanceWeightedSampler(generator=torch.Generator().manual_seed(0)))(x, y)
    assert got.item() == pytest.approx(ref.margin(x.numpy(), y.numpy(), triplets=trip), abs=1e-6)
    # the same triplets through the forward's `indices` (which override the sampler)
    assert MarginLoss()(x, y, indices=idx).item() == pytest.approx(got.item(), abs=1e-12)
    mined = SemiHardMiner()(x, y)
    trip = list(zip(*(t.tolist() for t in mined)))
    assert MarginLoss()(x, y, indices=mined).item() == pytest.approx(
        ref.margin(x.numpy(), y.numpy(), triplets=trip), abs=1e-6)


@pytest.mark.parametrize("per_class", [False, True])
def test_margin_matches_pml(per_class):
    # PML's MarginLoss works on triplets (all of them by default): each triplet gives a positive and a negative
    # term, normalised by the number of non-zero terms -- ours with indices=all_triplets is the same. (Ours
    # without indices uses each pair once.) PML normalises embeddings by default: pass LpDistance(False).
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2])
    x, y = make_batch(None, seed=23, labels=labels)
    kw = {"num_classes": 3} if per_class else {}
    pml = pml_losses.MarginLoss(margin=0.2, beta=1.0, distance=pml_distances.LpDistance(normalize_embeddings=False),
                                **kw)
    ours = MarginLoss(margin=0.2, beta=1.0, eps=0.0, **kw)
    assert ours(x, y, indices=all_triplets(y)).item() == pytest.approx(pml(x, y).item(), abs=1e-6)


def test_margin_no_active_term_gives_zero():
    # all positives at distance 0 and negatives far: every term is 0, the loss is 0 (no 0/0)
    x = torch.tensor([[0.0, 0.0], [0.0, 0.0], [3.0, 0.0], [3.0, 0.0]], dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 0, 1, 1])
    loss = MarginLoss(beta=1.0, eps=0.0)(x, y)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.isfinite(x.grad).all()


def test_margin_beta_learns_and_param_groups():
    x, y = make_batch((3, 3, 3), seed=24)
    model = torch.nn.Linear(6, 6).double()
    loss = MarginLoss()
    groups = param_groups(model, loss, lr=1e-3, beta_lr=0.1)
    assert [g["lr"] for g in groups] == [1e-3, 0.1] and groups[1]["params"][0] is loss.beta
    assert groups[1]["weight_decay"] == 0.0 and len(groups[0]["params"]) == 2
    opt = torch.optim.SGD(groups)
    before = loss.beta.detach().clone()
    loss(torch.nn.functional.normalize(model(x), dim=1), y).backward()
    opt.step()
    assert not torch.equal(before, loss.beta.detach())
    fixed = MarginLoss(learn_beta=False)
    assert not isinstance(fixed.beta, torch.nn.Parameter) and list(fixed.parameters()) == []
    assert len(param_groups(model, fixed, lr=1e-3, beta_lr=0.1)) == 1


def test_margin_gradcheck():
    """Gradients w.r.t. the embeddings and β (β passed in as a plain tensor so gradcheck perturbs it)."""
    x, y = make_batch((2, 3, 2), dim=3, seed=25)
    x.requires_grad_(True)
    beta = torch.tensor([0.9], dtype=torch.float64, requires_grad=True)

    def f(e, b):
        loss = MarginLoss(learn_beta=False)
        loss.beta = b  # β is a buffer when not learned; a tensor that requires grad may replace it
        return loss(e, y)

    assert torch.autograd.gradcheck(f, (x, beta))


def test_margin_equal_rows_finite_gradient():
    x, y = make_batch((3, 3), dim=4, seed=26)
    x = x.clone()
    x[1] = x[0]
    x[2] = x[0]
    x.requires_grad_(True)
    for eps in (1e-8, 0.0):
        x.grad = None
        MarginLoss(eps=eps)(x, y).backward()
        assert torch.isfinite(x.grad).all()
