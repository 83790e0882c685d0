"""Time `rankdml.metrics` on benchmark-sized random embeddings.

Run: python bench/bench_metrics.py [--backend auto|torch|faiss] [--only sop|cub]

Cases: Stanford Online Products' test set (60,000 x 512, 11,316 classes of ~5 images) and CUB's
(5,924 x 512, 100 classes). Embeddings are random unit vectors, so the metric values themselves
mean nothing; only the times matter. Prints the time of each stage and of `retrieval_metrics` as a
whole (the acceptance test: well under a minute on the 2-core development machine).
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from rankdml import metrics as M


def make_case(n: int, d: int, n_classes: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Unit-norm Gaussian embeddings (n, d) and labels with every class used at least twice."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    labels = np.concatenate([np.arange(n_classes), np.arange(n_classes), rng.integers(0, n_classes, n - 2 * n_classes)])
    return x, rng.permutation(labels)


def bench(name: str, n: int, d: int, n_classes: int, backend: str) -> None:
    x, y = make_case(n, d, n_classes)
    r = M.num_relevant(y)
    k_max = max(8, int(r.max()))
    print(f"\n{name}: N = {n}, D = {d}, classes = {n_classes}, R_max = {r.max()}, "
          f"k-means niter = {M.kmeans_niter(n, n_classes, d)}", flush=True)
    t0 = time.perf_counter()
    _, idx = M.nearest_neighbours(x, k_max, backend=backend)
    t1 = time.perf_counter()
    out = M._ranking_metrics(y[idx], y, r, (1, 2, 4, 8))
    t2 = time.perf_counter()
    out["nmi"] = M.nmi_score(x, y, backend=backend)
    t3 = time.perf_counter()
    print(f"  k-NN search (k = {k_max})    {t1 - t0:7.2f} s")
    print(f"  Recall@K, P@1, RP, MAP@R   {t2 - t1:7.2f} s")
    print(f"  NMI (k-means + assignment) {t3 - t2:7.2f} s")
    t4 = time.perf_counter()
    again = M.retrieval_metrics(x, y, (1, 2, 4, 8), backend=backend)
    t5 = time.perf_counter()
    print(f"  retrieval_metrics total    {t5 - t4:7.2f} s   (same values: {again == out})")
    print("  " + ", ".join(f"{k}={v:.4f}" for k, v in again.items()), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="auto", choices=["auto", "torch", "faiss"])
    parser.add_argument("--only", choices=["sop", "cub"], default=None)
    args = parser.parse_args()
    print(f"torch threads = {torch.get_num_threads()}, cores = {os.cpu_count()}, backend = {args.backend}, "
          f"CUDA = {torch.cuda.is_available()}")
    if args.only in (None, "cub"):
        bench("CUB-200-2011 test", 5924, 512, 100, args.backend)
    if args.only in (None, "sop"):
        bench("Stanford Online Products test", 60000, 512, 11316, args.backend)


if __name__ == "__main__":
    main()
