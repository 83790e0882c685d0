"""RepMetLoss: every variant against the naive reference, gradients (embeddings and representatives),
v2's floor, the hinge of the CVPR loss by hand, init_from, normalisation, bad inputs."""
from __future__ import annotations

import math

import pytest
import torch

from rankdml.clusters import ClusterIndex
from rankdml.losses import RepMetLoss

from . import reference as ref

VARIANTS = ["cvpr", "v1", "v2", "v3", "radius"]


def _setup(C=4, k=2, dim=5, B=10, seed=0, classes_present=None):
    g = torch.Generator().manual_seed(seed)
    present = torch.arange(C) if classes_present is None else torch.tensor(classes_present)
    y = present[torch.randint(len(present), (B,), generator=g)]
    y[: len(present)] = present  # every listed class at least once
    x = torch.randn(B, dim, generator=g, dtype=torch.float64)
    reps = 0.8 * torch.randn(C * k, dim, generator=g, dtype=torch.float64)
    return x, y, reps


def _loss(C, k, dim, reps, **kw):
    loss = RepMetLoss(C, k, dim, **kw).double()
    loss.init_from(reps)
    return loss


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("sigma,alpha", [(0.5, 0.5), (1.3, 1.0), (0.8, 0.0)])
def test_repmet_matches_reference(variant, k, sigma, alpha):
    x, y, reps = _setup(C=4, k=k, seed=k + int(10 * sigma))
    got = _loss(4, k, 5, reps, variant=variant, sigma=sigma, alpha=alpha)(x, y)
    want = ref.repmet(x.numpy(), y.numpy(), reps.numpy(), k, variant, sigma=sigma, alpha=alpha)
    assert got.item() == pytest.approx(want, abs=1e-6)


@pytest.mark.parametrize("variant", VARIANTS)
def test_repmet_absent_classes_match_reference(variant):
    # classes 1 and 4 of 6 never appear: "radius" must skip their representatives, the others use them
    x, y, reps = _setup(C=6, k=2, seed=3, classes_present=[0, 2, 3, 5])
    got = _loss(6, 2, 5, reps, variant=variant)(x, y)
    assert got.item() == pytest.approx(ref.repmet(x.numpy(), y.numpy(), reps.numpy(), 2, variant), abs=1e-6)


def test_repmet_softmax_mul_matches_reference():
    x, y, reps = _setup(C=4, k=2, seed=4)
    got = _loss(4, 2, 5, reps, softmax_mul=15.0)(x, y)
    want = ref.repmet(x.numpy(), y.numpy(), reps.numpy(), 2, "cvpr", softmax_mul=15.0)
    assert got.item() == pytest.approx(want, abs=1e-6)
    with pytest.raises(ValueError, match="softmax_mul"):
        RepMetLoss(4, 2, 5, variant="v1", softmax_mul=15.0)


@pytest.mark.parametrize("variant", VARIANTS)
def test_repmet_gradcheck(variant):
    # gradients w.r.t. the embeddings and the representatives together
    x, y, reps = _setup(C=3, k=2, dim=3, B=6, seed=5)
    loss = _loss(3, 2, 3, reps, variant=variant, alpha=0.7)
    x = x.clone().requires_grad_(True)
    r = reps.clone().requires_grad_(True)

    def f(e, rr):
        return torch.func.functional_call(loss, {"representatives": rr}, (e, y))

    assert torch.autograd.gradcheck(f, (x, r), eps=1e-6, atol=1e-5)


def test_repmet_normalized_representatives_gradcheck():
    x, y, reps = _setup(C=3, k=2, dim=3, B=6, seed=6)
    loss = _loss(3, 2, 3, reps, normalize_representatives=True)
    want = ref.repmet(x.numpy(), y.numpy(), torch.nn.functional.normalize(reps, dim=1).numpy(), 2, "cvpr")
    assert loss(x, y).item() == pytest.approx(want, abs=1e-6)
    x = x.clone().requires_grad_(True)
    r = reps.clone().requires_grad_(True)  # through the normalisation too
    f = lambda e, rr: torch.func.functional_call(loss, {"representatives": rr}, (e, y))  # noqa: E731
    assert torch.autograd.gradcheck(f, (x, r), eps=1e-6, atol=1e-5)


def test_repmet_v2_floor():
    # v2's ratio sum_own / sum_all is at most 1, so the loss never goes below alpha: even with every item
    # exactly on a representative of its own class its value is alpha + log(1 + sum_other / sum_own) > alpha.
    C, k, dim, sigma, alpha = 5, 1, 2, 0.5, 1.0
    angles = torch.arange(C, dtype=torch.float64) * 2 * math.pi / C
    reps = torch.stack([angles.cos(), angles.sin()], 1)  # unit circle
    y = torch.arange(C)
    x = reps.clone()  # each item on its own representative
    loss = _loss(C, k, dim, reps, variant="v2", sigma=sigma, alpha=alpha)
    s = 1 / (2 * sigma ** 2)
    d2 = [float(((reps[0] - reps[j]) ** 2).sum()) for j in range(1, C)]
    floor = alpha + math.log(1 + sum(math.exp(-s * d) for d in d2))  # formula, by symmetry the same per item
    assert loss(x, y).item() == pytest.approx(floor, abs=1e-12)
    assert floor > alpha
    # and training it cannot push the value below alpha
    x = x.clone().requires_grad_(True)
    opt = torch.optim.SGD([x, loss.representatives], lr=0.1)
    for _ in range(50):
        opt.zero_grad()
        value = loss(x, y)
        value.backward()
        opt.step()
        assert value.item() >= alpha
    # v1 and v3 on the same well-separated layout reach 0 with a small margin
    for variant in ("v1", "v3"):
        assert _loss(C, k, dim, 10 * reps, variant=variant, alpha=0.1)(10 * reps, y).item() == 0.0


def test_repmet_cvpr_hinge_by_hand():
    # one item at 0 in 1-D, class 0 with reps at 1 and 3, class 1 with reps at -2 and 5: closest own d^2 = 1,
    # closest wrong d^2 = 4; hinge [1 - 4 + alpha]_+; posterior P_0 = e^{-2*1}, P_1 = e^{-2*4} (sigma = 0.5)
    reps = torch.tensor([[1.0], [3.0], [-2.0], [5.0]], dtype=torch.float64)
    x, y = torch.zeros(2, 1, dtype=torch.float64), torch.tensor([0, 1])
    x[1] = 10.0  # a second item of class 1 so that the batch has two classes: own 25, other 49
    ce0 = -math.log(math.exp(-2) / (math.exp(-2) + math.exp(-8)))
    ce1 = -math.log(math.exp(-2 * 25) / (math.exp(-2 * 49) + math.exp(-2 * 25)))
    for alpha, hinge0 in [(0.5, 0.0), (4.0, 1.0)]:
        want = (ce0 + hinge0 + ce1 + max(0.0, 25 - 49 + alpha)) / 2
        assert _loss(2, 2, 1, reps, alpha=alpha)(x, y).item() == pytest.approx(want, abs=1e-12)


def test_repmet_init_from_index_and_item_losses():
    g = torch.Generator().manual_seed(7)
    y = torch.arange(3).repeat_interleave(10)
    x = torch.randn(30, 4, generator=g)
    index = ClusterIndex(y, 2).fit(x)
    loss = RepMetLoss(3, 2, 4)
    loss.init_from(index)
    assert torch.equal(loss.representatives.detach(), index.centres)
    assert torch.equal(loss.representative_labels, index.cluster_labels)
    value = loss(x, y)
    assert loss.item_losses.shape == (30,) and loss.item_losses.mean().item() == pytest.approx(value.item(), abs=1e-6)
    with pytest.raises(ValueError, match="k = 3"):
        RepMetLoss(3, 3, 4).init_from(index)
    with pytest.raises(ValueError, match="not fitted"):
        loss.init_from(ClusterIndex(y, 2))
    with pytest.raises(ValueError, match="shape"):
        loss.init_from(torch.zeros(5, 4))
    shifted = ClusterIndex(y + 1, 2).fit(x)
    with pytest.raises(ValueError, match="classes 0..2"):
        RepMetLoss(3, 2, 4).init_from(shifted)


def test_repmet_bad_inputs():
    x, y, reps = _setup(C=4, k=2, seed=8)
    loss = _loss(4, 2, 5, reps)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 4\)"):
        loss(x, y + 4)
    with pytest.raises(ValueError, match="dimension 5"):
        loss(x[:, :3], y)
    with pytest.raises(ValueError, match="distinct classes"):
        loss(x, torch.zeros_like(y))
    with pytest.raises(ValueError, match="NaN"):
        loss(x.clone().fill_(float("nan")), y)
    with pytest.raises(ValueError, match="no mined indices"):
        loss(x, y, indices=(y, y, y))
    with pytest.raises(ValueError, match="variant"):
        RepMetLoss(4, 2, 5, variant="v4")
    with pytest.raises(ValueError, match="sigma"):
        RepMetLoss(4, 2, 5, sigma=0.0)


@pytest.mark.parametrize("variant", VARIANTS)
def test_repmet_follows_device_and_dtype(variant):
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    x, y, reps = _setup(C=4, k=2, seed=9)
    for device in devices:
        loss = _loss(4, 2, 5, reps, variant=variant).float().to(device)
        value = loss(x.float().to(device), y.to(device))
        assert value.device.type == device and value.dtype == torch.float32 and torch.isfinite(value)
