"""Time forward + backward of every loss on CPU (not a test).

    python bench/bench_losses.py [--threads N] [--repeats R]

Batches: B = 120 (20 classes x 6; N-pairs/angular 60 x 2) and B = 512 (64 x 8; N-pairs/angular
256 x 2), D = 128, L2-normalised random embeddings, float32. Prints the median time in ms.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from rankdml.losses import make_loss
from rankdml.mining import DistanceWeightedSampler

CONFIGS = [
    ("contrastive", {}),
    ("triplet", {"mining": "all"}),
    ("triplet", {"mining": "batch_hard"}),
    ("triplet", {"mining": "semi_hard"}),
    ("lifted", {}),
    ("lifted", {"smooth": True}),
    ("npairs", {}),
    ("angular", {"combine_npairs": True}),
    ("margin", {}),
    ("margin", {"sampler": "distance_weighted"}),
]


def batch(num_classes: int, per_class: int, dim: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(num_classes).repeat_interleave(per_class)
    labels = labels[torch.randperm(labels.numel(), generator=g)]
    x = torch.nn.functional.normalize(torch.randn(labels.numel(), dim, generator=g), dim=1)
    return x, labels


def time_loss(loss, x, y, repeats: int) -> float:
    times = []
    for i in range(repeats + 2):
        e = x.clone().requires_grad_(True)
        t0 = time.perf_counter()
        loss(e, y).backward()
        if i >= 2:  # two warm-up runs
            times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--dim", type=int, default=128)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    layouts = {120: ((20, 6), (60, 2)), 512: ((64, 8), (256, 2))}
    print(f"torch {torch.__version__}, {args.threads} threads, D = {args.dim}, median of {args.repeats} "
          f"(forward + backward, ms)")
    x, y = batch(20, 6, args.dim)
    time_loss(make_loss("contrastive"), x, y, 5)  # warm up the allocator and the kernels once
    print(f"{'loss':38s} {'B=120':>9s} {'B=512':>9s}")
    for name, kw in CONFIGS:
        row = []
        for B, (pk, pairs) in layouts.items():
            x, y = batch(*(pairs if name in ("npairs", "angular") else pk), args.dim)
            kwargs = dict(kw)
            if kwargs.get("sampler") == "distance_weighted":
                kwargs["sampler"] = DistanceWeightedSampler(generator=torch.Generator().manual_seed(0))
            row.append(time_loss(make_loss(name, **kwargs), x, y, args.repeats))
        label = name + (f" ({', '.join(f'{k}={v}' for k, v in kw.items())})" if kw else "")
        print(f"{label:38s} {row[0]:9.2f} {row[1]:9.2f}")


if __name__ == "__main__":
    main()
