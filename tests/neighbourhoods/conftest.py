"""Fixtures for the neighbourhood tests: clustered batches in float64."""
from __future__ import annotations

import torch


def clustered_batch(num_classes=3, clusters_per_class=2, per_cluster=3, dim=5, seed=0, dtype=torch.float64,
                    spread=1.0, shuffle=True):
    """(x (B, D), labels (B,), clusters (B,)): Gaussian blobs, cluster c*K+j of class c (label 2c+1)."""
    g = torch.Generator().manual_seed(seed)
    M = num_classes * clusters_per_class
    clusters = torch.arange(M).repeat_interleave(per_cluster)
    labels = 2 * (clusters // clusters_per_class) + 1
    centres = 2.0 * torch.randn(M, dim, generator=g, dtype=dtype)
    x = centres[clusters] + spread * torch.randn(clusters.numel(), dim, generator=g, dtype=dtype)
    if shuffle:
        perm = torch.randperm(clusters.numel(), generator=g)
        x, labels, clusters = x[perm], labels[perm], clusters[perm]
    return x, labels, clusters
