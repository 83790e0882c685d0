"""Naive references for SoDeep, written with Python loops straight from the formulas (tests only).

Inputs are nested lists / NumPy float64 arrays; outputs are Python floats or lists. Ranks are
descending and normalised: the largest score gets 1/n.
"""
from __future__ import annotations

import math

import numpy as np


def sigmoid(v):
    return 1.0 / (1.0 + math.exp(-v))


def true_rank(x):
    """r_i = (1 + #{j : x_j > x_i}) / n."""
    n = len(x)
    return [(1 + sum(1 for j in range(n) if x[j] > x[i])) / n for i in range(n)]


def exact_sorter(x, order_dependent=False, scale=6.8):
    """r_i = (1 + sum_{j != i} sigmoid(c (x_j - x_i))) / n, c = 6.8 / s, s from the upper-triangular differences."""
    n = len(x)
    upper = [[(x[j] - x[i]) if j > i else 0.0 for j in range(n)] for i in range(n)]
    flat = [v for row in upper for v in row]
    if order_dependent:
        mean = sum(flat) / len(flat)
        s = math.sqrt(sum((v - mean) ** 2 for v in flat) / (len(flat) - 1))
    else:
        s = math.sqrt(sum(v * v for v in flat) / (len(flat) - 1))
    c = scale / s
    return [(1 + sum(sigmoid(c * (x[j] - x[i])) for j in range(n) if j != i)) / n for i in range(n)]


def spearman_loss(pred, gt, sorter=exact_sorter, lbd=0.0):
    """mean_i (sorter(pred)_i - rank(gt)_i)^2 + lbd mean_i |pred_i - gt_i|."""
    r_hat, r = sorter(list(pred)), true_rank(list(gt))
    n = len(pred)
    mse = sum((r_hat[i] - r[i]) ** 2 for i in range(n)) / n
    return mse + lbd * sum(abs(pred[i] - gt[i]) for i in range(n)) / n


def map_ranking_loss(output, target, sorter=exact_sorter):
    """sum over classes c, positives i of c: rank of output[i, c] within column c."""
    N, C = len(output), len(output[0])
    total = 0.0
    for c in range(C):
        ranks = sorter([output[i][c] for i in range(N)])
        total += sum(ranks[i] for i in range(N) if target[i][c] == 1)
    return total


def rank_loss(S, sorter=exact_sorter):
    """sum_i rank of S_ii in row i + sum_j rank of S_jj in column j."""
    B = len(S)
    total = 0.0
    for i in range(B):
        total += sorter([S[i][j] for j in range(B)])[i]
    for j in range(B):
        total += sorter([S[i][j] for i in range(B)])[j]
    return total


def rank_hard_loss(S, margin=0.2, nmax=1, use_margin=True, sorter=exact_sorter):
    """Per row (then per column): sum over the nmax best-ranked negatives h of [r_pos + 1/B - h]_+,
    the positive's score lowered by `margin` first when use_margin."""
    B = len(S)

    def one_side(M):
        total = 0.0
        for i in range(B):
            row = [M[i][j] - (margin if (use_margin and j == i) else 0.0) for j in range(B)]
            r = sorter(row)
            negatives = sorted(r[j] for j in range(B) if j != i)[:nmax]
            total += sum(max(r[i] + 1.0 / B - h, 0.0) for h in negatives)
        return total

    St = [[S[j][i] for j in range(B)] for i in range(B)]
    return one_side(S) + one_side(St)


def ap_loss(x, y, sorter=exact_sorter):
    """1 - mean over queries with a positive of AP_i = 1/|P_i| sum_p rk+(p) / ((B-1) r_ip),
    with cosine similarities to the B-1 other items, rk+ the exact position among the positives."""
    x = np.asarray(x, dtype=np.float64)
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    B = len(y)
    aps = []
    for i in range(B):
        others = [j for j in range(B) if j != i]
        s = [float(x[i] @ x[j]) for j in others]
        positives = [k for k, j in enumerate(others) if y[j] == y[i]]
        if not positives:
            continue
        r = sorter(s)
        ap = 0.0
        for k in positives:
            rk_pos = 1 + sum(1 for q in positives if s[q] > s[k])
            ap += rk_pos / ((B - 1) * r[k])
        aps.append(ap / len(positives))
    return 1.0 - sum(aps) / len(aps)
