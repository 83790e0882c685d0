"""Miners, DistanceWeightedSampler, masks and distances as the losses use them."""
from __future__ import annotations

import pytest
import torch

from rankdml.distances import cosine_similarity, pairwise_distances, pairwise_squared_distances
from rankdml.masks import all_triplets, check_triplets, positive_mask, triplet_mask, two_per_class
from rankdml.mining import BatchHardMiner, DistanceWeightedSampler, SemiHardMiner
from reference import losses as ref

from .conftest import make_batch


def test_distances_match_cdist():
    x, _ = make_batch((3, 4), seed=30, normalize=False)
    y = x[:5] + 0.1
    assert torch.allclose(pairwise_distances(x, y), torch.cdist(x, y), atol=1e-12)
    sq = pairwise_squared_distances(x)
    assert (sq.diagonal() == 0).all() and (sq >= 0).all()
    assert torch.allclose(pairwise_distances(x, eps=1e-8), torch.sqrt(torch.cdist(x, x) ** 2 + 1e-8), atol=1e-12)
    assert torch.allclose(cosine_similarity(x), torch.nn.functional.normalize(x, dim=1) @
                          torch.nn.functional.normalize(x, dim=1).T)


def test_distance_gradient_is_finite_at_zero():
    x = torch.tensor([[1.0, 2.0], [1.0, 2.0], [0.0, 0.5]], dtype=torch.float64, requires_grad=True)
    d = pairwise_distances(x)
    assert d[0, 1] == 0 and d[0, 0] == 0
    d.sum().backward()
    assert torch.isfinite(x.grad).all()


def test_all_triplets_equals_cube_mask(batch):
    _, y = batch
    a, p, n = all_triplets(y)
    cube = torch.zeros(len(y), len(y), len(y), dtype=torch.bool)
    cube[a, p, n] = True
    assert torch.equal(cube, triplet_mask(y)) and a.numel() == int(triplet_mask(y).sum())


def test_two_per_class_any_order():
    y = torch.tensor([7, 3, 3, 9, 7, 9])
    a, p = two_per_class(y)
    assert a.tolist() == [1, 0, 3] and p.tolist() == [2, 4, 5]


def test_check_triplets_rejects_bad_indices():
    y = torch.tensor([0, 0, 1, 1])
    t = torch.tensor
    with pytest.raises(ValueError, match="share its anchor's label"):
        check_triplets((t([0]), t([2]), t([3])), y)
    with pytest.raises(ValueError, match="label different"):
        check_triplets((t([0]), t([1]), t([1])), y)
    with pytest.raises(ValueError, match="out of range"):
        check_triplets((t([0]), t([1]), t([9])), y)
    with pytest.raises(ValueError, match="three"):
        check_triplets((t([0]), t([1])), y)


@pytest.mark.parametrize("miner", [BatchHardMiner(), SemiHardMiner(), DistanceWeightedSampler()])
def test_miners_return_valid_triplets(batch, miner):
    x, y = batch
    a, p, n = miner(x, y)
    assert a.dtype == p.dtype == n.dtype == torch.long
    assert ((y[a] == y[p]) & (a != p)).all() and (y[a] != y[n]).all()
    assert not any(t.requires_grad for t in (a, p, n))


def test_batch_hard_miner_matches_reference(batch):
    x, y = batch
    got = sorted(zip(*(t.tolist() for t in BatchHardMiner()(x, y))))
    assert got == sorted(ref.batch_hard_triplets(x.numpy(), y.numpy()))


def test_semi_hard_miner_matches_reference(batch):
    x, y = batch
    got = sorted(zip(*(t.tolist() for t in SemiHardMiner()(x, y))))
    assert got == sorted(ref.semi_hard_triplets(x.numpy(), y.numpy()))


# --- distance-weighted sampling ----------------------------------------------------------------

def test_sampler_weights_match_reference(batch):
    x, y = batch
    w = DistanceWeightedSampler().weights(x, y)
    assert torch.allclose(w, torch.from_numpy(ref.distance_weights(x.numpy(), y.numpy())), atol=1e-9)


def test_sampler_never_same_class_and_respects_cutoff():
    x, y = make_batch((4,) * 6, dim=3, seed=31)
    d = torch.cdist(x, x)
    s = DistanceWeightedSampler(generator=torch.Generator().manual_seed(1))
    w = s.weights(x, y)
    has_admissible = ((y[:, None] != y[None, :]) & (d < 1.4)).any(1)
    assert has_admissible.all()
    for _ in range(20):
        a, p, n = s(x, y)
        assert (y[a] != y[n]).all() and (y[a] == y[p]).all() and (a != p).all()
        assert (d[a, n] < 1.4).all()
    assert (w[y[:, None] == y[None, :]] == 0).all() and (w[d >= 1.4] == 0).all()
    # K-1 = 3 triplets per anchor, each positive once (num_negatives=None, the reference code's choice)
    a, p, _ = s(x, y)
    assert torch.bincount(a).tolist() == [3] * 24
    assert sorted(zip(a.tolist(), p.tolist())) == sorted(zip(*torch.nonzero(positive_mask(y), as_tuple=True)))


def test_sampler_frequencies_follow_weights():
    x, y = make_batch((3,) * 8, dim=3, seed=32)
    s = DistanceWeightedSampler(num_negatives=4000, generator=torch.Generator().manual_seed(2))
    w = s.weights(x, y)
    a, _, n = s(x, y)
    counts = torch.zeros_like(w)
    counts.index_put_((a, n), torch.ones_like(a, dtype=w.dtype), accumulate=True)
    expected = w * 4000
    keep = expected > 0
    chi2 = (((counts - expected) ** 2)[keep] / expected[keep]).sum().item()
    dof = int(keep.sum() - w.shape[0])
    # chi-square with `dof` degrees of freedom: mean dof, sd sqrt(2 dof); allow 5 sd
    assert chi2 < dof + 5 * (2 * dof) ** 0.5
    assert (counts[~keep] == 0).all()


def test_sampler_reproducible_with_generator():
    x, y = make_batch((3,) * 6, dim=8, seed=33)
    runs = [DistanceWeightedSampler(generator=torch.Generator().manual_seed(5))(x, y) for _ in range(2)]
    assert all(torch.equal(u, v) for u, v in zip(*runs))
    other = DistanceWeightedSampler(generator=torch.Generator().manual_seed(6))(x, y)
    assert not torch.equal(runs[0][2], other[2])


def test_sampler_fallback_uniform_over_negatives():
    # two tight clusters at antipodes: every negative at d = 2 >= 1.4 -> uniform over the anchor's negatives
    base = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    x = torch.stack([base, base, base, -base, -base])
    y = torch.tensor([0, 0, 0, 1, 1])
    w = DistanceWeightedSampler().weights(x, y)
    assert torch.allclose(w[0], torch.tensor([0, 0, 0, 0.5, 0.5], dtype=torch.float64))
    assert torch.allclose(w[3], torch.tensor([1 / 3, 1 / 3, 1 / 3, 0, 0], dtype=torch.float64))
    a, p, n = DistanceWeightedSampler(generator=torch.Generator().manual_seed(0))(x, y)
    assert (y[a] != y[n]).all()


def test_sampler_num_negatives_cycles_positives():
    x, y = make_batch((3, 2, 4), dim=8, seed=34)
    a, p, n = DistanceWeightedSampler(num_negatives=5, generator=torch.Generator().manual_seed(0))(x, y)
    assert torch.bincount(a, minlength=len(y)).tolist() == [5] * len(y)
    assert ((y[a] == y[p]) & (a != p)).all()
    with pytest.raises(ValueError):
        DistanceWeightedSampler(num_negatives=0)
