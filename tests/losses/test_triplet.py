"""TripletLoss: all / batch-hard / semi-hard vs naive references and PML; semi-hard fallback."""
from __future__ import annotations

import pytest
import torch
from pytorch_metric_learning import distances as pml_distances
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning import miners as pml_miners
from pytorch_metric_learning.reducers import MeanReducer

from rankdml.losses import TripletLoss
from rankdml.mining import BatchHardMiner, SemiHardMiner, semi_hard_triplets
from rankdml.distances import pairwise_squared_distances
from reference import losses as ref

from .conftest import make_batch

CASES = [
    dict(mining="all"),
    dict(mining="all", average_nonzero=True, margin=0.5),
    dict(mining="all", squared=True, soft=True),
    dict(mining="batch_hard", margin=1.0),
    dict(mining="batch_hard", soft=True),
    dict(mining="semi_hard"),
    dict(mining="semi_hard", squared=False, margin=0.3),
]


def _ref_kwargs(kw):
    kw = dict(kw)
    kw.setdefault("squared", kw.get("mining") == "semi_hard")
    return kw


@pytest.mark.parametrize("kw", CASES, ids=lambda kw: "-".join(f"{k}={v}" for k, v in kw.items()))
def test_triplet_matches_reference(batch, kw):
    x, y = batch
    got = TripletLoss(**kw)(x, y)
    assert got.item() == pytest.approx(ref.triplet(x.numpy(), y.numpy(), **_ref_kwargs(kw)), abs=1e-6)


def test_triplet_normalize_flag():
    x, y = make_batch((3, 3, 4), normalize=False, seed=5)
    a = TripletLoss(normalize=True)(3.0 * x, y)
    b = TripletLoss()(torch.nn.functional.normalize(x, dim=1), y)
    assert a.item() == pytest.approx(b.item(), abs=1e-12)


def test_triplet_all_matches_pml(batch):
    x, y = batch
    dist = pml_distances.LpDistance(normalize_embeddings=False)
    # PML's default reducer (AvgNonZeroReducer) = average_nonzero=True; MeanReducer = the default here.
    pml_nz = pml_losses.TripletMarginLoss(margin=0.3, distance=dist)(x, y)
    pml_mean = pml_losses.TripletMarginLoss(margin=0.3, distance=dist, reducer=MeanReducer())(x, y)
    assert TripletLoss(margin=0.3, average_nonzero=True)(x, y).item() == pytest.approx(pml_nz.item(), abs=1e-6)
    assert TripletLoss(margin=0.3)(x, y).item() == pytest.approx(pml_mean.item(), abs=1e-6)


def test_triplet_batch_hard_matches_pml(batch):
    x, y = batch
    dist = pml_distances.LpDistance(normalize_embeddings=False)
    idx = pml_miners.BatchHardMiner(distance=dist)(x, y)
    expected = pml_losses.TripletMarginLoss(margin=1.0, distance=dist, reducer=MeanReducer())(x, y, idx)
    assert TripletLoss(margin=1.0, mining="batch_hard")(x, y).item() == pytest.approx(expected.item(), abs=1e-6)
    # and our miner picks the same triplets (no ties in random data)
    ours = BatchHardMiner()(x, y)
    assert sorted(zip(*(t.tolist() for t in ours))) == sorted(zip(*(t.tolist() for t in idx)))


def test_triplet_indices_protocol_matches_pml_semihard_miner(batch):
    # PML's TripletMarginMiner("semihard") returns *every* triplet with d_ap < d_an <= d_ap + m (FaceNet's
    # definition, no fallback), not one per positive pair like TF: a different selection. Both losses
    # agree on the same mined triplets, and whenever a (a, p) pair has such a negative, ours picks one.
    x, y = batch
    dist = pml_distances.LpDistance(normalize_embeddings=False)
    idx = pml_miners.TripletMarginMiner(margin=0.5, type_of_triplets="semihard", distance=dist)(x, y)
    if idx[0].numel() == 0:
        pytest.skip("no semi-hard triplet in this batch")
    expected = pml_losses.TripletMarginLoss(margin=0.5, distance=dist, reducer=MeanReducer())(x, y, idx)
    assert TripletLoss(margin=0.5)(x, y, indices=idx).item() == pytest.approx(expected.item(), abs=1e-6)
    pml_set = set(zip(*(t.tolist() for t in idx)))
    pml_pairs = {(a, p) for a, p, _ in pml_set}
    a, p, n = semi_hard_triplets(pairwise_squared_distances(x), y)
    for t in zip(a.tolist(), p.tolist(), n.tolist()):
        if t[:2] in pml_pairs:
            assert t in pml_set


@pytest.mark.parametrize("miner, mining", [(BatchHardMiner(), "batch_hard"), (SemiHardMiner(), "semi_hard")])
def test_triplet_miner_equals_mining_mode(batch, miner, mining):
    x, y = batch
    loss = TripletLoss(mining=mining)
    with_miner = TripletLoss(squared=loss.squared)(x, y, indices=miner(x, y))
    assert with_miner.item() == pytest.approx(loss(x, y).item(), abs=1e-12)


def test_semi_hard_falls_back_to_farthest_negative():
    # 1-D: anchor 0 at 0, its positive at 3; negatives at 1 and 2 (both closer than the positive)
    # -> no negative beyond the positive: the farthest one (x = 2, index 3) is chosen.
    x = torch.tensor([[0.0], [3.0], [1.0], [2.0]], dtype=torch.float64)
    y = torch.tensor([0, 0, 1, 1])
    a, p, n = SemiHardMiner()(x, y)
    chosen = {(ai, pi): ni for ai, pi, ni in zip(a.tolist(), p.tolist(), n.tolist())}
    assert chosen[(0, 1)] == 3
    # anchor 1 at 3 with positive at 0 (d = 3): negatives at d = 2 and 1 -> fallback to the farthest (index 2)
    assert chosen[(1, 0)] == 2
    # with one negative beyond the positive, it is taken: anchor 2 (x=1), positive 3 (x=2, d=1): negatives
    # at d=1 (x=0) and d=2 (x=3): the closest beyond d_ap=1 strictly is x=3 (index 1)
    assert chosen[(2, 3)] == 1
    m = 0.2
    expected = sum(max(dp - dn + m, 0) for dp, dn in [(9, 4), (9, 4), (1, 4), (1, 4)]) / 4
    assert TripletLoss(mining="semi_hard", margin=m)(x, y).item() == pytest.approx(expected)


@pytest.mark.parametrize("mining", ["all", "batch_hard", "semi_hard"])
def test_triplet_gradcheck(mining):
    x, y = make_batch((2, 3, 2), dim=3, seed=6)
    x.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda e: TripletLoss(mining=mining, margin=0.5)(e, y), (x,))


@pytest.mark.parametrize("mining", ["all", "batch_hard", "semi_hard"])
def test_triplet_equal_rows_finite_gradient(mining):
    x, y = make_batch((3, 3), dim=4, seed=7)
    x = x.clone()
    x[1] = x[0]
    x[2] = x[0]
    x.requires_grad_(True)
    TripletLoss(mining=mining)(x, y).backward()
    assert torch.isfinite(x.grad).all()


def test_triplet_unknown_mining():
    with pytest.raises(ValueError, match="batch_hard"):
        TripletLoss(mining="hardest")
