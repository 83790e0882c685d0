"""NormSoftmaxLoss: a plain loop of the formula, pytorch-metric-learning, gradients and bad input."""
from __future__ import annotations

import math

import pytest
import torch
from pytorch_metric_learning import losses as pml_losses

from rankdml.losses import NormSoftmaxLoss


def _batch(b=9, d=5, c=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, d, generator=g, dtype=torch.float64)
    y = torch.randint(0, c, (b,), generator=g)
    return x, y


def _loop(x, y, w, tau):
    """-1/B sum_i log softmax_c(x̂_i . ŵ_c / tau)[y_i], written element by element from the formula."""
    total = 0.0
    for i in range(x.shape[0]):
        xi = [float(v) for v in x[i]]
        nx = math.sqrt(sum(v * v for v in xi))
        logits = []
        for wc in w:
            wc = [float(v) for v in wc]
            nw = math.sqrt(sum(v * v for v in wc))
            logits.append(sum(a * b for a, b in zip(xi, wc)) / (nx * nw) / tau)
        top = max(logits)
        log_z = top + math.log(sum(math.exp(v - top) for v in logits))
        total += log_z - logits[int(y[i])]
    return total / x.shape[0]


@pytest.mark.parametrize("tau", [0.05, 0.7])
@pytest.mark.parametrize("normalised", [False, True])
def test_norm_softmax_matches_loop(tau, normalised):
    x, y = _batch(seed=int(tau * 100))
    if normalised:
        x = torch.nn.functional.normalize(x, dim=1)
    loss = NormSoftmaxLoss(4, 5, temperature=tau).double()
    got = loss(x, y)
    assert got.item() == pytest.approx(_loop(x, y, loss.proxies.detach(), tau), abs=1e-12, rel=1e-12)


def test_norm_softmax_is_scale_invariant():
    x, y = _batch(seed=3)
    loss = NormSoftmaxLoss(4, 5).double()
    scales = torch.tensor([0.01, 1.0, 7.0, 300.0, 2.0, 0.5, 9.0, 1e3, 4.0], dtype=torch.float64)[:, None]
    torch.testing.assert_close(loss(x * scales, y), loss(x, y), atol=1e-12, rtol=1e-12)


def test_norm_softmax_matches_pml():
    x, y = _batch(b=12, d=6, c=5, seed=4)
    ours = NormSoftmaxLoss(5, 6, temperature=0.1).double()
    theirs = pml_losses.NormalizedSoftmaxLoss(5, 6, temperature=0.1)
    theirs.W.data = ours.proxies.detach().T.clone()  # PML keeps its proxies as W (D, C)
    assert ours(x, y).item() == pytest.approx(theirs(x, y).item(), abs=1e-12, rel=1e-12)


def test_norm_softmax_gradcheck_embeddings_and_proxies():
    x, y = _batch(b=6, d=3, c=3, seed=5)
    loss = NormSoftmaxLoss(3, 3, temperature=0.3).double()
    x.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda e: loss(e, y), (x,))
    w = loss.proxies.detach().clone().requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda p: torch.func.functional_call(loss, {"proxies": p}, (x.detach(), y)), (w,))


def test_norm_softmax_zero_embedding_is_finite():
    # A zero row has no direction: its norm is clamped (as F.normalize does), its logits are 0.
    x, y = _batch(seed=6)
    x = x.clone()
    x[2] = 0.0
    x.requires_grad_(True)
    loss = NormSoftmaxLoss(4, 5).double()(x, y)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(x.grad).all()


def test_norm_softmax_bad_input():
    x, y = _batch()
    loss = NormSoftmaxLoss(4, 5).double()
    with pytest.raises(ValueError, match="5-d embeddings, got 3-d"):
        loss(x[:, :3], y)
    with pytest.raises(ValueError, match=r"labels must lie in 0\.\.3"):
        loss(x, torch.where(y == 0, torch.full_like(y, 4), y))
    with pytest.raises(ValueError, match=r"got -1\.\."):
        loss(x, torch.where(y == 0, torch.full_like(y, -1), y))
    with pytest.raises(ValueError, match="batch size"):
        loss(x, y[:-1])
    for bad in (float("nan"), float("inf")):
        z = x.clone()
        z[1, 2] = bad
        with pytest.raises(ValueError, match="embeddings contain NaN or inf"):
            loss(z, y)
    with torch.no_grad():
        loss.proxies[1, 0] = float("nan")
    with pytest.raises(ValueError, match="proxies contain NaN"):
        loss(x, y)
    for kw in ({"num_classes": 1, "embedding_dim": 5}, {"num_classes": 3, "embedding_dim": 5, "temperature": 0.0}):
        with pytest.raises(ValueError, match="num_classes >= 2 and temperature > 0"):
            NormSoftmaxLoss(**kw)
