"""The five accuracies: naive references, hand-built cases with known values, greedy vs Hungarian."""
from __future__ import annotations

import pytest
import torch

from rankdml import accuracy as A

from . import reference as ref
from .conftest import clustered_batch


def _data(seed=0, n=40, dim=4, M=9, classes=3):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(M, dim, generator=g, dtype=torch.float64)
    centre_labels = torch.arange(M) % classes * 2 + 1  # labels 1, 3, 5 (not 0..C-1)
    x = torch.randn(n, dim, generator=g, dtype=torch.float64)
    y = torch.randint(classes, (n,), generator=g) * 2 + 1
    return x, y, centres, centre_labels


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_accuracies_match_reference(seed):
    x, y, cen, cl = _data(seed)
    xn, yn, cn, cln = x.numpy(), y.numpy(), cen.numpy(), cl.numpy()
    assert A.simple_accuracy(x, y, cen, cl) == pytest.approx(ref.simple_accuracy(xn, yn, cn, cln), abs=1e-12)
    for L, var in [(1, 0.5), (4, 0.3), (128, 2.0)]:
        assert A.magnet_accuracy(x, y, cen, cl, var, L=L) == pytest.approx(
            ref.magnet_accuracy(xn, yn, cn, cln, var, L), abs=1e-12)
    for sigma in (0.5, 1.5):
        assert A.repmet_accuracy(x, y, cen, cl, sigma) == pytest.approx(
            ref.repmet_accuracy(xn, yn, cn, cln, sigma), abs=1e-12)
    clusters = torch.randint(5, (len(y),), generator=torch.Generator().manual_seed(seed))
    assert A.batch_accuracy(x, clusters) == pytest.approx(ref.batch_accuracy(xn, clusters.numpy()), abs=1e-12)


def test_class_scores_match_reference_probabilities():
    x, y, cen, cl = _data(3, n=6)
    scores, classes = A.class_scores(x, cen, cl, 0.7, nearest=4)
    assert classes.tolist() == [1, 3, 5]
    for n in range(len(x)):
        d = ((x[n] - cen) ** 2).sum(1)
        near = d.argsort()[:4]
        w = torch.exp(-d[near] / 1.4)
        for ci, c in enumerate(classes):
            want = (w * (cl[near] == c)).sum() / w.sum()
            assert scores[n, ci].item() == pytest.approx(want.item(), abs=1e-12)
    assert torch.allclose(scores.sum(1), torch.ones(len(x), dtype=torch.float64))


def test_far_items_do_not_underflow():
    # distances of 1e6 / (2 sigma^2): exp underflows to 0 for every centre; the shift keeps the arg-max right
    cen = torch.tensor([[0.0], [10.0]], dtype=torch.float64)
    cl = torch.tensor([0, 1])
    x, y = torch.tensor([[1000.0], [-1000.0]], dtype=torch.float64), torch.tensor([1, 0])
    assert A.magnet_accuracy(x, y, cen, cl, 0.5) == 1.0
    assert A.repmet_accuracy(x, y, cen, cl, 0.5) == 1.0


def test_well_separated_clusters_give_100_percent():
    x, y, c = clustered_batch(4, 3, 5, dim=6, seed=11, spread=1e-3)
    means = torch.stack([x[c == m].mean(0) for m in range(12)])
    mlab = torch.stack([y[c == m][0] for m in range(12)])
    assert A.batch_accuracy(x, c) == 1.0
    assert A.simple_accuracy(x, y, means, mlab) == 1.0
    assert A.magnet_accuracy(x, y, means, mlab, 0.1, L=128) == 1.0
    assert A.repmet_accuracy(x, y, means, mlab, 0.5) == 1.0
    xk, yk, _ = clustered_batch(4, 1, 10, dim=6, seed=12, spread=1e-3)
    for matching in ("hungarian", "greedy"):
        assert A.unsupervised_accuracy(xk.float(), yk, matching=matching) == 1.0


def test_one_swapped_cluster_by_hand():
    # 4 classes x 1 cluster of 5 items, well separated; the centre list swaps the labels of classes 0 and 1:
    # their 10 items are then wrong, the other 10 right: 50 % for simple, Magnet and RepMet accuracy.
    x, y, c = clustered_batch(4, 1, 5, dim=3, seed=13, spread=1e-2)
    classes = [1, 3, 5, 7]
    means = torch.stack([x[y == k].mean(0) for k in classes])
    swapped = torch.tensor([3, 1, 5, 7])
    assert A.simple_accuracy(x, y, means, swapped) == 0.5
    assert A.magnet_accuracy(x, y, means, swapped, 0.5) == 0.5
    assert A.repmet_accuracy(x, y, means, swapped, 0.5) == 0.5
    # one cluster of 5 items (class 5) moved onto class 1's: batch accuracy -- 10 items share two equal
    # means, argmin ties go to the lower cluster id, so the 5 items of cluster 2 (class 5) are wrong: 15/20
    x2 = x.clone()
    x2[y == 5] = x[y == 1]
    assert A.batch_accuracy(x2, c) == 0.75
    # unsupervised: labels of one cluster swapped with another's -> a matching recovers 100 %
    ids = c.clone()
    ids[c == 0], ids[c == 1] = 1, 0
    assert A.matching_accuracy(ids, y) == 1.0


def test_k1_magnet_equals_simple():
    x, y, cen, cl = _data(4, M=3)  # one centre per class
    for var in (0.05, 1.0, 30.0):
        assert A.magnet_accuracy(x, y, cen, cl, var) == A.simple_accuracy(x, y, cen, cl)
        assert A.repmet_accuracy(x, y, cen, cl, var) == A.simple_accuracy(x, y, cen, cl)


def test_repmet_sigma_versus_variance_matters_for_k_above_1():
    # class 0 has two representatives at squared distance 1 and 1.2 from the item, class 1 one at 0.5.
    # Training's sigma = 0.5 (factor 1/(2 sigma^2) = 2): e^-2 + e^-2.4 = 0.226 < e^-1 = 0.368 -> class 1;
    # the original's prediction, 0.5 used as a variance (factor 1): e^-1 + e^-1.2 = 0.669 > e^-0.5 = 0.607
    # -> class 0. The two conventions disagree once a class has several representatives.
    reps = torch.tensor([[1.0, 0.0], [0.0, 1.2 ** 0.5], [-0.5 ** 0.5, 0.0]], dtype=torch.float64)
    rl = torch.tensor([0, 0, 1])
    x, y = torch.zeros(1, 2, dtype=torch.float64), torch.tensor([0])
    assert A.repmet_accuracy(x, y, reps, rl, 0.5) == 0.0
    assert A.repmet_accuracy(x, y, reps, rl, 0.5 ** 0.5) == 1.0
    assert A.simple_accuracy(x, y, reps, rl) == 0.0


def test_greedy_and_hungarian_differ():
    # contingency (clusters x classes) = [[5, 4], [4, 0]] (9 + 4 items):
    # greedy takes (0, 0) = 5 first, then only (1, 1) = 0 is left: 5 / 13;
    # the best one-to-one matching is (0, 1) + (1, 0) = 8: 8 / 13.
    ids = [0] * 9 + [1] * 4
    labels = [0] * 5 + [1] * 4 + [0] * 4
    assert A.matching_accuracy(ids, labels, matching="greedy") == pytest.approx(5 / 13)
    assert A.matching_accuracy(ids, labels, matching="hungarian") == pytest.approx(8 / 13)
    assert ref.best_matching_accuracy(ids, labels) == pytest.approx(8 / 13)


@pytest.mark.parametrize("seed", range(4))
def test_hungarian_is_the_best_matching(seed):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, (30,), generator=g) * 10  # arbitrary cluster ids
    labels = torch.randint(5, (30,), generator=g) + 100
    best = ref.best_matching_accuracy(ids.tolist(), labels.tolist())
    assert A.matching_accuracy(ids, labels) == pytest.approx(best, abs=1e-12)
    assert A.matching_accuracy(ids, labels, matching="greedy") <= best + 1e-12


def test_accuracy_bad_inputs():
    x, y, cen, cl = _data(5)
    with pytest.raises(ValueError, match="centres of shape"):
        A.simple_accuracy(x, y, cen[:, :2], cl)
    with pytest.raises(ValueError, match="one label per centre"):
        A.magnet_accuracy(x, y, cen, cl[:-1], 0.5)
    with pytest.raises(ValueError, match="variance > 0"):
        A.magnet_accuracy(x, y, cen, cl, 0.0)
    with pytest.raises(ValueError, match="sigma must be > 0"):
        A.repmet_accuracy(x, y, cen, cl, -1.0)
    with pytest.raises(ValueError, match="matching must be"):
        A.matching_accuracy([0, 1], [0, 1], matching="optimal")
    with pytest.raises(ValueError, match="same shape"):
        A.matching_accuracy([0, 1, 1], [0, 1])
    with pytest.raises(ValueError, match="NaN"):
        A.simple_accuracy(x.clone().fill_(float("nan")), y, cen, cl)
    with pytest.raises(ValueError, match="distinct classes"):
        A.unsupervised_accuracy(x.float(), torch.zeros_like(y))


def test_unsupervised_accuracy_is_the_best_matching_of_its_kmeans():
    from rankdml.metrics import kmeans_assign

    x, y, _ = clustered_batch(4, 1, 8, dim=3, seed=14, spread=2.0)  # overlapping classes
    x = x.float()
    ids = kmeans_assign(x.numpy(), 4, seed=3, niter=35, nredo=15)
    want = ref.best_matching_accuracy(ids.tolist(), y.tolist())
    assert A.unsupervised_accuracy(x, y, seed=3) == pytest.approx(want, abs=1e-12)
    assert A.unsupervised_accuracy(x, y, seed=3, matching="greedy") <= want + 1e-12
