"""SamplingDistribution: support, bins, the original's initial distributions, the multiplicative update."""
from __future__ import annotations

import math

import pytest
import torch

from rankdml.pads import INITIAL_DISTRIBUTIONS, SamplingDistribution

from . import reference_pads as ref


def test_support_and_bins_hand_values():
    d = SamplingDistribution()
    assert d.num_bins == 29 and d.support.shape == (30,)
    assert d.support[0] == 0.1 and abs(float(d.support[-1]) - 1.4) < 1e-15
    assert abs(float(d.support[1] - d.support[0]) - 1.3 / 29) < 1e-12  # bin width 0.0448
    # s_1 = 0.1448, s_2 = 0.1897, s_27 = 1.3103, s_28 = 1.3552
    dist = torch.tensor([0.0, 0.1, 0.1448, 0.1449, 0.2, 0.5, 1.35, 1.3552, 1.356, 1.36, 2.0])
    assert d.bin(dist).tolist() == [0, 0, 0, 1, 2, 8, 27, 28, 28, 28, 28]
    # a distance exactly on an interior point s_k is not above it: bin k - 1
    on_points = d.support[1:-1].to(torch.float32)
    assert d.bin(d.support[1:-1]).tolist() == list(range(28))
    assert d.bin(on_points).shape == (28,)


def test_bins_match_naive_loop():
    g = torch.Generator().manual_seed(0)
    dist = torch.rand(500, generator=g, dtype=torch.float64) * 2.0
    for n_support, lo, hi in [(30, 0.1, 1.4), (11, 0.0, 2.0), (5, 0.3, 0.9)]:
        d = SamplingDistribution(n_support, lo, hi, init="random")
        expected = [ref.bin_of(float(v), n_support, lo, hi) for v in dist]
        assert d.bin(dist).tolist() == expected
        assert d.bin(dist.reshape(20, 25)).shape == (20, 25)


# bins with non-zero mass, computed by hand from x_k = 0.1 + 1.3 k / 29 + 2/30 = 0.1667 + 0.04483 k
HAND_SUPPORT = {
    "uniform_low": range(3, 12),  # [0.3, 0.7]: k in [2.97, 11.9]
    "uniform_avg": range(15, 24),  # [0.8, 1.2]: k in [14.1, 23.05]
    "uniform_high": range(26, 29),  # [1.3, 1.7]: k >= 25.3
    "uniform_low_and_tight": range(3, 8),  # [0.3, 0.5]: k in [2.97, 7.43]
    "uniform_lowish_and_tight": range(8, 12),  # [0.5, 0.7]: k in [7.43, 11.9]
    "heavyside_low": range(0, 8),  # x <= 0.5: k <= 7.43
    "distance": range(0, 8),  # x < 0.5
    "random": range(0, 29),
}


@pytest.mark.parametrize("name", list(HAND_SUPPORT))
def test_flat_initial_distributions_hand_computed(name):
    p = SamplingDistribution(init=name).probs
    bins = list(HAND_SUPPORT[name])
    expected = torch.full((29,), 0.0, dtype=torch.float64)
    expected[bins] = 1.0 / len(bins)
    assert torch.allclose(p, expected, atol=1e-13, rtol=0)
    assert abs(float(p.sum()) - 1.0) < 1e-12


def test_uniform_low_is_one_ninth_on_bins_3_to_11():
    d = SamplingDistribution()
    p = d.probs
    assert torch.allclose(p[3:12], torch.full((9,), 1 / 9, dtype=torch.float64), atol=1e-14)
    assert (p[:3] < 1e-14).all() and (p[12:] < 1e-14).all()
    # i.e. distances [s_3, s_12) = [0.234, 0.638), not [0.3, 0.7]
    assert abs(float(d.support[3]) - 0.2345) < 1e-3 and abs(float(d.support[12]) - 0.6379) < 1e-3


@pytest.mark.parametrize("name", list(INITIAL_DISTRIBUTIONS))
def test_every_initial_distribution_matches_naive_formula(name):
    kind, params = INITIAL_DISTRIBUTIONS[name]
    expected = torch.tensor(ref.initial_probs(kind, params), dtype=torch.float64)
    assert torch.allclose(SamplingDistribution(init=name).probs, expected, atol=1e-15, rtol=1e-12)


def test_normal_low_has_the_clipped_flat_top():
    # the original's 1/sqrt(2 pi sigma) = 1.78 makes the peak exceed 1, which the clip flattens:
    # x_7 = 0.480 and x_8 = 0.525 are both within 0.054 of mu = 0.5, so both are clipped to 1
    p = SamplingDistribution(init="normal_low").probs
    assert p[7] == p[8] == p.max()
    x6 = 0.1 + 1.3 * 6 / 29 + 2 / 30
    assert math.isclose(float(p[6] / p[7]), math.exp(-(x6 - 0.5) ** 2 / (2 * 0.05 ** 2)) / math.sqrt(2 * math.pi * 0.05),
                        rel_tol=1e-12)


def test_random_is_unnormalised_ones_and_custom_params():
    assert torch.equal(SamplingDistribution(init="random").weights, torch.ones(29, dtype=torch.float64))
    custom = SamplingDistribution(init="uniform", init_params=(0.5, 0.2))
    assert torch.equal(custom.probs, SamplingDistribution(init="uniform_low").probs)
    normal = SamplingDistribution(init="normal", init_params=(1.1, 0.04))
    assert torch.equal(normal.probs, SamplingDistribution(init="normal_avg").probs)


def test_update_is_multiplicative_with_clipping():
    d = SamplingDistribution(init="random")
    v = torch.full((29,), 1.0, dtype=torch.float64)
    v[0], v[1] = 2.0, 0.5
    d.update(v)
    assert d.weights[0] == 2.0 and d.weights[1] == 0.5 and (d.weights[2:] == 1.0).all()
    assert torch.allclose(d.probs, v / v.sum())
    before = d.weights.clone()
    d.update(torch.ones(29))
    assert torch.equal(d.weights, before)  # x1 leaves it bit-for-bit unchanged
    for _ in range(100):
        d.update(torch.tensor([1e-3] + [1e3] * 28))
    assert d.weights[0] == 1e-25 and (d.weights[1:] == 1e25).all()  # clipped, still a distribution
    assert torch.isfinite(d.probs).all() and abs(float(d.probs.sum()) - 1) < 1e-12


def test_bad_input_raises():
    with pytest.raises(ValueError, match="unknown initial distribution"):
        SamplingDistribution(init="uniform_lo")
    with pytest.raises(ValueError, match="n_support"):
        SamplingDistribution(n_support=2)
    with pytest.raises(ValueError, match="interval"):
        SamplingDistribution(lower=1.4, upper=0.1)
    d = SamplingDistribution()
    with pytest.raises(ValueError, match="29 multipliers"):
        d.update(torch.ones(30))
    with pytest.raises(ValueError, match="positive and finite"):
        d.update(torch.tensor([0.0] + [1.0] * 28))
    with pytest.raises(ValueError, match="positive and finite"):
        d.update(torch.tensor([float("nan")] + [1.0] * 28))
    with pytest.raises(ValueError, match="floating-point"):
        d.bin(torch.tensor([1, 2]))


def test_state_dict_round_trip():
    d = SamplingDistribution(init="normal_avg")
    d.update(torch.linspace(0.5, 1.5, 29))
    e = SamplingDistribution(init="random")
    e.load_state_dict(d.state_dict())
    assert torch.equal(e.weights, d.weights) and torch.equal(e.probs, d.probs)
    with pytest.raises(ValueError, match="support"):
        SamplingDistribution(n_support=20).load_state_dict(d.state_dict())
