"""DistributionSampler: draw frequencies against the distribution, the options, the triplet format, resume."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import chisquare

from rankdml.losses import MarginLoss
from rankdml.masks import SelfRegularisedTriplets, check_triplets
from rankdml.pads import DistributionSampler, SamplingDistribution

from . import reference_pads as ref


def _batch(sizes=(4, 4, 4, 4), dim=3, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    labels = torch.cat([torch.full((k,), c, dtype=torch.long) for c, k in enumerate(sizes)])
    x = torch.nn.functional.normalize(torch.randn(labels.numel(), dim, generator=g, dtype=dtype), dim=1)
    return x, labels


def _circle(angles):
    """Unit vectors at the given angles: chord distance d = 2 sin(|θ_i - θ_j| / 2)."""
    a = torch.tensor(angles, dtype=torch.float64)
    return torch.stack([torch.cos(a), torch.sin(a)], 1)


def _angle(d):
    return float(2 * np.arcsin(d / 2))


@pytest.mark.parametrize("same_class_negatives", [True, False])
@pytest.mark.parametrize("init", ["random", "normal_avg", "uniform_low"])
def test_negative_probabilities_match_naive_loop(init, same_class_negatives):
    x, y = _batch(seed=1)
    dist = SamplingDistribution(init=init)
    dist.update(torch.linspace(0.6, 1.4, 29))  # not a named shape any more
    s = DistributionSampler(dist, same_class_negatives=same_class_negatives)
    expected = ref.negative_probs(x.numpy(), y.tolist(), dist.probs.tolist(), same_class_negatives)
    assert np.allclose(s.negative_probabilities(x, y).numpy(), expected, atol=1e-12)


def test_sampling_frequencies_chi_square():
    x, y = _batch(sizes=(3, 3, 3, 3), dim=3, seed=2)
    dist = SamplingDistribution(init="random")
    dist.update(torch.linspace(0.2, 3.0, 29))  # favour far negatives
    s = DistributionSampler(dist, seed=123)
    probs = s.negative_probabilities(x, y).numpy()  # (B, B)
    draws = 4000
    neg_counts = np.zeros_like(probs)
    pos_counts = np.zeros_like(probs)
    for _ in range(draws):
        a, p, n = s(x, y)
        assert a.tolist() == list(range(12))  # one triplet per anchor
        np.add.at(neg_counts, (a.numpy(), n.numpy()), 1)
        np.add.at(pos_counts, (a.numpy(), p.numpy()), 1)
    keep = probs > 0
    stat = chisquare(neg_counts[keep], probs[keep] * draws, ddof=0, sum_check=False)
    assert stat.pvalue > 1e-3, stat
    # the test can fail: the same counts are far from uniform over the batch
    wrong = chisquare(neg_counts.reshape(-1), np.full(probs.size, draws / 12.0), sum_check=False)
    assert wrong.pvalue < 1e-6
    # positives: uniform over the anchor's class, the anchor included (self-regularisation)
    same = (y[:, None] == y[None, :]).numpy()
    assert (pos_counts[~same] == 0).all()
    assert chisquare(pos_counts[same], np.full(same.sum(), draws / 3.0)).pvalue > 1e-3


def test_self_regularisation_options():
    x, y = _batch(seed=3)
    dist = SamplingDistribution(init="heavyside_low")  # favours close items, i.e. often same-class ones
    on = DistributionSampler(dist, seed=0)
    off = DistributionSampler(dist, same_class_negatives=False, anchor_as_positive=False, seed=0)
    seen_self_pos = seen_same_neg = seen_anchor_neg = False
    for _ in range(200):
        a, p, n = on(x, y)
        seen_self_pos |= bool((a == p).any())
        seen_same_neg |= bool(((y[a] == y[n]) & (a != n)).any())
        seen_anchor_neg |= bool((a == n).any())
        t = off(x, y)
        assert type(t) is tuple
        check_triplets(t, y)  # ordinary triplets: passes the strict check
    assert seen_self_pos and seen_same_neg and seen_anchor_neg
    only_pos = DistributionSampler(dist, same_class_negatives=False, anchor_as_positive=True)
    a, p, n = only_pos(x, y)
    assert (y[a] != y[n]).all()


def test_self_regularised_triplets_pass_only_when_marked():
    y = torch.tensor([0, 0, 1, 1])
    t = (torch.tensor([0, 1]), torch.tensor([0, 0]), torch.tensor([1, 1]))  # a == p, same-class negative
    with pytest.raises(ValueError):
        check_triplets(t, y)
    check_triplets(SelfRegularisedTriplets(t), y)
    check_triplets(t, y, allow_self_regularised=True)
    with pytest.raises(ValueError):
        check_triplets(SelfRegularisedTriplets(t), y, allow_self_regularised=False)
    with pytest.raises(ValueError, match="share its anchor's label"):
        check_triplets(SelfRegularisedTriplets((torch.tensor([0]), torch.tensor([2]), torch.tensor([1]))), y)
    x = torch.nn.functional.normalize(torch.randn(4, 3, dtype=torch.float64), dim=1)
    with pytest.raises(ValueError):
        MarginLoss()(x, y, indices=t)
    assert torch.isfinite(MarginLoss()(x, y, indices=SelfRegularisedTriplets(t)))


def test_merge_out_of_range_flag_works():
    # anchor at 0; items at chord distances 0.05 (below 0.1), 0.5, 1.0 and 1.9 (above 1.4)
    x = _circle([0.0] + [_angle(d) for d in (0.05, 0.5, 1.0, 1.9)])
    y = torch.tensor([0, 1, 2, 3, 4])
    dist = SamplingDistribution(init="random")
    merged = DistributionSampler(dist, same_class_negatives=False).negative_probabilities(x, y)[0]
    assert torch.allclose(merged, torch.tensor([0, 0.25, 0.25, 0.25, 0.25], dtype=torch.float64))
    strict = DistributionSampler(dist, same_class_negatives=False, merge_out_of_range=False)
    assert torch.allclose(strict.negative_probabilities(x, y)[0], torch.tensor([0, 0, 0.5, 0.5, 0], dtype=torch.float64))
    for _ in range(50):
        a, p, n = strict(x, y)
        assert n[0] in (2, 3)
    # every candidate out of range: uniform fallback over the candidates instead of a NaN row
    far = _circle([0.0, _angle(1.9), _angle(1.95) + 0.01])
    fb = DistributionSampler(dist, same_class_negatives=False, merge_out_of_range=False)
    row = fb.negative_probabilities(far, torch.tensor([0, 1, 2]))[0]
    assert torch.allclose(row, torch.tensor([0, 0.5, 0.5], dtype=torch.float64))


def test_anchors_without_positive_are_skipped_and_margin_loss_takes_the_output():
    x, y = _batch(sizes=(1, 3, 2), seed=4)
    s = DistributionSampler(SamplingDistribution(), anchor_as_positive=False, same_class_negatives=False, seed=1)
    a, p, n = s(x, y)
    singleton = int(torch.nonzero(torch.bincount(y)[y] == 1)[0])
    assert singleton not in a.tolist() and a.numel() == 5
    full = DistributionSampler(SamplingDistribution(), seed=1)
    idx = full(x, y)
    assert idx[0].numel() == 6  # with the anchor as its own positive every anchor has one
    loss = MarginLoss(num_classes=3)
    xg = x.clone().requires_grad_()
    torch.autograd.gradcheck(lambda e: loss(e, y, indices=idx), (xg,))


def test_generator_state_resumes_draws():
    x, y = _batch(seed=5)
    s = DistributionSampler(SamplingDistribution(init="random"), seed=7)
    s(x, y)
    saved = s.state_dict()
    after = [s(x, y) for _ in range(3)]
    t = DistributionSampler(SamplingDistribution(init="random"), seed=0)
    t.load_state_dict(saved)
    again = [t(x, y) for _ in range(3)]
    for u, v in zip(after, again):
        assert all(torch.equal(i, j) for i, j in zip(u, v))


def test_state_of_an_unused_device_is_kept_until_used():
    x, y = _batch(seed=5)
    s = DistributionSampler(SamplingDistribution(), seed=1)
    s(x, y)
    saved = s.state_dict()
    saved["generators"]["cuda:7"] = torch.zeros(16, dtype=torch.uint8)  # as if written on a GPU machine
    t = DistributionSampler(SamplingDistribution(), seed=0)
    t.load_state_dict(saved)  # no CUDA generator is created here
    assert torch.equal(t.state_dict()["generators"]["cuda:7"], saved["generators"]["cuda:7"])
    assert all(torch.equal(i, j) for i, j in zip(s(x, y), t(x, y)))


def test_the_distribution_makes_its_sampler_and_shares_its_updates():
    x, y = _batch(seed=9)
    dist = SamplingDistribution(init="random")
    s = dist.sampler(seed=3, same_class_negatives=False)
    assert s.distribution is dist and not s.same_class_negatives
    before = s.negative_probabilities(x, y)
    dist.update(torch.linspace(0.5, 2.0, 29))
    assert not torch.allclose(before, s.negative_probabilities(x, y))  # the next batch sees the update


def test_same_seed_same_draws_different_seed_different_draws():
    x, y = _batch(sizes=(6, 6, 6), seed=6)
    draws = lambda seed: torch.cat(DistributionSampler(SamplingDistribution(init="random"), seed=seed)(x, y))
    assert torch.equal(draws(3), draws(3))
    assert not torch.equal(draws(3), draws(4))


def test_bad_input_raises():
    s = DistributionSampler(SamplingDistribution())
    with pytest.raises(ValueError, match=r"\(B, D\)"):
        s(torch.zeros(4), torch.zeros(4, dtype=torch.long))
    x, y = _batch()
    with pytest.raises(ValueError, match="NaN"):
        s(x.masked_fill(torch.eye(16, 3, dtype=torch.bool), float("nan")), y)
    with pytest.raises(ValueError, match="SamplingDistribution"):
        DistributionSampler("uniform_low")
    one_class = torch.zeros(16, dtype=torch.long)
    with pytest.raises(ValueError, match="at least 2 distinct classes"):
        DistributionSampler(SamplingDistribution(), same_class_negatives=False)(x, one_class)
    a, p, n = s(x, one_class)  # self-regularised: the original's sampler draws same-class "negatives" here
    assert a.numel() == 16


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_draws_on_the_embeddings_device():
    x, y = _batch(seed=8)
    s = DistributionSampler(SamplingDistribution(), seed=2)
    a, p, n = s(x.cuda().float(), y.cuda())
    assert a.is_cuda and p.is_cuda and n.is_cuda
    cpu = s.negative_probabilities(x.float(), y)
    gpu = s.negative_probabilities(x.cuda().float(), y.cuda()).cpu()
    assert torch.allclose(cpu, gpu, atol=1e-6)
    saved = s.state_dict()
    nxt = s(x.cuda().float(), y.cuda())
    t = DistributionSampler(SamplingDistribution(), seed=0)
    t.load_state_dict(saved)
    assert all(torch.equal(i, j) for i, j in zip(nxt, t(x.cuda().float(), y.cuda())))
