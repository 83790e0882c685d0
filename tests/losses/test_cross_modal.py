"""Cross-modal losses on (B, B) score matrices and the two-view wrapper, against loops from the formulas."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from rankdml.data import TwoViewSampler, paired_views
from rankdml.losses import HardNegativeTripletLoss, TwoViewLoss
from rankdml.sodeep import RankLoss


def _scores(B, seed=0):
    return torch.randn(B, B, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _vse_loop(S, m, hardest):
    B = S.shape[0]
    total = 0.0
    for i in range(B):  # rows: query i against the gallery
        costs = [max(0.0, m - S[i, i].item() + S[i, j].item()) for j in range(B) if j != i]
        total += max(costs) if hardest else sum(costs)
    for j in range(B):  # columns: gallery item j against the queries
        costs = [max(0.0, m - S[j, j].item() + S[i, j].item()) for i in range(B) if i != j]
        total += max(costs) if hardest else sum(costs)
    return total


@pytest.mark.parametrize("hardest", [True, False])
@pytest.mark.parametrize("B", [2, 5, 9])
def test_hard_negative_triplet_against_loop(B, hardest):
    S = _scores(B, B) * 0.3
    got = HardNegativeTripletLoss(margin=0.2, hardest=hardest)(S).item()
    assert got == pytest.approx(_vse_loop(S, 0.2, hardest), abs=1e-12)


def test_hard_negative_triplet_zero_when_separated_and_gradcheck():
    S = torch.full((4, 4), -1.0, dtype=torch.float64) + 2 * torch.eye(4, dtype=torch.float64)
    assert HardNegativeTripletLoss(margin=0.2)(S).item() == 0.0
    S = (_scores(5, 3) * 0.3).requires_grad_(True)  # untied: the max has a unique argmax
    assert torch.autograd.gradcheck(lambda s: HardNegativeTripletLoss(margin=0.1)(s), (S,))


def test_hard_negative_triplet_bad_input():
    with pytest.raises(ValueError, match="square"):
        HardNegativeTripletLoss()(torch.zeros(3, 4))
    with pytest.raises(ValueError, match="NaN"):
        HardNegativeTripletLoss()(torch.full((3, 3), float("nan")))


def test_two_view_loss_equals_score_loss_on_cosines():
    g = torch.Generator().manual_seed(0)
    q, v = torch.randn(6, 8, generator=g, dtype=torch.float64), torch.randn(6, 8, generator=g, dtype=torch.float64)
    labels = torch.tensor([4, 1, 7, 0, 2, 9] * 2)
    S = torch.nn.functional.normalize(q, dim=1) @ torch.nn.functional.normalize(v, dim=1).T
    for inner in (HardNegativeTripletLoss(0.2), RankLoss("exact")):
        assert TwoViewLoss(inner)(torch.cat([q, v]), labels).item() == pytest.approx(inner(S).item(), abs=1e-12)


def test_two_view_loss_refuses_bad_layouts():
    x = torch.randn(6, 4)
    with pytest.raises(ValueError, match=r"labels\[:B\] == labels\[B:\]"):
        TwoViewLoss(HardNegativeTripletLoss())(x, torch.tensor([0, 1, 2, 0, 2, 1]))
    with pytest.raises(ValueError, match="distinct classes"):
        TwoViewLoss(HardNegativeTripletLoss())(x, torch.tensor([0, 0, 1, 0, 0, 1]))
    with pytest.raises(ValueError, match=r"\(2B, D\)"):
        TwoViewLoss(HardNegativeTripletLoss())(torch.randn(5, 4), torch.arange(5))


def test_paired_views_and_sampler():
    labels = np.array([0, 0, 1, 1, 1, 2, 3, 3])
    styles = np.array([0, 1, 1, 0, 0, 0, 1, 0])
    q, g = paired_views(labels, styles, 0, 1)
    assert q.tolist() == [0, 3, 7] and g.tolist() == [1, 2, 6]  # class 2 has no style-1 item
    assert (labels[q] == labels[g]).all() and (styles[q] == 0).all() and (styles[g] == 1).all()
    with pytest.raises(ValueError, match="no class"):
        paired_views(labels, styles, 0, 5)
    sampler = TwoViewSampler(q, g, 2, seed=1)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 1 and len(batches[0]) == 4
    b = batches[0]
    assert (labels[b[:2]] == labels[b[2:]]).all()
    sampler.set_epoch(0)
    assert list(sampler) == batches  # an epoch's batches depend only on (seed, epoch)
    assert list(sampler) != batches or len(q) <= 2
    with pytest.raises(ValueError, match="pairs_per_batch"):
        TwoViewSampler(q, g, 4)
