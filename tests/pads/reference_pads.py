"""Naive references for the PADS tests, written straight from the formulas (loops, numpy/math only)."""
from __future__ import annotations

import math

import numpy as np


def support(n_support=30, lower=0.1, upper=1.4):
    return [lower + (upper - lower) * k / (n_support - 1) for k in range(n_support)]


def bin_of(d, n_support=30, lower=0.1, upper=1.4):
    """b(d) = #{k = 1..K-1 : d > s_k}."""
    s = support(n_support, lower, upper)
    return sum(1 for k in range(1, n_support - 1) if d > s[k])


def initial_probs(kind, params, n_support=30, lower=0.1, upper=1.4):
    """The original's shape at s_k + 2/n_support, clipped to [1e-15, 1], normalised (flat: ones / K)."""
    s = support(n_support, lower, upper)
    vals = []
    for k in range(n_support - 1):
        x = s[k] + 2.0 / n_support
        if kind == "uniform":
            mu, sig = params
            v = 1.0 if mu - sig <= x <= mu + sig else 0.0
        elif kind == "gaussian":
            mu, sig = params
            v = 1.0 / math.sqrt(2 * math.pi * sig) * math.exp(-(x - mu) ** 2 / (2 * sig ** 2))
        elif kind == "heavyside":
            v = 1.0 if x <= params[0] else 0.0
        elif kind == "below":
            v = 1.0 if x < params[0] else 0.0
        else:
            v = 1.0
        vals.append(min(max(v, 1e-15), 1.0))
    total = sum(vals)
    return [v / total for v in vals]


def negative_probs(x, labels, probs, same_class_negatives=True, merge=True, lower=0.1, upper=1.4, n_support=30):
    """(B, B) probability of each negative per anchor by a loop over the batch."""
    B = len(labels)
    out = np.zeros((B, B))
    for a in range(B):
        w = []
        for n in range(B):
            d = float(np.sqrt(max(((x[a] - x[n]) ** 2).sum(), 0.0)))
            ok = same_class_negatives or labels[n] != labels[a]
            if not merge and not (lower <= d <= upper):
                ok_p = 0.0
            else:
                ok_p = probs[bin_of(d, n_support, lower, upper)]
            w.append(ok_p if ok else 0.0)
        total = sum(w)
        if total == 0:
            w = [1.0 if (same_class_negatives or labels[n] != labels[a]) else 0.0 for n in range(B)]
            total = sum(w)
        out[a] = np.array(w) / total if total else 0.0
    return out


def class_distances(x, labels):
    """(mean intra-class, mean inter-class) cosine distance with scipy-style loops."""
    from scipy.spatial.distance import cosine

    classes = sorted(set(labels))
    intra, means = [], []
    for c in classes:
        members = [x[i] for i in range(len(labels)) if labels[i] == c]
        n = len(members)
        if n >= 2:
            intra.append(sum(cosine(members[i], members[j]) for i in range(n) for j in range(n) if i != j) / (n * n - n))
        m = np.mean(members, axis=0)
        means.append(m / np.linalg.norm(m))
    C = len(means)
    inter = sum(cosine(means[i], means[j]) for i in range(C) for j in range(C) if i != j) / (C * C - C)
    return float(np.mean(intra)), float(inter)
