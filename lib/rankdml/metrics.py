"""Retrieval metrics for deep metric learning: Recall@K, precision@1, R-precision, MAP@R and NMI.

Protocol (the "zero-shot" DML evaluation shared by PADS, Smooth-AP and tf_retrieval_baseline):
embed every test item, then use each item as a query against all the others (leave-one-out), or,
for In-Shop, every query item against a separate gallery.

Conventions, fixed once here and used by every function of this module:

* **Distance.** Squared Euclidean distance ``d(q, g) = |q|^2 + |g|^2 - 2 q.g`` in float32, clamped
  at 0 (round-off can make it slightly negative). On L2-normalised embeddings this ranks items
  exactly as cosine similarity does.
* **Ties.** Neighbours are sorted by ``(distance, gallery index)``: equal distances are broken in
  favour of the lower gallery index. This is made true, not hoped for: the search returns one
  neighbour more than needed, the candidates are stably re-sorted by (distance, index), and a
  query whose last needed neighbour is tied with the first one not returned is searched again with
  twice as many neighbours, until the cut is clean (or the whole gallery is returned).
* **Self-exclusion.** In leave-one-out mode the query is removed by its *index*, wherever it lands
  in the list (with duplicates or ties it need not be the first hit), never by dropping column 0.
* **R.** ``R(q)`` = number of gallery items with the query's label, the query itself excluded
  (leave-one-out: class size - 1).
* **Queries with R = 0** (a class with a single item, or a query class absent from the gallery)
  have no correct answer. As in pytorch-metric-learning's ``AccuracyCalculator`` they are left
  out of every retrieval metric (Recall@K, precision@1, R-precision, MAP@R); all metrics are means
  over the queries with R >= 1. They still count for NMI, which clusters every item. If no query
  has R >= 1, a ValueError is raised (every metric would be 0/0).

Exact k-nearest-neighbour search has two back-ends, selected with ``backend``:

* ``"faiss"``: ``faiss.IndexFlatL2`` (``GpuIndexFlatL2`` when faiss is built with GPU support and
  CUDA is present).
* ``"torch"``: blocked matrix products with ``torch.topk``, on CUDA when present, else on the CPU.
  In leave-one-out mode it computes each block of the symmetric distance matrix once and uses it
  for both its rows and its columns (half the arithmetic).
* ``"auto"`` (default): faiss on GPU when faiss has GPU support and CUDA is present, otherwise
  torch. Reason, measured on the 2-core CPU this library is developed on: the faiss-cpu wheel's
  BLAS runs at ~60 GFLOP/s, torch's MKL at ~140 GFLOP/s, and the symmetric trick halves the work,
  so leave-one-out search on 60,000 x 512 takes ~53 s with faiss and ~15 s with torch.

Both back-ends are exact and give the same neighbour lists up to float round-off in near-ties.

Leave-one-out metrics with the torch back-end and a K list much longer than the classes (SOP:
K up to 1000, ~5 items per class) skip the top-K lists: Recall@K needs only each query's
first-positive rank, counted in one symmetric pass that also keeps the top R_max for P@1,
R-precision and MAP@R (`_loo_ranking_metrics`; same values to the last digit, same distances).
"""
from __future__ import annotations

import math
import os
import warnings
from typing import Any, Iterable, Literal, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from rankdml import reproducible
from rankdml._faiss import import_faiss
from rankdml.runtime import progress as progress_bar, resolve_device

__all__ = [
    "retrieval_metrics", "query_gallery_metrics", "embed", "evaluate",
    "nearest_neighbours", "num_relevant", "recall_at_k", "precision_at_k", "r_precision", "map_at_r",
    "nmi_score", "clustering_scores", "kmeans_assign", "kmeans_niter", "chance_levels",
]

Backend = Literal["auto", "faiss", "torch"]
ArrayLike = Any  # torch.Tensor | np.ndarray | sequence

#: faiss's GPU k-selection handles at most this many neighbours per query.
_FAISS_GPU_MAX_K = 2048
#: Elements of one block of the distance matrix in the torch back-end (2**26 floats = 256 MiB).
_BLOCK_ELEMENTS = 1 << 26
#: Default arithmetic budget for k-means on the CPU (see `kmeans_niter`).
KMEANS_FLOP_BUDGET = 1.5e12
#: Default number of Lloyd iterations when the budget allows it (PADS / Smooth-AP use 20).
KMEANS_NITER = 20


# --------------------------------------------------------------------------------------------------
# input handling
# --------------------------------------------------------------------------------------------------

def _to_numpy(x: ArrayLike) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _check_embeddings(embeddings: ArrayLike, labels: ArrayLike, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Return (float32 C-contiguous (N, D), int64 (N,)) or raise a ValueError that says what is wrong."""
    emb = _to_numpy(embeddings)
    lab = _to_numpy(labels)
    if emb.ndim != 2:
        raise ValueError(f"{what}: expected embeddings of shape (N, D), got shape {emb.shape}")
    if lab.ndim != 1:
        raise ValueError(f"{what}: expected labels of shape (N,), got shape {lab.shape}")
    if emb.shape[0] != lab.shape[0]:
        raise ValueError(f"{what}: embeddings and labels disagree on N: {emb.shape[0]} embeddings, "
                         f"{lab.shape[0]} labels")
    if emb.shape[1] < 1:
        raise ValueError(f"{what}: embeddings have dimension 0")
    if not (np.issubdtype(emb.dtype, np.floating) or np.issubdtype(emb.dtype, np.integer)):
        raise ValueError(f"{what}: expected real-valued embeddings, got dtype {emb.dtype}")
    if not np.issubdtype(lab.dtype, np.integer):
        raise ValueError(f"{what}: expected integer labels, got dtype {lab.dtype}")
    emb = np.ascontiguousarray(emb, dtype=np.float32)
    if not np.isfinite(emb).all():
        bad = int((~np.isfinite(emb).all(axis=1)).sum())
        raise ValueError(f"{what}: {bad} embedding(s) contain NaN or inf (or overflow float32); "
                         "check the model's output")
    return emb, lab.astype(np.int64, copy=False)


def _check_ks(ks: Iterable[int], max_k: int, what: str) -> tuple[int, ...]:
    ks = tuple(ks) if not isinstance(ks, (int, np.integer)) else (ks,)
    if not ks:
        raise ValueError(f"{what}: ks is empty; give at least one K, e.g. ks=(1, 2, 4, 8)")
    for k in ks:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"{what}: every K in ks must be a positive int, got ks={ks!r}")
    if max(ks) > max_k:
        raise ValueError(f"{what}: ks={ks!r} asks for {max(ks)} neighbours but each query has only "
                         f"{max_k} candidates; allowed K: 1..{max_k}")
    return tuple(int(k) for k in ks)


def _faiss():
    """Import faiss and keep its OpenMP thread count at the number of cores we may use."""
    # Imported lazily (it costs ~0.3 s and only the metrics need it); the error names the install fix.
    faiss = import_faiss()

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if reproducible.requested():
        cores = reproducible.THREADS  # k-means sums per thread: the split must not depend on the machine
    if faiss.omp_get_max_threads() != cores:
        faiss.omp_set_num_threads(cores)
    return faiss


def _faiss_gpu_available() -> bool:
    try:
        faiss = _faiss()
    except ImportError:
        return False
    return hasattr(faiss, "StandardGpuResources") and torch.cuda.is_available() and faiss.get_num_gpus() > 0


def _resolve_backend(backend: Backend) -> str:
    if backend == "auto":
        return "faiss" if _faiss_gpu_available() else "torch"
    if backend not in ("faiss", "torch"):
        raise ValueError(f"backend must be 'auto', 'faiss' or 'torch', got {backend!r}")
    return backend


# --------------------------------------------------------------------------------------------------
# exact k-NN search
# --------------------------------------------------------------------------------------------------

def _search_faiss(query: np.ndarray, gallery: np.ndarray, s: int) -> tuple[np.ndarray, np.ndarray]:
    """The s nearest gallery items of each query (any order among ties): (dist (n, s), idx (n, s))."""
    faiss = _faiss()
    d = gallery.shape[1]
    if _faiss_gpu_available() and s <= _FAISS_GPU_MAX_K:
        index = faiss.GpuIndexFlatL2(faiss.StandardGpuResources(), d)
    else:
        index = faiss.IndexFlatL2(d)
    index.add(gallery)
    dist, idx = index.search(query, s)
    return np.maximum(dist, 0.0, out=dist), idx.astype(np.int64, copy=False)


def _torch_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _merge_topk(best_d: torch.Tensor, best_i: torch.Tensor, d: torch.Tensor, i: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep the s smallest of two candidate lists per row (s = best_d.shape[1])."""
    cat_d, cat_i = torch.cat([best_d, d], 1), torch.cat([best_i, i], 1)
    vals, pos = torch.topk(cat_d, best_d.shape[1], dim=1, largest=False, sorted=False)
    return vals, torch.gather(cat_i, 1, pos)


def _search_torch(query: np.ndarray, gallery: np.ndarray, s: int) -> tuple[np.ndarray, np.ndarray]:
    """Blocked exact search: rows of the query set against the whole gallery, `s` best per row."""
    dev = _torch_device()
    g = torch.from_numpy(gallery).to(dev)
    g_sq = (g * g).sum(1)
    n, m = query.shape[0], g.shape[0]
    out_d = torch.empty(n, s, dtype=torch.float32)
    out_i = torch.empty(n, s, dtype=torch.int64)
    rows = max(1, _BLOCK_ELEMENTS // m)
    for r0 in range(0, n, rows):
        q = torch.from_numpy(query[r0:r0 + rows]).to(dev)
        # d = |q|^2 + |g|^2 - 2 q.g, built in place in the product's buffer to save memory traffic
        dist = (q @ g.T).mul_(-2).add_(g_sq[None, :]).add_((q * q).sum(1)[:, None]).clamp_(min=0)
        v, i = torch.topk(dist, s, dim=1, largest=False, sorted=False)
        out_d[r0:r0 + rows], out_i[r0:r0 + rows] = v.cpu(), i.cpu()
    return out_d.numpy(), out_i.numpy()


def _search_torch_symmetric(x: np.ndarray, s: int) -> tuple[np.ndarray, np.ndarray]:
    """Leave-one-out search of `x` against itself, computing each distance block once.

    Row block [r0, r1) is multiplied with columns [r0, N) only; the block's rows give candidates
    for rows r0..r1, its columns (beyond r1) give candidates for the later rows, by the symmetry
    d(i, j) = d(j, i). Candidates are merged into a running top-s per row. The distance of a pair
    is the same float whichever of its two items is the query, so both directions agree.
    """
    dev = _torch_device()
    xt = torch.from_numpy(x).to(dev)
    sq = (xt * xt).sum(1)
    n = xt.shape[0]
    best_d = torch.full((n, s), math.inf, device=dev)
    best_i = torch.full((n, s), -1, dtype=torch.int64, device=dev)
    rows = max(1, _BLOCK_ELEMENTS // n)
    for r0 in range(0, n, rows):
        r1 = min(n, r0 + rows)
        dist = (xt[r0:r1] @ xt[r0:].T).mul_(-2).add_(sq[None, r0:]).add_(sq[r0:r1, None]).clamp_(min=0)
        kr = min(s, dist.shape[1])
        v, i = torch.topk(dist, kr, dim=1, largest=False, sorted=False)
        best_d[r0:r1], best_i[r0:r1] = _merge_topk(best_d[r0:r1], best_i[r0:r1], v, i + r0)
        if r1 < n:
            # columns r1..N-1 of this block: candidates (rows r0..r1-1) for the later queries
            cols = dist[:, r1 - r0:]
            kc = min(s, cols.shape[0])
            v, i = torch.topk(cols, kc, dim=0, largest=False, sorted=False)  # (kc, n - r1)
            best_d[r1:], best_i[r1:] = _merge_topk(best_d[r1:], best_i[r1:], v.T, i.T + r0)
    return best_d.cpu().numpy(), best_i.cpu().numpy()


def _sorted_knn(query: np.ndarray, gallery: np.ndarray, k: int, self_index: np.ndarray | None,
                backend: str, first: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """k neighbours per query sorted by (distance, index), self removed by index when given.

    `first(s)`, when given, returns the first raw search of all queries (the symmetric fast path);
    ties at the cut-off are resolved by re-searching only the affected queries with more neighbours.
    """
    n, m = query.shape[0], gallery.shape[0]
    drop = 0 if self_index is None else 1
    available = m - drop
    out_d = np.empty((n, k), dtype=np.float32)
    out_i = np.empty((n, k), dtype=np.int64)
    pending = np.arange(n)
    s = min(k + 1 + drop, m)  # one extra neighbour to see whether the cut-off falls inside a tie
    raw = _search_faiss if backend == "faiss" else _search_torch
    while pending.size:
        if first is not None:
            dist, idx = first(s)
            first = None
        else:
            dist, idx = raw(np.ascontiguousarray(query[pending]), gallery, s)
        if drop:
            is_self = idx == self_index[pending][:, None]
            # a query whose self is not among the s returned (many exact duplicates, or round-off
            # making d(q, q) > 0) is farther from itself than all of them: drop the last column
            is_self[~is_self.any(1), -1] = True
            keep = ~is_self
            dist = dist[keep].reshape(len(pending), s - 1)
            idx = idx[keep].reshape(len(pending), s - 1)
        order = np.lexsort((idx, dist), axis=1)  # primary key distance, secondary gallery index
        dist = np.take_along_axis(dist, order, 1)
        idx = np.take_along_axis(idx, order, 1)
        if dist.shape[1] >= available:  # the whole gallery was returned: nothing can be missing
            done = np.ones(len(pending), dtype=bool)
        else:
            done = dist[:, k - 1] < dist[:, k]
        out_d[pending[done]] = dist[done, :k]
        out_i[pending[done]] = idx[done, :k]
        pending = pending[~done]
        s = min(2 * s, m)
    return out_d, out_i


def nearest_neighbours(query: ArrayLike, k: int, gallery: ArrayLike | None = None, *,
                       backend: Backend = "auto") -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest neighbours under the module's conventions (squared L2, ties by lower index).

    Args:
        query: (n, D) embeddings.
        k: neighbours per query.
        gallery: (m, D) embeddings; None for leave-one-out search of `query` against itself, where
            each query's own index is excluded.
        backend: "auto", "faiss" or "torch" (see the module docstring).

    Returns:
        (distances (n, k) float32 squared L2, indices (n, k) int64 into the gallery), each row sorted
        by (distance, index).
    """
    q = np.ascontiguousarray(_to_numpy(query), dtype=np.float32)
    g = q if gallery is None else np.ascontiguousarray(_to_numpy(gallery), dtype=np.float32)
    if q.ndim != 2 or g.ndim != 2 or q.shape[1] != g.shape[1]:
        raise ValueError(f"expected query (n, D) and gallery (m, D), got {q.shape} and {g.shape}")
    avail = g.shape[0] - (gallery is None)
    if not 1 <= k <= avail:
        raise ValueError(f"k={k} is out of range: allowed 1..{avail}")
    be = _resolve_backend(backend)
    if gallery is None:
        first = (lambda s: _search_torch_symmetric(q, s)) if be == "torch" else None
        return _sorted_knn(q, q, k, np.arange(q.shape[0]), be, first)
    return _sorted_knn(q, g, k, None, be)


# --------------------------------------------------------------------------------------------------
# leave-one-out search shaped by the metrics: first-positive ranks + a short top list
# --------------------------------------------------------------------------------------------------
#
# Recall@K only asks, per query, whether its first positive (the nearest same-label item under the
# (distance, index) order) is among the first K: it needs the *rank* of that positive, i.e. how many
# other items come before it, not a top-K list. MAP@R and R-precision need the top R_max, P@1 the
# top 1. So one symmetric blocked pass keeps a top-(R_max + 2) list per query (as
# `_search_torch_symmetric`, same blocks, same floats) and counts, per query, the items below a
# certified lower bound of its nearest-positive distance. The few items whose distance falls in
# the uncertainty band [lo, hi] around that distance (the positives among them) are kept with their
# exact block distances and resolved after the pass, once the exact nearest positive is known.

#: Largest C x m^2 (classes x largest class squared: the padded same-label pairs) for which the
#: bounds are computed; above it (a few huge classes among many) the top-K_max search is used.
_MAX_POSITIVE_PAIRS = 1 << 26
#: The rank search is used when max(ks) > this x R_max (below, one top-K_max search is as cheap).
_RANK_SEARCH_MIN_RATIO = 4
#: float32 unit round-off.
_U32 = 2.0 ** -24


def _classes_padded(labels: np.ndarray) -> np.ndarray | None:
    """Item indices grouped by class, (C, m) int64 padded with -1 (m = largest class); None when
    C x m^2 (the work of the bounds) is above `_MAX_POSITIVE_PAIRS`."""
    order = np.argsort(labels, kind="stable")
    _, start, counts = np.unique(labels[order], return_index=True, return_counts=True)
    m = int(counts.max())
    if len(counts) * m * m > _MAX_POSITIVE_PAIRS:
        return None
    pos = start[:, None] + np.arange(m)[None, :]
    return np.where(np.arange(m)[None, :] < counts[:, None], order[np.minimum(pos, len(labels) - 1)], -1)


def _nearest_positive_bounds(xt: torch.Tensor, sq: torch.Tensor, classes: np.ndarray
                             ) -> tuple[torch.Tensor, torch.Tensor]:
    """(lo, hi) float32 (N,): bounds that certainly contain each query's nearest-positive distance.

    The block computes d = fl(fl(-2 fl(q.g) + |g|^2) + |q|^2) in float32 with the float32 norms
    `sq`. The reference here takes its own float32 dot products within each class (a batched
    product over the padded (C, m) classes) and finishes in float64. A float32 dot product of D
    terms, in any summation order, is off by at most gamma_D sum|q_k g_k| <= gamma_D |q||g|
    (gamma_D = D u / (1 - D u)), so the two dot products differ by at most 2 gamma_D |q||g|, and the
    block's two additions add u each: |d_block - d_ref| <= (2 gamma_D + 4u)(|q|^2 + |g|^2). The
    band is twice that. A query without positive gets lo = hi = -inf (nothing counted or kept).
    """
    n, d = xt.shape
    dev = xt.device
    cls = torch.from_numpy(classes).to(dev)  # (C, m)
    c_all, m = cls.shape
    sq64 = sq.double()
    ref = torch.full((n,), math.inf, dtype=torch.float64, device=dev)
    eye = torch.eye(m, dtype=torch.bool, device=dev)
    step = max(1, (1 << 22) // (m * d))  # classes per chunk: ~16 MiB of gathered embeddings
    for c0 in range(0, c_all, step):
        idx = cls[c0:c0 + step]  # (c, m)
        valid = idx >= 0
        safe = idx.clamp(min=0)
        g = xt[safe.reshape(-1)].view(idx.shape[0], m, d)
        dot = torch.bmm(g, g.transpose(1, 2)).double()  # (c, m, m)
        s = sq64[safe]
        dref = (s[:, :, None] + s[:, None, :] - 2.0 * dot).clamp_(min=0.0)
        dref.masked_fill_(~(valid[:, :, None] & valid[:, None, :]) | eye, math.inf)  # not a pair
        nearest = dref.amin(2)  # (c, m)
        ref[safe[valid]] = nearest[valid]
    gamma = d * _U32 / (1.0 - d * _U32)
    eps = 2.0 * (2.0 * gamma + 6.0 * _U32) * (sq64 + sq64.max()) + 1e-30
    lo, hi = ref - eps, ref + eps  # inf - eps = inf for queries without positive: fixed below
    lo32, hi32 = lo.float(), hi.float()  # round outwards so the float32 band still contains [lo, hi]
    lo32 = torch.where(lo32.double() > lo, torch.nextafter(lo32, torch.tensor(-math.inf, device=dev)), lo32)
    hi32 = torch.where(hi32.double() < hi, torch.nextafter(hi32, torch.tensor(math.inf, device=dev)), hi32)
    none = torch.isinf(ref)
    return lo32.masked_fill_(none, -math.inf), hi32.masked_fill_(none, -math.inf)


def _update_top(best_d: torch.Tensor, best_i: torch.Tensor, block: torch.Tensor, items_dim: int, offset: int,
                buf: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Merge a distance block into running top-s lists (items along `items_dim`, numbered from `offset`).

    While some list is not full, `torch.topk` over the block. Afterwards only entries below a
    query's current s-th distance can enter, and they are few: they are found with one comparison
    (strictly below, so an entry tied with the s-th is left out, which keeps a valid set of s
    smallest, as topk's arbitrary order among ties would), ranked per query and merged.
    """
    s = best_d.shape[1]
    if torch.isinf(best_d).any():
        k = min(s, block.shape[items_dim])
        v, i = torch.topk(block, k, dim=items_dim, largest=False, sorted=False)
        if items_dim == 0:
            v, i = v.T, i.T
        return _merge_topk(best_d, best_i, v, i + offset)
    tau = best_d.max(1).values  # (queries,)
    lt = torch.lt(block, tau[:, None] if items_dim == 1 else tau[None, :], out=buf[:block.numel()].view(block.shape))
    a, b = torch.nonzero(lt, as_tuple=True)
    if a.numel() == 0:
        return best_d, best_i
    q, g = (a, b) if items_dim == 1 else (b, a)
    d = block[a, b]
    order = torch.argsort(d, stable=True)
    order = order[torch.argsort(q[order], stable=True)]  # by query, then by distance
    q, g, d = q[order], g[order], d[order]
    counts = torch.bincount(q, minlength=best_d.shape[0])
    rank = torch.arange(q.numel(), device=q.device) - (torch.cumsum(counts, 0) - counts)[q]
    keep = rank < s
    new_d = torch.full_like(best_d, math.inf)
    new_i = torch.full_like(best_i, -1)
    new_d[q[keep], rank[keep]] = d[keep]
    new_i[q[keep], rank[keep]] = g[keep] + offset
    return _merge_topk(best_d, best_i, new_d, new_i)


def _loo_search(x: np.ndarray, labels: np.ndarray, s: int, classes: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One symmetric blocked pass of `x` (N, D) against itself.

    Returns (top_d (N, s), top_i (N, s)): the raw s nearest per row, self included, as
    `_search_torch_symmetric` (same blocks, same distances); and rank (N,) int64: the number of
    other items before each query's first positive in the (distance, index) order (0 = the nearest
    item is a positive; undefined for queries without positive).
    """
    dev = _torch_device()
    xt = torch.from_numpy(x).to(dev)
    sq = (xt * xt).sum(1)
    n = xt.shape[0]
    lo, hi = _nearest_positive_bounds(xt, sq, classes)
    below = torch.zeros(n, dtype=torch.int64, device=dev)  # items certainly closer than the first positive
    band_q, band_g, band_d = [], [], []  # (query, item, block distance) of the undecided items
    best_d = torch.full((n, s), math.inf, device=dev)
    best_i = torch.full((n, s), -1, dtype=torch.int64, device=dev)
    rows = min(n, max(1, _BLOCK_ELEMENTS // n))
    # preallocated block buffers: a fresh 256 MiB tensor per block costs more in page faults than
    # the comparisons themselves
    buf_d = torch.empty(rows * n, device=dev)
    buf_f = torch.empty(rows * n, device=dev)
    buf_le = torch.empty(rows * n, dtype=torch.bool, device=dev)
    buf_lt = torch.empty(rows * n, dtype=torch.bool, device=dev)

    def count_and_band(block: torch.Tensor, lo_b: torch.Tensor, hi_b: torch.Tensor, dim: int):
        """Per query (along `dim`): items with d < lo, and the (row, col) of those with lo <= d <= hi."""
        shape = block.shape
        f = buf_f[:block.numel()].view(shape)
        # 1[d < lo] as a float: sign(lo - d) is +1 exactly when d < lo (a float difference is 0 only
        # for equal floats); float sums are much faster than boolean ones
        below_b = torch.sub(lo_b, block, out=f).sign_().clamp_(min=0).sum(dim)
        le = torch.le(block, hi_b, out=buf_le[:block.numel()].view(shape))
        lt = torch.lt(block, lo_b, out=buf_lt[:block.numel()].view(shape))
        a, b = torch.nonzero(le.logical_xor_(lt), as_tuple=True)
        return below_b.to(torch.int64), a, b

    for r0 in range(0, n, rows):
        r1 = min(n, r0 + rows)
        dist = torch.mm(xt[r0:r1], xt[r0:].T, out=buf_d[:(r1 - r0) * (n - r0)].view(r1 - r0, n - r0))
        dist.mul_(-2).add_(sq[None, r0:]).add_(sq[r0:r1, None]).clamp_(min=0)  # as _search_torch_symmetric
        # the running top-s lists, as _search_torch_symmetric (self included)
        best_d[r0:r1], best_i[r0:r1] = _update_top(best_d[r0:r1], best_i[r0:r1], dist, 1, r0, buf_lt)
        if r1 < n:
            best_d[r1:], best_i[r1:] = _update_top(best_d[r1:], best_i[r1:], dist[:, r1 - r0:], 0, r0, buf_lt)
        dist[:, :r1 - r0].diagonal().fill_(math.inf)  # a query is not its own neighbour
        # rows r0..r1 as queries against items r0..N-1
        cnt, a, b = count_and_band(dist, lo[r0:r1, None], hi[r0:r1, None], 1)
        below[r0:r1] += cnt
        band_q.append(a + r0), band_g.append(b + r0), band_d.append(dist[a, b])
        if r1 < n:  # by symmetry, rows r1..N-1 as queries against items r0..r1 (columns of the block)
            cols = dist[:, r1 - r0:]
            cnt, a, b = count_and_band(cols, lo[None, r1:], hi[None, r1:], 0)
            below[r1:] += cnt
            band_q.append(b + r1), band_g.append(a + r0), band_d.append(cols[a, b])
    q = torch.cat(band_q).cpu().numpy()
    g = torch.cat(band_g).cpu().numpy()
    dv = torch.cat(band_d).cpu().numpy()
    rank = below.cpu().numpy()
    # exact nearest positive (d*, p*) per query: the first positive in (query, distance, index) order
    order = np.lexsort((g, dv, q))
    q, g, dv = q[order], g[order], dv[order]
    pos = labels[q] == labels[g]
    first = np.full(n, -1, dtype=np.int64)
    uq, at = np.unique(q[pos], return_index=True)
    first[uq] = np.flatnonzero(pos)[at]
    has_pos = num_relevant(labels) > 0
    if (first[has_pos] < 0).any():  # cannot happen if the bound holds; never return a wrong number
        raise RuntimeError("retrieval_metrics: a nearest positive fell outside its certified band")
    d_star = np.where(first >= 0, dv[np.maximum(first, 0)], -np.inf)
    p_star = np.where(first >= 0, g[np.maximum(first, 0)], -1)
    before = (dv < d_star[q]) | ((dv == d_star[q]) & (g < p_star[q]))
    rank += np.bincount(q[before], minlength=n)
    return best_d.cpu().numpy(), best_i.cpu().numpy(), rank


def _loo_ranking_metrics(emb: np.ndarray, lab: np.ndarray, r: np.ndarray, ks: Sequence[int]
                         ) -> dict[str, float] | None:
    """`_ranking_metrics` of the leave-one-out search, from first-positive ranks and a top-R_max list.

    Equal to the last digit to `_ranking_metrics(lab[idx], lab, r, ks)` with `idx` the top-K_max
    lists of `nearest_neighbours`: Recall@K = mean over queries with R >= 1 of 1[rank < K] (the
    same booleans, averaged the same way); P@1, R-precision and MAP@R see the same first R_max
    columns (MAP@R on the full K_max width, padded, so that numpy sums in the same order).
    Returns None (use the top-K_max search) when max(ks) is within `_RANK_SEARCH_MIN_RATIO` x R_max
    (e.g. CUB, Cars: R ~ 60-80 > K = 8, so the top-R_max list is needed anyway and the counting would
    only add work) or when the label layout makes the bounds too costly (`_MAX_POSITIVE_PAIRS`).
    """
    n = emb.shape[0]
    k_top = max(1, int(r.max()))
    if max(ks) <= _RANK_SEARCH_MIN_RATIO * k_top:  # the top-K_max list costs about the same: no gain
        return None
    classes = _classes_padded(lab)
    if classes is None:
        return None
    s = min(k_top + 2, n)  # what `_sorted_knn` asks of its first search
    top_d, top_i, rank = _loo_search(emb, lab, s, classes)
    _, idx = _sorted_knn(emb, emb, k_top, np.arange(n), "torch", lambda s_: (top_d, top_i))
    knn = lab[idx]
    valid = r > 0
    out = {f"recall@{k}": float((rank[valid] < k).mean()) for k in ks}
    out["precision@1"] = precision_at_k(knn, lab, 1, r)
    out["r_precision"] = r_precision(knn, lab, r)
    out["map@r"] = _map_at_r_padded(knn, lab, r, max(max(ks), k_top))
    return out


def _map_at_r_padded(knn_labels: np.ndarray, query_labels: np.ndarray, r: np.ndarray, width: int) -> float:
    """`map_at_r` on the first R_max columns, its per-query sums taken over `width` columns.

    The terms P_q(i) rel_q(i) beyond R_max are 0, but numpy's pairwise summation groups the
    non-zero ones differently for another row length; padding the (n, R_max) terms with zeros to
    the K_max columns of the top-K_max search reproduces its sums bit for bit, at a fraction of its
    cost (no (n, K_max) comparisons and cumulative sums).
    """
    r_max = int(r.max(initial=0))
    rel, rv = _hits(knn_labels, query_labels, r, r_max, "map_at_r")
    rel = rel & (np.arange(rel.shape[1])[None, :] < rv[:, None])
    precision = np.cumsum(rel, 1) / np.arange(1, rel.shape[1] + 1)[None, :]
    terms = np.zeros((rel.shape[0], max(width, rel.shape[1])))
    np.multiply(precision, rel, out=terms[:, :rel.shape[1]])
    return float((terms.sum(1) / rv).mean())


# --------------------------------------------------------------------------------------------------
# metrics on neighbour labels
# --------------------------------------------------------------------------------------------------

def num_relevant(query_labels: ArrayLike, gallery_labels: ArrayLike | None = None) -> np.ndarray:
    """R per query, (n,) int64: gallery items with the query's label (leave-one-out: class size - 1)."""
    ql = _to_numpy(query_labels).astype(np.int64, copy=False)
    if gallery_labels is None:
        _, inverse, counts = np.unique(ql, return_inverse=True, return_counts=True)
        return counts[inverse.reshape(-1)] - 1
    classes, counts = np.unique(_to_numpy(gallery_labels).astype(np.int64, copy=False), return_counts=True)
    pos = np.clip(np.searchsorted(classes, ql), 0, max(len(classes) - 1, 0))
    found = (classes[pos] == ql) if len(classes) else np.zeros(len(ql), dtype=bool)
    return np.where(found, counts[pos] if len(classes) else 0, 0)


def _hits(knn_labels: ArrayLike, query_labels: ArrayLike, relevant: ArrayLike, need: int, what: str
          ) -> tuple[np.ndarray, np.ndarray]:
    """(rel (n', K) bool: neighbour j of query i has its label, R (n',)), over queries with R >= 1."""
    knn = _to_numpy(knn_labels)
    ql = _to_numpy(query_labels)
    r = _to_numpy(relevant).astype(np.int64, copy=False)
    if knn.ndim != 2 or ql.shape != (knn.shape[0],) or r.shape != (knn.shape[0],):
        raise ValueError(f"{what}: expected knn_labels (n, K), query_labels (n,), num_relevant (n,); got "
                         f"{knn.shape}, {ql.shape}, {r.shape}")
    if knn.shape[1] < need:
        raise ValueError(f"{what}: needs {need} neighbours per query, knn_labels has {knn.shape[1]}")
    valid = r > 0
    if not valid.any():
        raise ValueError(f"{what}: no query has another item of its class (R = 0 for all {len(r)} "
                         "queries), so every retrieval metric is undefined")
    return knn[valid] == ql[valid, None], r[valid]


def recall_at_k(knn_labels: ArrayLike, query_labels: ArrayLike, k: int, num_relevant: ArrayLike) -> float:
    """DML Recall@K (hit rate): fraction of queries with a same-label item among their K nearest.

    Recall@K = (1/|Q|) sum_{q in Q} 1[ exists i <= K : y(n_i(q)) = y(q) ],  Q = {q : R(q) >= 1}.

    Args: knn_labels (n, >=K) labels of each query's neighbours in rank order; query_labels (n,);
    k; num_relevant (n,) R per query (queries with R = 0 are left out).
    """
    rel, _ = _hits(knn_labels, query_labels, num_relevant, k, "recall_at_k")
    return float(rel[:, :k].any(1).mean())


def precision_at_k(knn_labels: ArrayLike, query_labels: ArrayLike, k: int, num_relevant: ArrayLike) -> float:
    """Precision@K = (1/|Q|) sum_q (1/K) sum_{i<=K} rel_q(i), rel_q(i) = 1[y(n_i(q)) = y(q)], Q as Recall@K.

    For K = 1 it equals Recall@1 numerically; it is reported under its own name.
    """
    rel, _ = _hits(knn_labels, query_labels, num_relevant, k, "precision_at_k")
    return float(rel[:, :k].mean(1).mean())


def r_precision(knn_labels: ArrayLike, query_labels: ArrayLike, num_relevant: ArrayLike) -> float:
    """R-precision = (1/|Q|) sum_q (1/R_q) sum_{i<=R_q} rel_q(i): the share of correct items in the top R.

    knn_labels must have at least max(R) columns. Queries with R = 0 are left out.
    """
    r_max = int(_to_numpy(num_relevant).max(initial=0))
    rel, r = _hits(knn_labels, query_labels, num_relevant, r_max, "r_precision")
    in_top_r = np.arange(rel.shape[1])[None, :] < r[:, None]  # (n', K) position i < R_q
    return float(((rel & in_top_r).sum(1) / r).mean())


def map_at_r(knn_labels: ArrayLike, query_labels: ArrayLike, num_relevant: ArrayLike) -> float:
    """MAP@R (Musgrave, Belongie, Lim 2020, "A Metric Learning Reality Check").

    MAP@R = (1/|Q|) sum_q (1/R_q) sum_{i<=R_q} P_q(i) rel_q(i),  P_q(i) = (1/i) sum_{j<=i} rel_q(j):
    average precision truncated at R, normalised by R (not by the number of hits), so a query
    scores 1 only if its top R are all correct. knn_labels needs >= max(R) columns; R = 0 left out.
    """
    r_max = int(_to_numpy(num_relevant).max(initial=0))
    rel, r = _hits(knn_labels, query_labels, num_relevant, r_max, "map_at_r")
    rel = rel & (np.arange(rel.shape[1])[None, :] < r[:, None])  # only the first R ranks count
    precision = np.cumsum(rel, 1) / np.arange(1, rel.shape[1] + 1)[None, :]  # P_q(i)
    return float(((precision * rel).sum(1) / r).mean())


# --------------------------------------------------------------------------------------------------
# NMI
# --------------------------------------------------------------------------------------------------

def kmeans_niter(n: int, k: int, d: int, *, flop_budget: float = KMEANS_FLOP_BUDGET,
                 max_niter: int = KMEANS_NITER) -> int:
    """Lloyd iterations that fit the budget: min(max_niter, max(1, floor(budget / (2 n k d)) - 1)).

    One iteration (assign n points to k centroids) costs ~2 n k d FLOP, and the final assignment
    one more. CUB (5,924 x 512, k = 100) gets the full 20; SOP (60,502 x 512, k = 11,316, 0.7 TFLOP
    per pass) gets 1 with the default budget of 1.5 TFLOP, the most a 2-core CPU does in ~20 s.
    """
    per_pass = 2.0 * n * k * d
    return int(min(max_niter, max(1, math.floor(flop_budget / per_pass) - 1)))


def kmeans_assign(embeddings: ArrayLike, num_clusters: int, *, seed: int = 0, niter: int | None = None,
                  nredo: int = 1, max_points_per_centroid: int = 1 << 30,
                  flop_budget: float | None = None, backend: Backend = "auto") -> np.ndarray:
    """k-means (faiss.Kmeans) on (N, D) embeddings; returns each item's nearest final centroid, (N,) int64.

    Settings are explicit so results do not depend on faiss defaults: `seed`, `niter` (None: 20, or
    fewer when `kmeans_niter` says the budget does not allow it, with a RuntimeWarning that says how
    many; the budget is unlimited when faiss runs on a GPU), `nredo`, min_points_per_centroid = 1 (no warnings for ~5 points per class),
    `max_points_per_centroid` (default: never sub-sample), spherical = False. The final assignment
    is an exact nearest-centroid search (ties to the lower centroid index).
    """
    x = np.ascontiguousarray(_to_numpy(embeddings), dtype=np.float32)
    n, d = x.shape
    if not 1 <= num_clusters <= n:
        raise ValueError(f"num_clusters={num_clusters} must be in 1..{n}")
    gpu = _faiss_gpu_available()
    if niter is None:
        budget = math.inf if gpu else (KMEANS_FLOP_BUDGET if flop_budget is None else flop_budget)
        niter = kmeans_niter(n, num_clusters, d, flop_budget=budget)
        if niter < KMEANS_NITER:  # said, never silent: NMI after one Lloyd iteration is another number
            warnings.warn(f"k-means of {n} x {d} points into {num_clusters} clusters: {niter} Lloyd iteration(s) "
                          f"instead of {KMEANS_NITER}, to stay within the CPU budget of {budget:.3g} FLOP; pass "
                          f"niter={KMEANS_NITER} (retrieval_metrics: kmeans_niter={KMEANS_NITER}) or a larger "
                          f"flop_budget for the full clustering", RuntimeWarning, stacklevel=2)
    faiss = _faiss()
    km = faiss.Kmeans(d, num_clusters, niter=int(niter), nredo=int(nredo), seed=int(seed), verbose=False,
                      spherical=False, min_points_per_centroid=1,
                      max_points_per_centroid=int(max_points_per_centroid), gpu=gpu)
    km.train(x)
    _, idx = nearest_neighbours(x, 1, km.centroids, backend=backend)
    return idx[:, 0]


def nmi_score(embeddings: ArrayLike, labels: ArrayLike, *, seed: int = 0, niter: int | None = None,
              nredo: int = 1, max_points_per_centroid: int = 1 << 30, flop_budget: float | None = None,
              backend: Backend = "auto") -> float:
    """NMI between the labels and a k-means clustering with k = number of distinct labels.

    NMI(Y, C) = I(Y; C) / ((H(Y) + H(C)) / 2)  (scikit-learn, average_method="arithmetic";
    scikit-learn < 0.22 defaulted to the geometric mean, so older papers may use that form).
    k-means settings: see `kmeans_assign`. Deterministic for a given seed and thread count.
    """
    from sklearn.metrics import normalized_mutual_info_score

    emb, lab = _check_embeddings(embeddings, labels, "nmi_score")
    n_classes = len(np.unique(lab))
    if n_classes < 2:
        raise ValueError(f"nmi_score: needs at least 2 classes, got {n_classes} (NMI of one class is 0/0)")
    clusters = kmeans_assign(emb, n_classes, seed=seed, niter=niter, nredo=nredo,
                             max_points_per_centroid=max_points_per_centroid, flop_budget=flop_budget,
                             backend=backend)
    return float(normalized_mutual_info_score(lab, clusters, average_method="arithmetic"))


def clustering_scores(embeddings: ArrayLike, labels: ArrayLike, *, seed: int = 0, niter: int | None = None,
                      flop_budget: float | None = None, backend: Backend = "auto") -> dict[str, float]:
    """NMI and AMI of one k-means clustering (k = number of classes): {"nmi", "ami"}.

    NMI as in `nmi_score`. AMI (Vinh, Epps, Bailey 2010) corrects it for chance,
    AMI = (I - E[I]) / (mean(H(Y), H(C)) - E[I]), with E[I] the expected mutual information of two
    random clusterings with the same cluster sizes (scikit-learn, arithmetic mean): about 0 for a
    clustering no better than chance, 1 for a perfect one. NMI's chance level is far from 0 when
    classes are small: on 807 classes of about 4 items a random relabelling has NMI ≈ 0.8.
    """
    from sklearn.metrics import adjusted_mutual_info_score, normalized_mutual_info_score

    emb, lab = _check_embeddings(embeddings, labels, "clustering_scores")
    n_classes = len(np.unique(lab))
    if n_classes < 2:
        raise ValueError(f"clustering_scores: needs at least 2 classes, got {n_classes}")
    clusters = kmeans_assign(emb, n_classes, seed=seed, niter=niter, flop_budget=flop_budget, backend=backend)
    return {"nmi": float(normalized_mutual_info_score(lab, clusters, average_method="arithmetic")),
            "ami": float(adjusted_mutual_info_score(lab, clusters, average_method="arithmetic"))}


def chance_levels(labels: ArrayLike, ks: Sequence[int] = (1, 2, 4, 8), *, permutations: int = 20,
                  seed: int = 0) -> dict[str, float]:
    """What `retrieval_metrics` scores for embeddings that carry no information: its chance levels.

    Ranking metrics, exactly, for a uniformly random order of the M = N - 1 other items of each
    query q with R_q relevant ones (leave-one-out; means over queries with R_q >= 1, as the metrics):
        Recall@K = 1 - C(M - R, K) / C(M, K),   P@1 = RP = R / M,
        MAP@R    = H_R / M + (R - H_R)(R - 1) / (M (M - 1)),   H_R = 1 + 1/2 + ... + 1/R
    (from E[P(i) rel(i)] = (1/i) [R/M + (i - 1) R (R - 1) / (M (M - 1))]). NMI: the mean NMI between
    the labels and `permutations` random relabellings with the same class sizes (seeded numpy
    permutations), the clustering a k-means of uninformative embeddings can at best be likened to;
    far from 0 when classes are small. AMI: 0, its expectation under that model by construction.
    labels: (N,) integer class ids. Returns the keys of `retrieval_metrics` with NMI.
    """
    from sklearn.metrics import normalized_mutual_info_score

    lab = _to_numpy(labels)
    if lab.ndim != 1 or lab.shape[0] < 2 or not np.issubdtype(lab.dtype, np.integer):
        raise ValueError(f"chance_levels: labels must be a 1-D integer array of at least 2 items, got shape "
                         f"{lab.shape} and dtype {lab.dtype}")
    if permutations < 1:
        raise ValueError(f"chance_levels: permutations must be >= 1, got {permutations}")
    if len(np.unique(lab)) < 2:  # as retrieval_metrics: NMI of a single class is 0/0
        raise ValueError("chance_levels: needs at least 2 classes, got 1 (every item is relevant to every query)")
    m = lab.shape[0] - 1
    ks = _check_ks(ks, m, "chance_levels")
    all_r = num_relevant(lab)
    if not (all_r > 0).any():
        raise ValueError("chance_levels: every class has a single item, so no query has a correct answer")
    r, queries = np.unique(all_r[all_r > 0], return_counts=True)  # one row per distinct R
    weight, r = queries / queries.sum(), r.astype(np.float64)
    out = {}
    for k in ks:  # C(M - R, K) / C(M, K) = prod_{j<K} (M - R - j) / (M - j), 0 once M - R < K
        j = np.arange(k, dtype=np.float64)
        miss = np.prod(np.clip((m - r[:, None] - j) / (m - j), 0.0, None), axis=1)
        out[f"recall@{k}"] = float(weight @ (1.0 - miss))
    out["precision@1"] = out["r_precision"] = float(weight @ (r / m))
    harmonic = np.cumsum(1.0 / np.arange(1, int(r.max()) + 1))[r.astype(np.int64) - 1]
    pairs = (r - harmonic) * (r - 1) / (m * (m - 1)) if m > 1 else np.zeros_like(r)
    out["map@r"] = float(weight @ (harmonic / m + pairs))
    rng = np.random.default_rng(seed)
    out["nmi"] = float(np.mean([normalized_mutual_info_score(lab, rng.permutation(lab), average_method="arithmetic")
                                for _ in range(permutations)]))
    out["ami"] = 0.0
    return out


# --------------------------------------------------------------------------------------------------
# the two protocols
# --------------------------------------------------------------------------------------------------

def _ranking_metrics(knn_labels: np.ndarray, query_labels: np.ndarray, r: np.ndarray,
                     ks: Sequence[int]) -> dict[str, float]:
    out = {f"recall@{k}": recall_at_k(knn_labels, query_labels, k, r) for k in ks}
    out["precision@1"] = precision_at_k(knn_labels, query_labels, 1, r)
    out["r_precision"] = r_precision(knn_labels, query_labels, r)
    out["map@r"] = map_at_r(knn_labels, query_labels, r)
    return out


def retrieval_metrics(embeddings: ArrayLike, labels: ArrayLike, ks: Sequence[int] = (1, 2, 4, 8), *,
                      nmi: bool = True, seed: int = 0, backend: Backend = "auto",
                      kmeans_niter: int | None = None, kmeans_flop_budget: float | None = None
                      ) -> dict[str, float]:
    """Leave-one-out retrieval metrics: every item is a query against all the others.

    Args:
        embeddings: (N, D) tensor or array (compared in float32).
        labels: (N,) integer class ids.
        ks: the K of Recall@K, each in 1..N-1.
        nmi: also compute NMI (k-means, the slow part on large sets).
        seed: k-means seed.
        backend: k-NN back-end, "auto" / "faiss" / "torch" (module docstring).
        kmeans_niter, kmeans_flop_budget: see `kmeans_assign` / `kmeans_niter`.

    Returns:
        {"recall@K" for K in ks, "precision@1", "r_precision", "map@r", "nmi", "ami"}: Python floats
        in [0, 1] (AMI can dip below 0 for a clustering worse than chance); NMI and AMI from the same
        k-means (`clustering_scores`), only with `nmi=True`. Formulas in `recall_at_k`,
        `precision_at_k`, `r_precision`, `map_at_r`, `nmi_score`; queries of single-item classes
        (R = 0) are left out of all but NMI and AMI (module docstring).

    Search (torch back-end): one symmetric blocked pass gives every query's first-positive rank
    (Recall@K for any K) and its top R_max (P@1, R-precision, MAP@R), see `_loo_ranking_metrics`.
    faiss back-end: one exact search of k_max = max(max(ks), R_max) neighbours per query (plus the
    query itself and one to detect ties at the cut-off) feeds every ranking metric. Same values.
    """
    emb, lab = _check_embeddings(embeddings, labels, "retrieval_metrics")
    n = emb.shape[0]
    if n < 2:
        raise ValueError(f"retrieval_metrics: needs at least 2 items for leave-one-out retrieval, got {n}")
    ks = _check_ks(ks, n - 1, "retrieval_metrics")
    r = num_relevant(lab)
    if not (r > 0).any():
        raise ValueError("retrieval_metrics: every class has a single item, so no query has a correct "
                         "answer (R = 0 everywhere); retrieval metrics are undefined")
    if nmi and len(np.unique(lab)) < 2:
        raise ValueError("retrieval_metrics: NMI needs at least 2 classes, got 1; pass nmi=False")
    be = _resolve_backend(backend)
    out = _loo_ranking_metrics(emb, lab, r, ks) if be == "torch" else None
    if out is None:  # faiss, or classes too large for the bounds: top-K_max lists
        _, idx = nearest_neighbours(emb, max(max(ks), int(r.max())), backend=be)
        out = _ranking_metrics(lab[idx], lab, r, ks)
    if nmi:  # one clustering for both scores
        out.update(clustering_scores(emb, lab, seed=seed, niter=kmeans_niter, flop_budget=kmeans_flop_budget,
                                     backend=backend))
    return out


def query_gallery_metrics(query_emb: ArrayLike, query_labels: ArrayLike, gallery_emb: ArrayLike,
                          gallery_labels: ArrayLike, ks: Sequence[int] = (1, 10, 20, 30, 40, 50), *,
                          backend: Backend = "auto") -> dict[str, float]:
    """Query-vs-gallery retrieval (In-Shop protocol): no self-exclusion, the two sets are disjoint.

    R(q) = number of gallery items with q's label; queries with R = 0 are left out (module
    docstring). Returns {"recall@K" for K in ks, "precision@1", "r_precision", "map@r"}, formulas as
    in `retrieval_metrics`, each K in 1..(gallery size).
    """
    q, ql = _check_embeddings(query_emb, query_labels, "query_gallery_metrics (query)")
    g, gl = _check_embeddings(gallery_emb, gallery_labels, "query_gallery_metrics (gallery)")
    if q.shape[1] != g.shape[1]:
        raise ValueError(f"query_gallery_metrics: query dimension {q.shape[1]} != gallery dimension {g.shape[1]}")
    if q.shape[0] < 1 or g.shape[0] < 1:
        raise ValueError(f"query_gallery_metrics: needs at least 1 query and 1 gallery item, got "
                         f"{q.shape[0]} and {g.shape[0]}")
    ks = _check_ks(ks, g.shape[0], "query_gallery_metrics")
    r = num_relevant(ql, gl)
    if not (r > 0).any():
        raise ValueError("query_gallery_metrics: no query label occurs in the gallery (R = 0 for every "
                         "query); retrieval metrics are undefined")
    k_max = max(max(ks), int(r.max()))
    _, idx = nearest_neighbours(q, k_max, g, backend=backend)
    return _ranking_metrics(gl[idx], ql, r, ks)


# --------------------------------------------------------------------------------------------------
# models
# --------------------------------------------------------------------------------------------------

def embed(model: nn.Module, dataset: Dataset, *, batch_size: int = 256, device: str | torch.device = "auto",
          num_workers: int = 0, progress: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Embed a data set of (input, label) items in order.

    The model is put in eval mode (BatchNorm statistics, dropout off) under torch.no_grad() and
    moved to `device` (resolved by `rankdml.runtime.resolve_device`); its training mode is restored
    afterwards. `progress=False` hides the progress bar. Returns (embeddings (N, D) float32 on the
    CPU, labels (N,) int64).
    """
    dev = resolve_device(device)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    was_training = model.training
    model.to(dev)
    model.eval()
    embs: list[torch.Tensor] = []
    labs: list[torch.Tensor] = []
    try:
        with torch.no_grad():
            for batch in progress_bar(loader, desc="embed", leave=False, disable=None if progress else True):
                x, y = batch[0], batch[1]
                out = model(x.to(dev, non_blocking=True))
                if out.dim() != 2:
                    raise ValueError(f"embed: the model must return (B, D) embeddings, got shape {tuple(out.shape)}")
                embs.append(out.float().cpu())
                labs.append(torch.as_tensor(y).reshape(-1).long().cpu())
    finally:
        model.train(was_training)
    if not embs:
        raise ValueError("embed: the data set is empty")
    return torch.cat(embs), torch.cat(labs)


def evaluate(model: nn.Module, dataset: Dataset, ks: Sequence[int] = (1, 2, 4, 8), *,
             gallery: Dataset | None = None, batch_size: int = 256, device: str | torch.device = "auto",
             nmi: bool = True, seed: int = 0, backend: Backend = "auto", progress: bool = True) -> dict[str, float]:
    """Embed `dataset` and return `retrieval_metrics` (leave-one-out).

    With `gallery`, `dataset` is the query set and the result is `query_gallery_metrics` (no NMI).
    `progress=False` hides the embedding bars.
    """
    emb, lab = embed(model, dataset, batch_size=batch_size, device=device, progress=progress)
    if gallery is None:
        return retrieval_metrics(emb, lab, ks, nmi=nmi, seed=seed, backend=backend)
    g_emb, g_lab = embed(model, gallery, batch_size=batch_size, device=device, progress=progress)
    return query_gallery_metrics(emb, lab, g_emb, g_lab, ks, backend=backend)
