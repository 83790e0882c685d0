"""SoDeep's losses against loops written from the formulas, gradients, the frozen sorter, bad input."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score

from rankdml.losses import make_loss
from rankdml.sodeep import (MapRankingLoss, RankHardLoss, RankLoss, SoDeepAPLoss, SpearmanLoss, exact_rank,
                            make_sorter)

from . import reference as ref


class HardRanks(torch.nn.Module):
    """A 'sorter' returning the exact ranks: turns each surrogate into the metric it relaxes."""

    def forward(self, x):
        return exact_rank(x, dim=-1)


def _g(seed):
    return torch.Generator().manual_seed(seed)


def test_spearman_against_loop():
    pred, gt = torch.randn(15, generator=_g(0), dtype=torch.float64), torch.randn(15, generator=_g(1), dtype=torch.float64)
    for lbd in (0.0, 0.7):
        assert SpearmanLoss("exact", lbd=lbd)(pred, gt).item() == pytest.approx(
            ref.spearman_loss(pred.tolist(), gt.tolist(), lbd=lbd), abs=1e-12)
    assert SpearmanLoss("exact")(pred[:, None], gt[:, None]).item() == pytest.approx(SpearmanLoss()(pred, gt).item())


def test_map_ranking_against_loop():
    out = torch.randn(10, 4, generator=_g(2), dtype=torch.float64)
    tgt = (torch.rand(10, 4, generator=_g(3)) < 0.3).double()
    tgt[:, 3] = 0  # a class without positives adds nothing
    assert MapRankingLoss("exact")(out, tgt).item() == pytest.approx(
        ref.map_ranking_loss(out.tolist(), tgt.tolist()), abs=1e-12)


def test_rank_loss_against_loop_and_minimum():
    S = torch.randn(7, 7, generator=_g(4), dtype=torch.float64)
    assert RankLoss("exact")(S).item() == pytest.approx(ref.rank_loss(S.tolist()), abs=1e-12)
    perfect = torch.eye(7, dtype=torch.float64) * 10
    assert RankLoss(HardRanks())(perfect).item() == pytest.approx(2.0)  # each positive first: 7 x 1/7 twice


@pytest.mark.parametrize("use_margin,margin,nmax", [(True, 0.2, 1), (True, 0.5, 3), (False, 0.2, 1), (False, 0.9, 2)])
def test_rank_hard_against_loop(use_margin, margin, nmax):
    S = torch.randn(6, 6, generator=_g(5), dtype=torch.float64)
    got = RankHardLoss("exact", margin=margin, nmax=nmax, use_margin=use_margin)(S).item()
    assert got == pytest.approx(ref.rank_hard_loss(S.tolist(), margin, nmax, use_margin), abs=1e-12)


def test_rank_hard_margin_semantics():
    S = torch.randn(6, 6, generator=_g(6), dtype=torch.float64) + 1.5 * torch.eye(6, dtype=torch.float64)
    original = [RankHardLoss(HardRanks(), margin=m, use_margin=False)(S).item() for m in (0.0, 0.2, 5.0)]
    assert original[0] == original[1] == original[2]  # the original ignores its margin
    assert RankHardLoss(HardRanks(), margin=0.0)(S).item() == original[0]
    # a positive that beats every negative by 0.3 costs nothing at margin 0.2 and something at 0.5
    S = torch.zeros(4, 4, dtype=torch.float64) + 0.3 * torch.eye(4, dtype=torch.float64)
    assert RankHardLoss(HardRanks(), margin=0.2)(S).item() == 0.0
    assert RankHardLoss(HardRanks(), margin=0.5)(S).item() > 0.0


def _batch(seed=7, sizes=(3, 2, 4, 3), dim=5):
    y = torch.cat([torch.full((k,), c) for c, k in enumerate(sizes)])
    y = y[torch.randperm(len(y), generator=_g(seed))]
    return torch.randn(len(y), dim, generator=_g(seed + 1), dtype=torch.float64), y


def test_ap_loss_against_loop_and_sklearn():
    x, y = _batch()
    assert SoDeepAPLoss()(x, y).item() == pytest.approx(ref.ap_loss(x.numpy(), y.tolist()), abs=1e-12)
    # with exact ranks the surrogate is exactly 1 - mAP (sklearn, leave-one-out, cosine)
    xn = torch.nn.functional.normalize(x, dim=1).numpy()
    aps = []
    for i in range(len(y)):
        others = [j for j in range(len(y)) if j != i]
        aps.append(average_precision_score(y[others].numpy() == y[i].item(), xn[others] @ xn[i]))
    assert SoDeepAPLoss(sorter=HardRanks())(x, y).item() == pytest.approx(1 - np.mean(aps), abs=1e-12)
    assert isinstance(make_loss("sodeep_ap"), SoDeepAPLoss)


def test_gradchecks_float64():
    sorter = make_sorter("exact", c=4.0)  # fixed temperature: a smooth function of the scores
    S = torch.randn(5, 5, generator=_g(8), dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(RankLoss(sorter), (S,))
    assert torch.autograd.gradcheck(RankHardLoss(sorter, nmax=2), (S,))
    pred = torch.randn(6, generator=_g(9), dtype=torch.float64, requires_grad=True)
    gt = torch.randn(6, generator=_g(10), dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda p: SpearmanLoss(sorter, lbd=0.5)(p, gt), (pred,))
    tgt = (torch.rand(6, 3, generator=_g(11)) < 0.5).double()
    out = torch.randn(6, 3, generator=_g(12), dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda o: MapRankingLoss(sorter)(o, tgt), (out,))
    x, y = _batch(dim=3)
    x.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda e: SoDeepAPLoss(sorter=sorter)(e, y), (x,))


def test_spearman_three_elements_points_the_right_way():
    # gt = (2, 1, 0): element 0 should score highest. pred = (0, 1, 2) is the reverse order.
    pred = torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64, requires_grad=True)
    SpearmanLoss("exact")(pred, torch.tensor([2.0, 1.0, 0.0], dtype=torch.float64)).backward()
    g = pred.grad
    assert torch.isfinite(g).all()
    assert g[0] < 0 < g[2]  # gradient descent raises pred_0 and lowers pred_2
    pred.grad = None
    SpearmanLoss("exact")(pred, torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64)).backward()
    assert g.abs().sum() > 10 * pred.grad.abs().sum()  # already in order: a much smaller push


def test_frozen_sorter_stays_frozen_under_train():
    sorter = make_sorter("cnn", 8, channels=4)  # BatchNorm: eval vs train mode changes the output
    for loss in (RankLoss(sorter), SoDeepAPLoss(sorter=sorter)):
        loss.train()
        assert loss.training and not loss.sorter.training
        assert all(not p.requires_grad for p in loss.parameters())
    S = torch.randn(8, 8, requires_grad=True)
    loss = RankLoss(sorter).train()
    loss(S).backward()
    assert S.grad is not None and all(p.grad is None for p in sorter.parameters())


def test_wrong_length_and_bad_input():
    sorter = make_sorter("lstm", 8, hidden=4)
    with pytest.raises(ValueError, match="length 8"):
        RankLoss(sorter)(torch.randn(6, 6))
    x, y = _batch()  # B = 12: rows of B - 1 = 11
    with pytest.raises(ValueError, match="length 8"):
        SoDeepAPLoss(sorter=sorter)(x.float(), y)
    with pytest.raises(ValueError, match="square"):
        RankLoss("exact")(torch.randn(4, 5))
    with pytest.raises(ValueError, match="NaN"):
        RankHardLoss("exact")(torch.full((3, 3), float("nan")))
    with pytest.raises(ValueError, match="shape"):
        SpearmanLoss()(torch.randn(4), torch.randn(5))
    with pytest.raises(ValueError, match="0/1"):
        MapRankingLoss()(torch.randn(4, 2), torch.full((4, 2), 0.5))
    with pytest.raises(ValueError, match="no trained 'gruc' sorter"):
        RankLoss("gruc", seq_len=37)  # only n = 100 is shipped
    with pytest.raises(ValueError, match="neither a sorter name"):
        RankLoss("no_such_sorter.pt")
    with pytest.raises(ValueError, match="mined indices"):
        SoDeepAPLoss()(x, y, indices=(torch.tensor([0]),) * 3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda():
    x, y = _batch()
    assert SoDeepAPLoss()(x.cuda(), y.cuda()).is_cuda
    assert RankHardLoss()(torch.randn(5, 5, device="cuda")).is_cuda


@pytest.mark.parametrize("make", [lambda: RankLoss("exact"), lambda: RankHardLoss("exact", margin=0.1)])
def test_cross_modal_three_elements_points_the_right_way(make):
    # every positive (diagonal) is beaten by one negative: raising S_ii and lowering that negative helps
    S = torch.tensor([[0.0, 0.5, -1.0], [-1.0, 0.0, 0.5], [0.5, -1.0, 0.0]], dtype=torch.float64, requires_grad=True)
    make()(S).backward()
    g = S.grad
    assert torch.isfinite(g).all()
    assert (torch.diagonal(g) < 0).all()
    assert g[0, 1] > 0 and g[1, 2] > 0 and g[2, 0] > 0
