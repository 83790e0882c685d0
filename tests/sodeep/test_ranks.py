"""exact_rank: the descending normalised convention, ties, dims; Spearman's rho from ranks against scipy."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import rankdata, spearmanr

from rankdml.sodeep import SpearmanLoss, exact_rank, make_sorter

from . import reference as ref


def test_convention_largest_gets_one_over_n():
    x = torch.tensor([0.3, 2.0, -1.0, 0.5])
    assert torch.allclose(exact_rank(x), torch.tensor([3.0, 1.0, 4.0, 2.0]) / 4)


def test_against_loop_and_scipy_with_ties():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 5, (7, 12), generator=g).double()  # many ties
    ranks = exact_rank(x)
    for row, r in zip(x.tolist(), ranks.tolist()):
        assert r == pytest.approx(ref.true_rank(row))
        # ties share the best rank of their group: scipy's "min" method on the negated scores
        assert r == pytest.approx(list(rankdata(-np.asarray(row), method="min") / len(row)))
    assert torch.allclose(exact_rank(torch.tensor([3.0, 1.0, 1.0])), torch.tensor([1.0, 2.0, 2.0]) / 3)


def test_dim_argument():
    x = torch.randn(5, 6, 3, generator=torch.Generator().manual_seed(1))
    assert torch.equal(exact_rank(x, dim=1), exact_rank(x.transpose(1, 2), dim=-1).transpose(1, 2))
    assert torch.equal(exact_rank(x, dim=0), exact_rank(x.movedim(0, -1)).movedim(-1, 0))


def test_bad_input():
    with pytest.raises(ValueError, match="NaN"):
        exact_rank(torch.tensor([1.0, float("nan")]))
    with pytest.raises(ValueError, match="floating"):
        exact_rank(torch.tensor([1, 2]))


def test_spearman_rho_from_ranks_matches_scipy():
    g = torch.Generator().manual_seed(2)
    pred, gt = torch.randn(50, generator=g, dtype=torch.float64), torch.randn(50, generator=g, dtype=torch.float64)
    rho = spearmanr(pred.numpy(), gt.numpy()).statistic
    n = 50
    mse = ((exact_rank(pred) - exact_rank(gt)) ** 2).mean().item()
    assert 1 - 6 * n * n * mse / (n * n - 1) == pytest.approx(rho, abs=1e-12)  # the identity SoDeep relies on
    # the same from the exact sorter's relaxed ranks (what SpearmanLoss computes), and its Pearson form
    loss = SpearmanLoss("exact")(pred, gt).item()
    assert 1 - 6 * n * n * loss / (n * n - 1) == pytest.approx(rho, abs=0.02)
    soft = make_sorter("exact")(pred[None])[0]
    assert np.corrcoef(soft.numpy(), exact_rank(gt).numpy())[0, 1] == pytest.approx(rho, abs=0.02)
