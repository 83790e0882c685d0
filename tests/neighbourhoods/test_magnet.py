"""MagnetLoss: naive reference (both variance conventions), gradients, stability, the running variance,
the cluster contract (explicit clusters, batch indices through an index, K = 1 fallback), bad inputs."""
from __future__ import annotations

import math

import pytest
import torch

from rankdml.clusters import ClusterIndex
from rankdml.losses import LOSSES, MagnetLoss

from . import reference as ref
from .conftest import clustered_batch


@pytest.mark.parametrize("variance", ["paper", "squared"])
@pytest.mark.parametrize("alpha", [0.0, 1.0, 2.5])
@pytest.mark.parametrize("layout", [(3, 2, 3), (2, 1, 4), (4, 3, 2)])
def test_magnet_matches_reference(variance, alpha, layout):
    C, K, D = layout
    x, y, c = clustered_batch(C, K, D, seed=C * 10 + K, spread=0.7)
    got = MagnetLoss(alpha=alpha, variance=variance)(x, y, c)
    want, _ = ref.magnet(x.numpy(), y.numpy(), c.numpy(), alpha=alpha, variance=variance)
    assert got.item() == pytest.approx(want, abs=1e-6)


def test_magnet_unequal_cluster_sizes_and_arbitrary_ids():
    x, y, c = clustered_batch(3, 2, 4, seed=3)
    keep = torch.ones(len(y), dtype=torch.bool)
    keep[:5] = False  # drop a few items: clusters of 2..4 items
    x, y, c = x[keep], y[keep], 100 * c[keep] + 7
    got = MagnetLoss()(x, y, c)
    assert got.item() == pytest.approx(ref.magnet(x.numpy(), y.numpy(), c.numpy())[0], abs=1e-6)
    # the loss depends on the partition, not on the cluster numbers nor the order of items
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    assert MagnetLoss()(x[perm], y[perm], (c[perm] * 3) % 1001).item() == pytest.approx(got.item(), abs=1e-12)


def test_magnet_variances_differ_and_batch_variance_is_reported():
    x, y, c = clustered_batch(3, 2, 3, seed=4, spread=1.5)
    paper, squared = MagnetLoss(variance="paper"), MagnetLoss(variance="squared")
    a, b = paper(x, y, c), squared(x, y, c)
    assert a.item() != pytest.approx(b.item(), abs=1e-3)
    _, sigma2 = ref.magnet(x.numpy(), y.numpy(), c.numpy())
    assert paper.batch_variance.item() == pytest.approx(sigma2, rel=1e-12)
    assert squared.running_variance.item() == pytest.approx(sigma2 ** 2, rel=1e-12)  # v = sigma^4 is kept


@pytest.mark.parametrize("variance", ["paper", "squared"])
def test_magnet_gradcheck(variance):
    x, y, c = clustered_batch(3, 2, 2, dim=3, seed=5, spread=0.8)
    loss = MagnetLoss(alpha=0.3, variance=variance)
    x = x.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda e: loss(e, y, c), (x,), eps=1e-6, atol=1e-5)


def test_magnet_is_stable_for_far_clusters():
    # distances of ~1e4 times sigma^2: a naive exp() underflows to 0/0; log-sum-exp stays finite
    x, y, c = clustered_batch(3, 1, 3, dim=4, seed=6, spread=1e-3)
    x = x * 1e3
    x.requires_grad_(True)
    value = MagnetLoss(alpha=1.0)(x, y, c)
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(x.grad).all()
    assert value.item() == 0.0  # far apart clusters with tight members: every hinge is inactive


def test_magnet_item_losses_match_the_mean():
    x, y, c = clustered_batch(3, 2, 3, seed=7)
    loss = MagnetLoss()
    value = loss(x, y, c)
    assert loss.item_losses.shape == y.shape and not loss.item_losses.requires_grad
    assert loss.item_losses.mean().item() == pytest.approx(value.item(), abs=1e-12)
    assert (loss.item_losses >= 0).all()


@pytest.mark.parametrize("running", ["mean", "ema"])
def test_magnet_running_variance(running):
    loss = MagnetLoss(running=running)
    seen = []
    for seed in range(4):
        x, y, c = clustered_batch(3, 2, 3, seed=20 + seed, spread=0.5 + seed)
        loss(x, y, c)
        seen.append(loss.batch_variance.item())
    if running == "mean":
        want = sum(seen) / len(seen)
    else:  # the original's avg <- (avg + v) / 2, started from the first value
        want = seen[0]
        for v in seen[1:]:
            want = (want + v) / 2
    assert loss.running_variance.item() == pytest.approx(want, rel=1e-12)
    assert int(loss.num_batches) == 4
    loss.eval()
    loss(*clustered_batch(3, 2, 3, seed=99, spread=9.0))
    assert loss.running_variance.item() == pytest.approx(want, rel=1e-12)  # frozen in eval mode
    assert "running_variance" in loss.state_dict()


def test_magnet_without_clusters_is_k1():
    x, y, _ = clustered_batch(3, 2, 3, seed=8)
    assert MagnetLoss()(x, y).item() == pytest.approx(MagnetLoss()(x, y, y).item(), abs=1e-15)
    assert "magnet" in LOSSES and not MagnetLoss().needs_batch_indices


def test_magnet_batch_indices_through_the_index():
    x, y, _ = clustered_batch(4, 2, 6, seed=9, shuffle=False)
    index = ClusterIndex(y, 2).fit(x.float())
    loss = MagnetLoss(index=index)
    assert loss.needs_batch_indices
    bi = torch.tensor([0, 3, 7, 12, 13, 20, 33, 40, 41, 47])
    got = loss(x[bi], y[bi], batch_indices=bi)
    want = MagnetLoss()(x[bi], y[bi], index.assignments[bi])
    assert got.item() == pytest.approx(want.item(), abs=1e-15)
    with pytest.raises(ValueError, match="needs batch_indices"):
        loss(x[bi], y[bi])
    with pytest.raises(ValueError, match="disagree"):
        loss(x[bi], (y[bi] + 2) % 8 + 1, batch_indices=bi)
    with pytest.raises(ValueError, match="no cluster index"):
        MagnetLoss()(x[bi], y[bi], batch_indices=bi)
    with pytest.raises(ValueError, match="no clusters yet"):
        MagnetLoss(index=ClusterIndex(y, 2))(x[bi], y[bi], batch_indices=bi)


def test_magnet_bad_inputs():
    x, y, c = clustered_batch(3, 2, 3, seed=10)
    bad = c.clone()
    bad[y == y[0]] = bad[y != y[0]][0]  # one cluster id spanning two classes
    with pytest.raises(ValueError, match="different labels"):
        MagnetLoss()(x, y, bad)
    with pytest.raises(ValueError, match="clusters must be integers"):
        MagnetLoss()(x, y, c[:-1])
    with pytest.raises(ValueError, match="distinct classes"):
        MagnetLoss()(x, torch.zeros_like(y), c)
    with pytest.raises(ValueError, match="no mined indices"):
        MagnetLoss()(x, y, c, indices=(c, c, c))
    with pytest.raises(ValueError, match="variance"):
        MagnetLoss(variance="sigma4")
    with pytest.raises(ValueError, match="running"):
        MagnetLoss(running="halving")


def test_magnet_degenerate_batch_warns_and_gives_zero():
    x = torch.tensor([[0.0, 0.0], [0.0, 0.0], [3.0, 0.0], [3.0, 0.0]], dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 0, 1, 1])
    with pytest.warns(RuntimeWarning, match="variance is 0"):
        value = MagnetLoss()(x, y)
    assert value.item() == 0.0
    value.backward()
    assert torch.equal(x.grad, torch.zeros_like(x))


def test_magnet_hand_value():
    # two classes, one cluster each, two items per cluster on a line: r = -1, +1 (class 0) and 9, 11 (class 1).
    # means 0 and 10; own distances all 1, sigma^2 = 4 / 3, so 1/(2 sigma^2) = 3/8; the distances to the
    # other class's mean are 121, 81, 81, 121, i.e. 45.375, 30.375, 30.375, 45.375 in units of 2 sigma^2.
    x = torch.tensor([[-1.0], [1.0], [9.0], [11.0]], dtype=torch.float64)
    y = torch.tensor([0, 0, 1, 1])
    # alpha = 50: every hinge active, terms 5, 20, 20, 5
    assert MagnetLoss(alpha=50.0)(x, y).item() == pytest.approx(12.5, abs=1e-12)
    # alpha = 40: the outer items' terms (-5) are cut by the hinge, terms 0, 10, 10, 0
    assert MagnetLoss(alpha=40.0)(x, y).item() == pytest.approx(5.0, abs=1e-12)
    # "squared" divides by 2 sigma^4 = 32/9: terms (1 - 121) 9/32 + alpha etc.
    want = sum(max(0.0, (1 - d) * 9 / 32 + 30.0) for d in (121, 81, 81, 121)) / 4
    assert MagnetLoss(alpha=30.0, variance="squared")(x, y).item() == pytest.approx(want, abs=1e-12)
    assert math.isfinite(want) and want > 0


def test_magnet_float32_tight_clusters_match_float64():
    # unit-norm embeddings in a patch of radius ~1e-2, clusters of radius ~1e-3: sigma^2 ~ 1e-6, where the
    # norm expansion |x|^2 + |mu|^2 - 2 x.mu of the own distances would cancel catastrophically in float32
    # (it gives sigma^2 off by ~35 % here)
    x0, y, c = clustered_batch(3, 2, 4, dim=8, seed=30, spread=1.0)
    x = torch.nn.functional.normalize(torch.ones(8, dtype=torch.float64) + 3e-3 * x0, dim=1)
    want = MagnetLoss(alpha=3.0)(x, y, c)
    loss32 = MagnetLoss(alpha=3.0)
    got = loss32(x.float(), y, c)
    _, sigma2 = ref.magnet(x.numpy(), y.numpy(), c.numpy())
    assert sigma2 < 1e-5 and want.item() > 0.5
    assert loss32.batch_variance.item() == pytest.approx(sigma2, rel=1e-3)
    assert got.item() == pytest.approx(want.item(), rel=1e-2)
