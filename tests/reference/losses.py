"""Naive reference implementations of the losses, written with Python loops straight from the papers.

Used only by the tests. Inputs are NumPy float64 arrays `x (B, D)` and integer labels `y (B,)`;
outputs are Python floats. Nothing here is vectorised on purpose: each line should read like
the formula it implements.
"""
from __future__ import annotations

import math

import numpy as np


def dist(x, i, j, eps=0.0):
    return math.sqrt(float(np.sum((x[i] - x[j]) ** 2)) + eps)


def sqdist(x, i, j):
    return float(np.sum((x[i] - x[j]) ** 2))


def relu(v):
    return max(v, 0.0)


def softplus(v):
    return math.log1p(math.exp(v))


def _pairs(y):
    B = len(y)
    pos = [(i, j) for i in range(B) for j in range(B) if i != j and y[i] == y[j]]
    neg = [(i, j) for i in range(B) for j in range(B) if y[i] != y[j]]
    return pos, neg


def contrastive(x, y, pos_margin=0.0, neg_margin=1.0, scale=0.5, eps=0.0, triplets=None):
    """Hadsell et al.: 1/2 y [d - m+]_+^2 + 1/2 (1 - y) [m- - d]_+^2, mean over ordered pairs."""
    if triplets is None:
        pos, neg = _pairs(y)
    else:
        pos = [(a, p) for a, p, _ in triplets]
        neg = [(a, n) for a, _, n in triplets]
    total = 0.0
    for i, j in pos:
        total += scale * relu(dist(x, i, j, eps) - pos_margin) ** 2
    for i, j in neg:
        total += scale * relu(neg_margin - dist(x, i, j, eps)) ** 2
    return total / (len(pos) + len(neg))


def _d(x, i, j, squared):
    return sqdist(x, i, j) if squared else dist(x, i, j)


def all_triplets(y):
    B = len(y)
    return [(a, p, n) for a in range(B) for p in range(B) for n in range(B)
            if a != p and y[a] == y[p] and y[a] != y[n]]


def batch_hard_triplets(x, y):
    out = []
    B = len(y)
    for a in range(B):
        positives = [p for p in range(B) if p != a and y[p] == y[a]]
        negatives = [n for n in range(B) if y[n] != y[a]]
        if not positives or not negatives:
            continue
        p = max(positives, key=lambda q: dist(x, a, q))
        n = min(negatives, key=lambda q: dist(x, a, q))
        out.append((a, p, n))
    return out


def semi_hard_triplets(x, y):
    """TF semantics: closest negative farther than the positive, else the farthest negative."""
    out = []
    B = len(y)
    for a in range(B):
        negatives = [n for n in range(B) if y[n] != y[a]]
        for p in range(B):
            if p == a or y[p] != y[a]:
                continue
            d_ap = sqdist(x, a, p)
            beyond = [n for n in negatives if sqdist(x, a, n) > d_ap]
            if beyond:
                n = min(beyond, key=lambda q: sqdist(x, a, q))
            else:
                n = max(negatives, key=lambda q: sqdist(x, a, q))
            out.append((a, p, n))
    return out


def triplet(x, y, margin=0.2, mining="all", squared=False, soft=False, average_nonzero=False, triplets=None):
    if triplets is None:
        triplets = {"all": lambda: all_triplets(y), "batch_hard": lambda: batch_hard_triplets(x, y),
                    "semi_hard": lambda: semi_hard_triplets(x, y)}[mining]()
    losses = []
    for a, p, n in triplets:
        v = _d(x, a, p, squared) - _d(x, a, n, squared)
        losses.append(softplus(v) if soft else relu(v + margin))
    if average_nonzero:
        nz = [v for v in losses if v > 0]
        return sum(nz) / len(nz) if nz else 0.0
    return sum(losses) / len(losses)


def lifted(x, y, margin=1.0):
    """Song et al. 2016: J_ij over unordered positive pairs, 1/(2|P|) sum [J]_+^2."""
    B = len(y)
    total, count = 0.0, 0
    for i in range(B):
        for j in range(i + 1, B):
            if y[i] != y[j]:
                continue
            s = 0.0
            for k in range(B):
                if y[k] != y[i]:
                    s += math.exp(margin - dist(x, i, k))
            for l in range(B):
                if y[l] != y[j]:
                    s += math.exp(margin - dist(x, j, l))
            J = math.log(s) + dist(x, i, j)
            total += relu(J) ** 2
            count += 1
    return total / (2 * count)


def lifted_generalized(x, y, margin=1.0):
    """Hermans et al. 2017: mean over anchors with a positive of [log sum_p e^D_ap + log sum_n e^(m - D_an)]_+."""
    B = len(y)
    vals = []
    for a in range(B):
        positives = [p for p in range(B) if p != a and y[p] == y[a]]
        if not positives:
            continue
        sp = sum(math.exp(dist(x, a, p)) for p in positives)
        sn = sum(math.exp(margin - dist(x, a, n)) for n in range(B) if y[n] != y[a])
        vals.append(relu(math.log(sp) + math.log(sn)))
    return sum(vals) / len(vals)


def npair_indices(y):
    """For each class in increasing label order: its first and second position in the batch."""
    anchors, positives = [], []
    for c in sorted(set(int(v) for v in y)):
        where = [i for i in range(len(y)) if y[i] == c]
        anchors.append(where[0])
        positives.append(where[1])
    return anchors, positives


def npairs(x, y, l2_reg=0.002):
    """Sohn 2016: (1/N) sum_i log(1 + sum_{j!=i} exp(f_i.f_j+ - f_i.f_i+)) + lambda/4 (mean|f|^2 + mean|f+|^2)."""
    A, P = npair_indices(y)
    N = len(A)
    total = 0.0
    for i in range(N):
        s = 1.0
        for j in range(N):
            if j != i:
                s += math.exp(float(x[A[i]] @ x[P[j]] - x[A[i]] @ x[P[i]]))
        total += math.log(s)
    reg = 0.25 * l2_reg * (sum(float(x[a] @ x[a]) for a in A) / N + sum(float(x[p] @ x[p]) for p in P) / N)
    return total / N + reg


def angular(x, y, alpha_degrees=45.0, combine_npairs=False, angular_weight=2.0, l2_reg=0.002):
    """Wang et al. 2017, N-pair form: log(1 + sum_j exp(4 t (x_a + x_p).x_n - 2 (1 + t) x_a.x_p))."""
    t = math.tan(math.radians(alpha_degrees)) ** 2
    A, P = npair_indices(y)
    N = len(A)
    ang = 0.0
    for i in range(N):
        xa, xp = x[A[i]], x[P[i]]
        s = 1.0
        for j in range(N):
            if j != i:
                xn = x[P[j]]
                s += math.exp(float(4 * t * (xa + xp) @ xn - 2 * (1 + t) * xa @ xp))
        ang += math.log(s)
    ang /= N
    reg = npairs(x, y, l2_reg) - npairs(x, y, 0.0)
    if combine_npairs:
        return npairs(x, y, 0.0) + angular_weight * ang + reg
    return ang + reg


def margin(x, y, alpha=0.2, beta=1.2, nu=0.0, eps=1e-8, triplets=None):
    """Wu et al. 2017: [alpha + y_ij (D_ij - beta)]_+ over pairs, / #non-zero terms; beta scalar or per class."""
    def b(i):
        return beta[int(y[i])] if isinstance(beta, (list, tuple, np.ndarray)) else beta
    if triplets is None:
        pos, neg = _pairs(y)
    else:
        pos = [(a, p) for a, p, _ in triplets]
        neg = [(a, n) for a, _, n in triplets]
    terms, betas = [], []
    for i, j in pos:
        terms.append(relu(alpha + dist(x, i, j, eps) - b(i)))
        betas.append(b(i))
    for i, j in neg:
        terms.append(relu(alpha - (dist(x, i, j, eps) - b(i))))
        betas.append(b(i))
    nonzero = sum(1 for v in terms if v > 0)
    return sum(terms) / max(nonzero, 1) + nu * sum(betas) / len(betas)


def distance_weights(x, y, cutoff=0.5, nonzero_loss_cutoff=1.4):
    """Wu et al. 2017: per anchor, probabilities of each negative, w ∝ 1/q(max(d, cutoff)), 0 beyond the cut-off."""
    B, n = x.shape
    W = np.zeros((B, B))
    for a in range(B):
        for j in range(B):
            d = dist(x, a, j)
            if y[j] == y[a] or d >= nonzero_loss_cutoff:
                continue
            dc = max(d, cutoff)
            q = dc ** (n - 2) * (1 - dc * dc / 4) ** ((n - 3) / 2)
            W[a, j] = 1.0 / q
        if W[a].sum() == 0:  # fallback: uniform over the negatives
            W[a] = [1.0 if y[j] != y[a] else 0.0 for j in range(B)]
        W[a] /= W[a].sum()
    return W
