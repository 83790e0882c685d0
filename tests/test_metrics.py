"""Tests for rankdml.metrics: brute-force references, hand-worked cases, pytorch-metric-learning."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from rankdml import metrics as M

BACKENDS = ["torch", "faiss"]


# ---------------------------------------------------------------------------------------------
# brute-force references, written straight from the definitions (loops on purpose: readable)
# ---------------------------------------------------------------------------------------------

def ref_order(q: np.ndarray, g: np.ndarray, exclude_self: bool) -> np.ndarray:
    """Full ranking of the gallery per query: sort by (squared distance, index); self removed."""
    d = ((q[:, None, :].astype(np.float64) - g[None, :, :]) ** 2).sum(-1)
    orders = []
    for i in range(len(q)):
        order = sorted(range(len(g)), key=lambda j: (d[i, j], j))
        if exclude_self:
            order.remove(i)
        orders.append(order)
    return np.array(orders)


def ref_metrics(q, ql, g, gl, ks, exclude_self):
    order = ref_order(q, g, exclude_self)
    rec = {k: [] for k in ks}
    p1, rp, ap = [], [], []
    for i in range(len(q)):
        R = int((gl == ql[i]).sum()) - int(exclude_self)
        if R == 0:
            continue  # no correct answer: left out (pytorch-metric-learning's convention)
        rel = gl[order[i]] == ql[i]
        for k in ks:
            rec[k].append(rel[:k].any())
        p1.append(rel[0])
        rp.append(rel[:R].sum() / R)
        ap.append(sum(rel[:j].sum() / j for j in range(1, R + 1) if rel[j - 1]) / R)
    out = {f"recall@{k}": float(np.mean(rec[k])) for k in ks}
    out.update({"precision@1": float(np.mean(p1)), "r_precision": float(np.mean(rp)), "map@r": float(np.mean(ap))})
    return out


def assert_close(a: dict, b: dict, tol: float = 1e-12) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert a[key] == pytest.approx(b[key], abs=tol), key


def layouts(rng):
    """(embeddings, labels, description): sizes, singleton classes, duplicates, integer grids (ties)."""
    x = rng.standard_normal((60, 5)).astype(np.float32)
    yield x, rng.integers(0, 6, 60), "gaussian, 6 classes"
    y = np.concatenate([np.arange(20), rng.integers(0, 20, 30)])  # several singleton classes
    yield rng.standard_normal((50, 3)).astype(np.float32), y, "singletons"
    x = rng.standard_normal((40, 4)).astype(np.float32)
    x = np.concatenate([x, x[:15], x[:5]])  # exact duplicates, sometimes of another class
    yield x, rng.integers(0, 7, len(x)), "duplicated embeddings"
    x = rng.integers(-2, 3, (120, 2)).astype(np.float32)  # small integer grid: exact ties everywhere
    yield x, rng.integers(0, 9, 120), "integer grid with ties"
    yield rng.integers(0, 2, (33, 1)).astype(np.float32), rng.integers(0, 3, 33), "two points on a line"


@pytest.mark.parametrize("backend", BACKENDS)
def test_retrieval_matches_brute_force(backend):
    rng = np.random.default_rng(0)
    for x, y, what in layouts(rng):
        ks = (1, 2, 4, 8)
        got = M.retrieval_metrics(x, y, ks, nmi=False, backend=backend)
        assert_close(got, ref_metrics(x, y, x, y, ks, exclude_self=True))
        for v in got.values():
            assert isinstance(v, float) and 0.0 <= v <= 1.0, what


def tie_heavy_layouts(rng):
    """Leave-one-out cases where the order among equal distances decides the metrics."""
    yield from layouts(rng)
    x = rng.integers(0, 2, (200, 3)).astype(np.float32)  # 8 distinct points, ~25 copies each
    yield x, rng.integers(0, 30, 200), "8 points, 30 classes"
    x = rng.integers(-1, 2, (300, 2)).astype(np.float32) * 0.5
    yield x, np.repeat(np.arange(60), 5), "grid, classes of 5 (SOP-like)"
    x = np.zeros((40, 4), dtype=np.float32)
    yield x, rng.integers(0, 4, 40), "all identical"


@pytest.fixture
def rank_search(monkeypatch):
    """Use the first-positive-rank search whatever the ks (by default only when max(ks) >> R_max)."""
    monkeypatch.setattr(M, "_RANK_SEARCH_MIN_RATIO", 0)
    calls = []
    real = M._loo_search
    monkeypatch.setattr(M, "_loo_search", lambda *a: calls.append(1) or real(*a))
    return calls


def test_rank_search_matches_topk_search_on_ties(rank_search):
    """The first-positive-rank search gives the old top-K_max search's values to the last digit."""
    from tests.reference.metrics import topk_retrieval_metrics

    rng = np.random.default_rng(5)
    for x, y, what in tie_heavy_layouts(rng):
        for ks in [(1, 2, 4, 8), (1, 10, len(y) - 1)]:
            got = M.retrieval_metrics(x, y, ks, nmi=False, backend="torch")
            assert rank_search.pop(), "the rank search was not used"
            assert got == topk_retrieval_metrics(x, y, ks), (what, ks)  # exact, not approx
            assert_close(got, ref_metrics(x, y, x, y, ks, exclude_self=True))


def test_rank_search_matches_topk_search_on_continuous_data():
    """Several blocks, the band of undecided items in use, ranks in the hundreds: still equal.

    Default dispatch: K = 1000 >> R_max, so the rank search is the one used."""
    from tests.reference.metrics import topk_retrieval_metrics

    rng = np.random.default_rng(6)
    x = rng.standard_normal((2500, 24)).astype(np.float32)
    y = rng.permutation(np.concatenate([np.arange(450), rng.integers(0, 450, 2048), [1000, 1001]]))
    ks = (1, 10, 100, 1000)
    old_block = M._BLOCK_ELEMENTS
    try:
        M._BLOCK_ELEMENTS = 300 * 2500  # 9 row blocks: exercises the column direction
        assert max(ks) > M._RANK_SEARCH_MIN_RATIO * M.num_relevant(y).max()
        got = M.retrieval_metrics(x, y, ks, nmi=False, backend="torch")
    finally:
        M._BLOCK_ELEMENTS = old_block
    assert got == topk_retrieval_metrics(x, y, ks)


def test_first_positive_rank_against_brute_force():
    rng = np.random.default_rng(7)
    x = rng.integers(-2, 3, (150, 2)).astype(np.float32)
    y = rng.integers(0, 12, 150)
    _, _, rank = M._loo_search(x, y, 4, M._classes_padded(y))
    order = ref_order(x, x, True)
    for i in range(len(y)):
        rel = y[order[i]] == y[i]
        if rel.any():
            assert rank[i] == np.argmax(rel), i


def test_classes_padded_and_fallback(monkeypatch, rank_search):
    y = np.array([3, 1, 3, 3, 7, 1])
    np.testing.assert_array_equal(M._classes_padded(y), [[1, 5, -1], [0, 2, 3], [4, -1, -1]])
    x = np.random.default_rng(8).integers(0, 2, (60, 2)).astype(np.float32)
    y = np.random.default_rng(9).integers(0, 5, 60)
    fast = M.retrieval_metrics(x, y, (1, 5, 20), nmi=False, backend="torch")
    assert rank_search.pop()
    monkeypatch.setattr(M, "_MAX_POSITIVE_PAIRS", 10)  # too many pairs: the top-K_max search
    assert M._classes_padded(y) is None
    assert M.retrieval_metrics(x, y, (1, 5, 20), nmi=False, backend="torch") == fast
    assert not rank_search


@pytest.mark.parametrize("backend", BACKENDS)
def test_neighbours_follow_tie_rule(backend):
    rng = np.random.default_rng(1)
    x = rng.integers(0, 2, (80, 3)).astype(np.float32)  # only 8 distinct points: huge tie groups
    dist, idx = M.nearest_neighbours(x, 30, backend=backend)
    np.testing.assert_array_equal(idx, ref_order(x, x, True)[:, :30])
    assert (idx != np.arange(80)[:, None]).all()  # self removed by index
    g = rng.integers(0, 2, (50, 3)).astype(np.float32)
    _, idx = M.nearest_neighbours(x[:20], 25, g, backend=backend)
    np.testing.assert_array_equal(idx, ref_order(x[:20], g, False)[:, :25])


def test_backends_agree_on_continuous_data():
    x = np.random.default_rng(2).standard_normal((3000, 16)).astype(np.float32)
    a = M.nearest_neighbours(x, 12, backend="torch")
    b = M.nearest_neighbours(x, 12, backend="faiss")
    # the two BLAS libraries round differently, so near-ties (|d1 - d2| ~ 1e-6) may swap; the
    # distances must agree and the neighbour sets may differ only in such near-ties
    np.testing.assert_allclose(a[0], b[0], rtol=1e-4, atol=1e-4)
    assert (a[1] == b[1]).mean() > 0.99


@pytest.mark.parametrize("backend", BACKENDS)
def test_hand_worked_line_with_tie_and_singleton(backend):
    # points on a line: index 0 1 2 3 4 at x = 0 1 2 3 10, labels A A B A C (B and C are singletons)
    x = np.array([[0.0], [1.0], [2.0], [3.0], [10.0]], dtype=np.float32)
    y = np.array([0, 0, 1, 0, 2])
    # q0: ranking 1,2,3,4 -> rel 1,0,1 ; R = 2: hit@1, RP 1/2, AP (1/1)/2 = 1/2
    # q1: items 0 and 2 are both at distance 1: the tie goes to index 0 -> ranking 0,2,3 -> rel 1,0,1
    #     hit@1, RP 1/2, AP 1/2   (the other tie order would give a miss at 1 and AP 1/4)
    # q3: ranking 2,1,0 -> rel 0,1,1 ; miss@1, hit@2, RP 1/2, AP (1/2)/2 = 1/4
    # q2 and q4 have R = 0 and are left out: means over 3 queries
    got = M.retrieval_metrics(x, y, (1, 2, 4), nmi=False, backend=backend)
    assert got == pytest.approx({"recall@1": 2 / 3, "recall@2": 1.0, "recall@4": 1.0, "precision@1": 2 / 3,
                                 "r_precision": 0.5, "map@r": (0.5 + 0.5 + 0.25) / 3}, abs=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_hand_worked_duplicates_self_not_first(backend):
    # five identical points, labels A B B B A: every distance is 0, so the ranking is by index only
    # and the query can sit anywhere among its ties; it must be removed by index.
    # q0: 1,2,3,4 -> B B B A, R=1: miss@1, RP 0, AP 0      q4: 0,1,2,3 -> A..., R=1: hit, RP 1, AP 1
    # q1, q2, q3: e.g. q2: 0,1,3,4 -> A B B A, R=2: miss@1, RP 1/2, AP (1/2)/2 = 1/4
    x = np.zeros((5, 3), dtype=np.float32)
    y = np.array([0, 1, 1, 1, 0])
    got = M.retrieval_metrics(x, y, (1, 4), nmi=False, backend=backend)
    assert got == pytest.approx({"recall@1": 0.2, "recall@4": 1.0, "precision@1": 0.2,
                                 "r_precision": (0 + 1.5 + 1) / 5, "map@r": (0 + 0.75 + 1) / 5}, abs=1e-12)


def test_low_level_functions_on_neighbour_labels():
    # query label 0 with R = 3 and neighbour labels 0 1 0 0: P(1)=1, P(3)=2/3 -> AP@R = (1 + 2/3)/3
    knn = np.array([[0, 1, 0, 0], [1, 1, 1, 0]])
    q = np.array([0, 0])
    r = np.array([3, 0])  # second query: R = 0, left out
    assert M.map_at_r(knn, q, r) == pytest.approx((1 + 2 / 3) / 3)
    assert M.r_precision(knn, q, r) == pytest.approx(2 / 3)
    assert M.recall_at_k(knn, q, 1, r) == 1.0
    assert M.precision_at_k(knn, q, 4, r) == pytest.approx(3 / 4)
    np.testing.assert_array_equal(M.num_relevant([0, 0, 1, 2, 2, 2]), [1, 1, 0, 2, 2, 2])
    np.testing.assert_array_equal(M.num_relevant([0, 5, 2], [2, 2, 0, 7]), [1, 0, 2])
    with pytest.raises(ValueError, match="needs 3 neighbours"):
        M.map_at_r(knn[:, :2], q, r)


# ---------------------------------------------------------------------------------------------
# pytorch-metric-learning cross-check
# ---------------------------------------------------------------------------------------------

def test_agrees_with_pytorch_metric_learning():
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

    rng = np.random.default_rng(3)
    centers = rng.standard_normal((30, 16)) * 1.5
    y = np.concatenate([np.arange(30), rng.integers(0, 30, 370), [30, 31]])  # classes 30, 31: singletons
    x = (np.concatenate([centers, rng.standard_normal((2, 16))])[y] + rng.standard_normal((402, 16))).astype(np.float32)
    # k="max_bin_count": PML searches R_max neighbours, as we do; leave-one-out is its
    # ref_includes_query=True (reference omitted); its NMI runs faiss k-means with niter=20 and faiss's
    # defaults seed=1234, max_points_per_centroid=256 (no sub-sampling here: 402 < 32 * 256).
    calc = AccuracyCalculator(include=("precision_at_1", "r_precision", "mean_average_precision_at_r", "NMI"),
                              k="max_bin_count", device=torch.device("cpu"))
    pml = calc.get_accuracy(torch.from_numpy(x), torch.from_numpy(y))
    ours = M.retrieval_metrics(x, y, (1,), nmi=False)
    assert ours["precision@1"] == pytest.approx(pml["precision_at_1"], abs=1e-9)
    assert ours["r_precision"] == pytest.approx(pml["r_precision"], abs=1e-9)
    assert ours["map@r"] == pytest.approx(pml["mean_average_precision_at_r"], abs=1e-9)
    nmi = M.nmi_score(x, y, seed=1234, niter=20, max_points_per_centroid=256)
    assert nmi == pytest.approx(pml["NMI"], abs=1e-6)


# ---------------------------------------------------------------------------------------------
# NMI
# ---------------------------------------------------------------------------------------------

def blobs(n_classes: int, per_class: int, spread: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((n_classes, 8)) * 10
    y = np.repeat(np.arange(n_classes), per_class)
    return (centers[y] + spread * rng.standard_normal((len(y), 8))).astype(np.float32), y


def test_nmi_perfect_clustering_and_determinism():
    x, y = blobs(5, 40, 0.01)
    assert M.nmi_score(x, y, nredo=5) == pytest.approx(1.0)
    x, y = blobs(10, 30, 4.0, seed=1)
    a = M.retrieval_metrics(x, y, seed=7)["nmi"]
    b = M.retrieval_metrics(x, y, seed=7)["nmi"]
    assert a == b and 0 < a < 1


def test_nmi_close_to_sklearn_kmeans():
    from sklearn.cluster import KMeans
    from sklearn.metrics import normalized_mutual_info_score

    x, y = blobs(8, 50, 3.0, seed=2)
    ref = normalized_mutual_info_score(y, KMeans(8, n_init=10, random_state=0).fit_predict(x))
    assert M.nmi_score(x, y, nredo=10) == pytest.approx(ref, abs=0.03)


def test_ami_is_chance_corrected_where_nmi_is_not():
    """807 classes of ~4 items, clustered at random with the same sizes: NMI ~0.8, AMI ~0 (issue 10)."""
    pytest.importorskip("faiss")
    from sklearn.metrics import adjusted_mutual_info_score

    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(200), 4)
    noise = rng.normal(size=(labels.size, 16)).astype(np.float32)  # embeddings that know nothing
    out = M.clustering_scores(noise, labels)
    assert out["nmi"] > 0.6 and abs(out["ami"]) < 0.05, out
    centres = rng.normal(size=(200, 16)).astype(np.float32) * 10
    good = M.clustering_scores(centres[labels] + 0.01 * noise, labels)  # well separated classes
    assert good["ami"] > 0.7 and good["nmi"] > 0.9  # k-means finds most (not all: local optima) of 200 clusters
    clusters = M.kmeans_assign(noise, 200)
    assert out["ami"] == pytest.approx(adjusted_mutual_info_score(labels, clusters))
    both = M.retrieval_metrics(noise, labels, (1, 2))
    assert both["nmi"] == out["nmi"] and both["ami"] == out["ami"]  # one clustering for both


def test_kmeans_says_when_the_budget_cuts_iterations():
    pytest.importorskip("faiss")
    x = np.random.default_rng(0).normal(size=(200, 8)).astype(np.float32)
    with pytest.warns(RuntimeWarning, match=r"1 Lloyd iteration\(s\) instead of 20"):
        M.kmeans_assign(x, 10, flop_budget=1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the full 20 iterations: no warning
        M.kmeans_assign(x, 10)
        M.kmeans_assign(x, 10, niter=1, flop_budget=1.0)  # asked for explicitly: no warning either


def test_kmeans_niter_budget():
    assert M.kmeans_niter(5924, 100, 512) == 20  # CUB: full 20 iterations
    assert M.kmeans_niter(60502, 11316, 512) < 20  # SOP: reduced to fit the budget
    assert M.kmeans_niter(60502, 11316, 512, flop_budget=1.0) == 1


# ---------------------------------------------------------------------------------------------
# query vs gallery
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
def test_query_gallery_matches_brute_force(backend):
    rng = np.random.default_rng(4)
    for q, g in [(rng.standard_normal((40, 6)), rng.standard_normal((70, 6))),
                 (rng.integers(0, 2, (40, 2)), rng.integers(0, 2, (70, 2)))]:  # ties
        q, g = q.astype(np.float32), g.astype(np.float32)
        ql, gl = rng.integers(0, 12, 40), rng.integers(0, 10, 70)  # labels 10, 11: not in the gallery
        ks = (1, 5, 10)
        got = M.query_gallery_metrics(q, ql, g, gl, ks, backend=backend)
        assert_close(got, ref_metrics(q, ql, g, gl, ks, exclude_self=False))


# ---------------------------------------------------------------------------------------------
# embed / evaluate
# ---------------------------------------------------------------------------------------------

def test_embed_and_evaluate_tiny_model():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 4))
    model.train()
    images = torch.randn(30, 3, 2, 2)
    labels = torch.arange(30) % 5
    ds = TensorDataset(images, labels)
    emb, lab = M.embed(model, ds, batch_size=7, device="cpu")
    assert emb.shape == (30, 4) and emb.dtype == torch.float32 and lab.dtype == torch.int64
    with torch.no_grad():
        torch.testing.assert_close(emb, model(images))
    assert torch.equal(lab, labels) and model.training  # order kept, training mode restored
    out = M.evaluate(model, ds, (1, 2), batch_size=8, device="cpu")
    assert out == pytest.approx(M.retrieval_metrics(emb, lab, (1, 2)))
    assert set(out) == {"recall@1", "recall@2", "precision@1", "r_precision", "map@r", "nmi", "ami"}
    out = M.evaluate(model, TensorDataset(images[:10], labels[:10]), (1, 3), gallery=TensorDataset(images[10:], labels[10:]),
                     device="cpu")
    assert out == pytest.approx(M.query_gallery_metrics(emb[:10], lab[:10], emb[10:], lab[10:], (1, 3)))


# ---------------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------------

def test_errors():
    x = np.random.default_rng(5).standard_normal((6, 3)).astype(np.float32)
    y = np.array([0, 0, 1, 1, 2, 2])
    with pytest.raises(ValueError, match="disagree on N"):
        M.retrieval_metrics(x, y[:5])
    with pytest.raises(ValueError, match=r"shape \(N, D\)"):
        M.retrieval_metrics(x[0], y)
    bad = x.copy()
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match="NaN or inf"):
        M.retrieval_metrics(bad, y)
    with pytest.raises(ValueError, match="at least 2 items"):
        M.retrieval_metrics(x[:1], y[:1])
    with pytest.raises(ValueError, match=r"ks=\(1, 8\).*allowed K: 1..5"):
        M.retrieval_metrics(x, y, (1, 8))
    with pytest.raises(ValueError, match="positive int"):
        M.retrieval_metrics(x, y, (0, 1))
    with pytest.raises(ValueError, match="positive int"):
        M.retrieval_metrics(x, y, (1.5,))
    with pytest.raises(ValueError, match="integer labels"):
        M.retrieval_metrics(x, y.astype(float))
    with pytest.raises(ValueError, match="at least 2 classes"):
        M.retrieval_metrics(x, np.zeros(6, dtype=int), (1,))
    assert M.retrieval_metrics(x, np.zeros(6, dtype=int), (1,), nmi=False)["recall@1"] == 1.0
    with pytest.raises(ValueError, match="R = 0"):
        M.retrieval_metrics(x, np.arange(6), (1,), nmi=False)
    with pytest.raises(ValueError, match="dimension"):
        M.query_gallery_metrics(x, y, x[:, :2], y)
    with pytest.raises(ValueError, match=r"allowed K: 1..6"):
        M.query_gallery_metrics(x, y, x, y, (7,))
    with pytest.raises(ValueError, match="no query label occurs in the gallery"):
        M.query_gallery_metrics(x, y, x, y + 10, (1,))
    with pytest.raises(ValueError, match="backend"):
        M.retrieval_metrics(x, y, (1,), backend="annoy")


# --------------------------------------------------------------------------------------------------
# chance levels
# --------------------------------------------------------------------------------------------------

def _naive_random_ranking_scores(labels, ks):
    """Every metric averaged over *all* orders of the other items of each query (exhaustive)."""
    import itertools

    labels = list(labels)
    per_query = []
    for q, lq in enumerate(labels):
        others = [labels[i] for i in range(len(labels)) if i != q]
        r = sum(lab == lq for lab in others)
        if r == 0:
            continue
        sums = dict.fromkeys([f"recall@{k}" for k in ks] + ["precision@1", "r_precision", "map@r"], 0.0)
        orders = list(itertools.permutations(others))
        for order in orders:
            rel = [lab == lq for lab in order]
            for k in ks:
                sums[f"recall@{k}"] += any(rel[:k])
            sums["precision@1"] += rel[0]
            sums["r_precision"] += sum(rel[:r]) / r
            sums["map@r"] += sum(sum(rel[:i + 1]) / (i + 1) for i in range(r) if rel[i]) / r
        per_query.append({key: value / len(orders) for key, value in sums.items()})
    return {key: float(np.mean([row[key] for row in per_query])) for key in per_query[0]}


def test_chance_levels_equal_the_average_over_every_random_order():
    labels = np.array([0, 0, 1, 1, 1, 2, 2, 3])  # class 3 has one item: its query is left out
    ks = (1, 2, 4)
    got = M.chance_levels(labels, ks)
    want = _naive_random_ranking_scores(labels, ks)
    for key, value in want.items():
        assert got[key] == pytest.approx(value, abs=1e-12), key
    assert got["ami"] == 0.0


def _expected_nmi_of_a_relabelling(labels):
    """E[NMI] of a random permutation of the labels: E[I] / H, E[I] from Vinh et al. (2010), eq. 24a."""
    from scipy.special import gammaln

    n = len(labels)
    sizes = np.bincount(labels)
    sizes = sizes[sizes > 0]
    h = -np.sum(sizes / n * np.log(sizes / n))
    emi = 0.0
    for a in sizes:
        for b in sizes:
            for nij in range(max(1, a + b - n), min(a, b) + 1):
                log_p = (gammaln(a + 1) + gammaln(b + 1) + gammaln(n - a + 1) + gammaln(n - b + 1) - gammaln(n + 1)
                         - gammaln(nij + 1) - gammaln(a - nij + 1) - gammaln(b - nij + 1) - gammaln(n - a - b + nij + 1))
                emi += nij / n * np.log(n * nij / (a * b)) * np.exp(log_p)
    return emi / h  # both labellings have entropy H, so NMI = I / H


def test_chance_nmi_matches_the_expected_mutual_information():
    labels = np.repeat(np.arange(30), [3, 4, 5] * 10)
    got = M.chance_levels(labels, permutations=400)["nmi"]
    assert got == pytest.approx(_expected_nmi_of_a_relabelling(labels), abs=2e-3)
    assert got > 0.5  # small classes: NMI's chance level is far from 0


def test_chance_levels_reject_bad_labels():
    with pytest.raises(ValueError, match="single item"):
        M.chance_levels(np.arange(5), ks=(1,))
    with pytest.raises(ValueError, match="1-D integer"):
        M.chance_levels(np.zeros((3, 2), dtype=int))
    with pytest.raises(ValueError, match="1-D integer"):
        M.chance_levels(np.array([0.0, 0.0, 1.0]))
    with pytest.raises(ValueError, match="candidates"):
        M.chance_levels(np.array([0, 0, 1, 1]), ks=(4,))
    with pytest.raises(ValueError, match="at least 2 classes"):
        M.chance_levels(np.zeros(6, dtype=np.int64))
