"""The synthetic families: laws, seeding, targets, errors, devices."""
from __future__ import annotations

import pytest
import torch

from rankdml.sodeep import FAMILIES, exact_rank, make_generator, sample_sequences


def test_shapes_targets_and_seeding():
    x, r = sample_sequences(32, 17, generator=make_generator(3))
    assert x.shape == r.shape == (32, 17) and x.dtype == torch.float32
    assert torch.equal(r, exact_rank(x, dim=-1))
    x2, _ = sample_sequences(32, 17, generator=make_generator(3))
    x3, _ = sample_sequences(32, 17, generator=make_generator(4))
    assert torch.equal(x, x2) and not torch.equal(x, x3)


def test_family_laws():
    n, B = 40, 64
    draw = {f: sample_sequences(B, n, f, generator=make_generator(0), dtype=torch.float64)[0] for f in FAMILIES}
    for f in ("uniform", "uniform_bis", "uniform_then_uniform"):
        assert draw[f].min() >= -1 and draw[f].max() < 1 and draw[f].mean().abs() < 0.05
    assert draw["normal"].std().item() == pytest.approx(1.0, abs=0.05)
    steps = draw["sorted_ramp"].diff(dim=1)
    assert torch.allclose(steps, steps[:, :1].expand_as(steps))  # evenly spaced, ascending or descending
    assert (draw["sorted_ramp"] >= 0).all() and (draw["sorted_ramp"] <= 1).all()
    shuffled = draw["shuffled_ramp"].sort(dim=1).values.diff(dim=1)
    assert torch.allclose(shuffled, shuffled[:, :1].expand_as(shuffled), atol=1e-12)
    k = torch.arange(n, dtype=torch.float64)
    assert torch.allclose(draw["fixed_ramp"], (-1 + 2 * k / n).expand(B, n))  # arange(-1, 1, 2/n)
    # mixed families have a uniform head: |x| >= 1 appears only in the normal tail
    assert (draw["uniform_then_normal"].abs() >= 1).any()
    head = draw["ramp_then_uniform"][:, 0]
    assert (head >= 0).all() and (head <= 1).all()  # the first entry is always a ramp value


def test_mixture_uses_every_family():
    x, _ = sample_sequences(400, 30, generator=make_generator(5), dtype=torch.float64)
    k = torch.arange(30, dtype=torch.float64)
    fixed = torch.isclose(x, -1 + 2 * k / 30).all(dim=1)
    assert 10 < fixed.sum() < 80  # family 9 appears about 1/10 of the time


def test_errors():
    with pytest.raises(ValueError, match="unknown family"):
        sample_sequences(2, 5, "cauchy")
    with pytest.raises(ValueError, match="seq_len"):
        sample_sequences(2, 1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda():
    x, r = sample_sequences(8, 10, generator=make_generator(0, "cuda"))
    assert x.is_cuda and r.is_cuda
    with pytest.raises(ValueError, match="generator"):
        sample_sequences(8, 10, generator=make_generator(0), device="cuda")
