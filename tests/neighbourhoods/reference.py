"""Naive references for the Magnet loss, the RepMet variants and the five accuracies.

Python loops straight from the formulas of Rippel et al. (2016), Karlinsky et al. (2019) and the
original pytorch.repmet code (as described in shared/reference/seeds.md section 4). Inputs are
NumPy float64 arrays; outputs are Python floats. Nothing is vectorised on purpose.
"""
from __future__ import annotations

import itertools
import math

import numpy as np


def sqdist(a, b):
    return float(sum((float(u) - float(v)) ** 2 for u, v in zip(a, b)))


def relu(v):
    return max(v, 0.0)


def magnet(x, y, clusters, alpha=1.0, variance="paper"):
    """L = 1/N sum_n [ -log( exp(-|r_n - mu_own|^2/(2v) - alpha) / sum_{mu: other classes} exp(-|r_n - mu|^2/(2v)) ) ]_+

    with v = sigma^2 ("paper") or sigma^4 ("squared"); returns (L, sigma^2)."""
    N = len(y)
    ids = sorted(set(int(c) for c in clusters))
    mean, label = {}, {}
    for c in ids:
        members = [n for n in range(N) if clusters[n] == c]
        mean[c] = [sum(x[n][d] for n in members) / len(members) for d in range(x.shape[1])]
        label[c] = y[members[0]]
    sigma2 = sum(sqdist(x[n], mean[clusters[n]]) for n in range(N)) / (N - 1)
    v = sigma2 if variance == "paper" else sigma2 ** 2
    total = 0.0
    for n in range(N):
        num = math.exp(-sqdist(x[n], mean[clusters[n]]) / (2 * v) - alpha)
        den = sum(math.exp(-sqdist(x[n], mean[c]) / (2 * v)) for c in ids if label[c] != y[n])
        total += relu(-math.log(num / den))
    return total / N, sigma2


def repmet(x, y, reps, k, variant, sigma=0.5, alpha=0.5, softmax_mul=None):
    """Per-item losses of each variant, averaged; representative r belongs to class r // k."""
    C = len(reps) // k
    s = 1.0 / (2 * sigma ** 2)
    total = 0.0
    present = set(int(c) for c in y)
    for n in range(len(y)):
        i_star = int(y[n])
        D = {(i, j): sqdist(x[n], reps[i * k + j]) for i in range(C) for j in range(k)}
        own = [D[(i_star, j)] for j in range(k)]
        other = [D[(i, j)] for i in range(C) for j in range(k) if i != i_star]
        if variant == "cvpr":
            P = [max(math.exp(-s * D[(i, j)]) for j in range(k)) for i in range(C)]
            if softmax_mul is None:
                ce = -math.log(P[i_star] / sum(P))
            else:
                ce = -math.log(math.exp(softmax_mul * P[i_star]) / sum(math.exp(softmax_mul * p) for p in P))
            ell = ce + relu(min(own) - min(other) + alpha)
        elif variant == "v1":
            ell = relu(-math.log(math.exp(-s * min(own)) / sum(math.exp(-s * d) for d in other)) + alpha)
        elif variant == "v2":
            ell = relu(-math.log(sum(math.exp(-s * d) for d in own) / sum(math.exp(-s * d) for d in D.values()))
                       + alpha)
        elif variant == "v3":
            ell = relu(-math.log(sum(math.exp(-s * d) for d in own) / sum(math.exp(-s * d) for d in other)) + alpha)
        elif variant == "radius":
            cost, count = 0.0, 0
            for r in range(C * k):
                cls = r // k
                if cls not in present:
                    continue
                count += 1
                if cls == i_star:
                    continue
                rho = max(sqdist(x[m], reps[r]) for m in range(len(y)) if y[m] == cls)
                cost += relu(2 * (rho + alpha - sqdist(x[n], reps[r])))
            ell = cost / count
        else:
            raise ValueError(variant)
        total += ell
    return total / len(y)


def batch_accuracy(x, clusters):
    ids = sorted(set(int(c) for c in clusters))
    mean = {c: np.mean([x[n] for n in range(len(x)) if clusters[n] == c], axis=0) for c in ids}
    right = 0
    for n in range(len(x)):
        best = min(ids, key=lambda c: sqdist(x[n], mean[c]))
        right += best == clusters[n]
    return right / len(x)


def simple_accuracy(x, y, centres, centre_labels):
    right = 0
    for n in range(len(y)):
        best = min(range(len(centres)), key=lambda m: sqdist(x[n], centres[m]))
        right += centre_labels[best] == y[n]
    return right / len(y)


def magnet_accuracy(x, y, centres, centre_labels, variance, L):
    right = 0
    classes = sorted(set(int(c) for c in centre_labels))
    for n in range(len(y)):
        near = sorted(range(len(centres)), key=lambda m: sqdist(x[n], centres[m]))[:L]
        w = {m: math.exp(-sqdist(x[n], centres[m]) / (2 * variance)) for m in near}
        score = {c: sum(w[m] for m in near if centre_labels[m] == c) / sum(w.values()) for c in classes}
        right += max(classes, key=lambda c: score[c]) == y[n]
    return right / len(y)


def repmet_accuracy(x, y, reps, rep_labels, sigma):
    right = 0
    classes = sorted(set(int(c) for c in rep_labels))
    for n in range(len(y)):
        score = {c: sum(math.exp(-sqdist(x[n], reps[m]) / (2 * sigma ** 2)) for m in range(len(reps))
                        if rep_labels[m] == c) for c in classes}
        right += max(classes, key=lambda c: score[c]) == y[n]
    return right / len(y)


def best_matching_accuracy(cluster_ids, labels):
    """Brute force over every one-to-one map of clusters to classes (small cases only)."""
    clusters, classes = sorted(set(cluster_ids)), sorted(set(labels))
    best = 0
    if len(clusters) <= len(classes):
        maps = (dict(zip(clusters, p)) for p in itertools.permutations(classes, len(clusters)))
    else:
        maps = (dict(zip(p, classes)) for p in itertools.permutations(clusters, len(classes)))
    for m in maps:
        best = max(best, sum(1 for c, l in zip(cluster_ids, labels) if m.get(c) == l))
    return best / len(labels)
