"""Benchmark the Magnet loss, the RepMet variants and the k-means refresh of the cluster index (not a test).

    python bench/bench_magnet.py [--quick] --out DIR [--threads N] [--device cpu|cuda]

Writes DIR/bench_magnet.json, a list of rows {"case", "ours_s", "theirs_s", "floor_s", "ours_mb",
"theirs_mb", "target", "met", "note"}, and prints them as a markdown table. Times are medians
(seconds) after warm-up; memory is the CUDA peak (None on the CPU).

* Losses: forward + backward on L2-normalised random embeddings. Magnet batches are M clusters x D
  items (the paper's 12 x 4, and 64 x 8). "theirs" for Magnet is the original code's way of
  computing it (seeds.md section 4.2): the batch viewed as (M, D, dim), every item-to-mean
  difference materialised as an (MD, M, dim) tensor, ``+ 1e-8`` inside the logarithm -- a
  re-implementation from that description, not its code. The floor is the one unavoidable step,
  the squared distances of the B items to the M means (forward + backward). RepMet variants
  (100 classes x 3 representatives) have no "theirs" (pytorch-metric-learning has no RepMet);
  their floor is the (B, C*K) distance matrix, forward + backward to the embeddings and the
  representatives (both are trained).
* Refresh: :func:`rankdml.clusters.per_class_kmeans` (faiss, K = 3 per class, 20 iterations) on N
  random embeddings of 50 items per class, against scikit-learn's KMeans per class as the original
  (k-means++, n_init=1, max_iter=20). The re-embedding pass of a refresh is not included (it is
  one forward pass of the model over the training set). Floor: one exact nearest-centre
  assignment of every item to its class's centres (one Lloyd iteration is at least that).
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from rankdml.clusters import per_class_kmeans
from rankdml.distances import pairwise_squared_distances
from rankdml.losses import MagnetLoss, RepMetLoss


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def median_time(fn, repeats: int, device, warmup: int = 2) -> tuple[float, float | None]:
    """(median seconds, CUDA peak MiB or None) of `fn()` over `repeats` runs after `warmup` runs."""
    for _ in range(warmup):
        fn()
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated(device) / 2 ** 20 if device.type == "cuda" else None
    return statistics.median(times), peak


def magnet_original_style(x: torch.Tensor, m: int, d: int, alpha: float = 1.0) -> torch.Tensor:
    """The original's computation (seeds.md 4.2): (m, d, dim) view, broadcast differences, + 1e-8 in the log."""
    dim = x.shape[1]
    means = x.view(m, d, dim).mean(1)  # (m, dim)
    sq = ((x[:, None, :] - means[None, :, :]) ** 2).sum(2)  # (m*d, m), via an (m*d, m, dim) tensor
    own_cluster = torch.arange(m, device=x.device).repeat_interleave(d)
    own = sq[torch.arange(m * d, device=x.device), own_cluster]
    sigma2 = own.sum() / (m * d - 1)
    num = torch.exp(-own / (2 * sigma2) - alpha)
    # one cluster per class in these batches: every other cluster is of a different class
    other = own_cluster[:, None] != torch.arange(m, device=x.device)[None, :]
    den = (torch.exp(-sq / (2 * sigma2)) * other).sum(1)
    return torch.relu(-torch.log(num / (den + 1e-8) + 1e-8)).mean()


def bench_losses(args, device) -> list[dict]:
    rows = []
    g = torch.Generator().manual_seed(0)
    dims = (128,) if args.quick else (128, 1024)
    layouts = ((12, 4),) if args.quick else ((12, 4), (64, 8))
    for dim in dims:
        for m, d in layouts:
            x0 = F.normalize(torch.randn(m * d, dim, generator=g), dim=1).to(device)
            labels = torch.arange(m, device=device).repeat_interleave(d)
            loss = MagnetLoss()

            def ours():
                x = x0.clone().requires_grad_(True)
                loss(x, labels, labels).backward()

            def theirs():
                x = x0.clone().requires_grad_(True)
                magnet_original_style(x, m, d).backward()

            means = x0.view(m, d, dim).mean(1)

            def floor():
                x = x0.clone().requires_grad_(True)
                pairwise_squared_distances(x, means).sum().backward()

            with torch.no_grad():
                agree = abs(loss(x0, labels, labels).item() - magnet_original_style(x0, m, d).item())
            t_ours, mb_ours = median_time(ours, args.repeats, device)
            t_theirs, mb_theirs = median_time(theirs, args.repeats, device)
            t_floor, _ = median_time(floor, args.repeats, device)
            rows.append({"case": f"magnet fwd+bwd M={m} D={d} dim={dim}", "ours_s": t_ours, "theirs_s": t_theirs,
                         "floor_s": t_floor, "ours_mb": mb_ours, "theirs_mb": mb_theirs,
                         "target": "<= original-style", "met": t_ours <= t_theirs,
                         "note": f"theirs = the original's (MD, M, dim) broadcast re-implemented; "
                                 f"|ours - theirs| = {agree:.1e}"})
        C, K = 100, 3
        x0 = F.normalize(torch.randn(48, dim, generator=g), dim=1).to(device)
        labels = torch.randint(C, (48,), generator=g).to(device)
        for variant in ("cvpr", "v1", "v2", "v3", "radius"):
            rep = RepMetLoss(C, K, dim, variant=variant).to(device)

            def ours():
                x = x0.clone().requires_grad_(True)
                rep(x, labels).backward()

            reps = rep.representatives.detach().clone().requires_grad_(True)  # trained too: its gradient counts

            def floor():
                x = x0.clone().requires_grad_(True)
                pairwise_squared_distances(x, reps).sum().backward()

            t_ours, mb_ours = median_time(ours, args.repeats, device)
            t_floor, _ = median_time(floor, args.repeats, device)
            rows.append({"case": f"repmet-{variant} fwd+bwd B=48 C={C} K={K} dim={dim}", "ours_s": t_ours,
                         "theirs_s": None, "floor_s": t_floor, "ours_mb": mb_ours, "theirs_mb": None,
                         "target": None, "met": None,
                         "note": "no reference implementation to compare with; floor = the (B, C*K) distances, "
                                 "gradients w.r.t. embeddings and representatives"})
    return rows


def sklearn_per_class_kmeans(x: np.ndarray, y: np.ndarray, k: int, seed: int = 0):
    """The original's refresh: scikit-learn KMeans(k, k-means++, n_init=1, max_iter=20) on each class."""
    from sklearn.cluster import KMeans

    centres = []
    for c in np.unique(y):
        km = KMeans(n_clusters=k, init="k-means++", n_init=1, max_iter=20, random_state=seed).fit(x[y == c])
        centres.append(km.cluster_centers_)
    return np.concatenate(centres)


def bench_refresh(args, device) -> list[dict]:
    rows = []
    sizes = (1000, 5000) if args.quick else (1000, 5000, 20000, 60000)
    dim, k, per_class = 128, 3, 50
    for n in sizes:
        g = torch.Generator().manual_seed(n)
        y = torch.arange(n // per_class).repeat_interleave(per_class)
        x = F.normalize(torch.randn(len(y), dim, generator=g), dim=1)
        xd, yd = x.to(device), y.to(device)
        repeats = 1 if n >= 20000 else args.refresh_repeats
        t_ours, mb = median_time(lambda: per_class_kmeans(xd, yd, k, seed=0), repeats, device, warmup=1)
        t_theirs = None
        if n <= args.sklearn_max:
            t_theirs, _ = median_time(lambda: sklearn_per_class_kmeans(x.numpy(), y.numpy(), k), repeats,
                                      torch.device("cpu"), warmup=1)
        centres, _, _ = per_class_kmeans(xd, yd, k, seed=0)
        # classes have equal sizes and labels sorted here: one batched product per class block
        xs, cs = xd.view(-1, per_class, dim), centres.view(-1, k, dim)

        def floor():
            (cs.pow(2).sum(2)[:, None, :] - 2 * xs @ cs.transpose(1, 2)).argmin(2)

        t_floor, _ = median_time(floor, args.refresh_repeats, device)
        rows.append({"case": f"refresh k-means N={n} C={n // per_class} K={k} dim={dim}", "ours_s": t_ours,
                     "theirs_s": t_theirs, "floor_s": t_floor, "ours_mb": mb, "theirs_mb": None,
                     "target": "<= sklearn per class" if t_theirs is not None else None,
                     "met": (t_ours <= t_theirs) if t_theirs is not None else None,
                     "note": "theirs = sklearn KMeans per class as the original (k-means++, n_init=1, 20 it.); "
                             "floor = one nearest-own-centre assignment (batched products); excludes re-embedding"
                             + ("" if t_theirs is not None else f"; sklearn skipped above N={args.sklearn_max}")})
    # K = 1: the class means, one vectorised pass (no k-means)
    n = sizes[-1]
    y = torch.arange(n // per_class).repeat_interleave(per_class).to(device)
    x = F.normalize(torch.randn(len(y), dim, generator=torch.Generator().manual_seed(1)), dim=1).to(device)
    t_ours, mb = median_time(lambda: per_class_kmeans(x, y, 1), args.refresh_repeats, device)
    rows.append({"case": f"refresh K=1 (class means) N={n} C={n // per_class} dim={dim}", "ours_s": t_ours,
                 "theirs_s": None, "floor_s": None, "ours_mb": mb, "theirs_mb": None, "target": None,
                 "met": None, "note": "K = 1 needs no k-means: an index_add over the items"})
    return rows


def _fmt(v, digits=4):
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if digits == 1:  # MiB
        return f"{v:.1f}"
    return f"{v * 1e3:.3f} ms" if v < 1 else f"{v:.2f} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer sizes and repeats (well under a minute)")
    parser.add_argument("--out", required=True, help="folder for bench_magnet.json")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sklearn-max", type=int, default=20000, help="largest N timed with scikit-learn")
    args = parser.parse_args()
    args.repeats = 5 if args.quick else 20
    args.refresh_repeats = 1 if args.quick else 3
    torch.set_num_threads(args.threads)
    try:
        import faiss

        faiss.omp_set_num_threads(args.threads)
    except ImportError:
        pass
    device = torch.device(args.device)
    rows = bench_losses(args, device) + bench_refresh(args, device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_magnet.json").write_text(json.dumps(rows, indent=1))
    print(f"torch {torch.__version__}, {args.threads} thread(s), device {device}, "
          f"{'quick' if args.quick else 'full'} run; medians\n")
    print("| case | ours | theirs | floor | ours MiB | theirs MiB | target | met |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['case']} | {_fmt(r['ours_s'])} | {_fmt(r['theirs_s'])} | {_fmt(r['floor_s'])} | "
              f"{_fmt(r['ours_mb'], 1)} | {_fmt(r['theirs_mb'], 1)} | {r['target'] or '-'} | {_fmt(r['met'])} |")
    print(f"\nwrote {out / 'bench_magnet.json'}")


if __name__ == "__main__":
    main()
