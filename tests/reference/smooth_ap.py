"""Independent references for Smooth-AP, used by the tests and by bench/bench_smooth_ap.py.

- `paper_loss`, `original_loss`, `exact_ap`: Python loops straight from the formulas (NumPy float64
  in, Python float out), nothing vectorised on purpose.
- `cube_loss`: the official code's computation re-derived from the formula it computes (seeds.md
  section 5.2), vectorised the way it is, with B x B x B tensors: the batch is `num_id` contiguous
  blocks of g = B / num_id items of one class, positives inferred from the positions, the query
  counted among its own positives. Torch, differentiable, so the benchmark can time it.
"""
from __future__ import annotations

import math

import numpy as np
import torch


def sigmoid(v, tau):
    return 1.0 / (1.0 + math.exp(-v / tau)) if v >= 0 else math.exp(v / tau) / (1.0 + math.exp(v / tau))


def cosine_matrix(x):
    x = np.asarray(x, dtype=np.float64)
    n = [math.sqrt(float(np.sum(x[i] ** 2))) for i in range(len(x))]
    return [[float(np.dot(x[i], x[j])) / (n[i] * n[j]) for j in range(len(x))] for i in range(len(x))]


def _ap(s_q, positives, items, tau):
    """(1/|P|) sum_{i in P} (1 + sum_{j in P, j != i} G(s_j - s_i)) / (1 + sum_{j in items, j != i} G(s_j - s_i))."""
    total = 0.0
    for i in positives:
        rank_pos = 1.0 + sum(sigmoid(s_q[j] - s_q[i], tau) for j in positives if j != i)
        rank_all = 1.0 + sum(sigmoid(s_q[j] - s_q[i], tau) for j in items if j != i)
        total += rank_pos / rank_all
    return total / len(positives)


def paper_loss(x, y, tau=0.01):
    """Paper: P_q = q's class without q, Omega_q = all but q; mean of 1 - AP over queries with a positive."""
    s = cosine_matrix(x)
    B = len(y)
    losses = []
    for q in range(B):
        positives = [i for i in range(B) if i != q and y[i] == y[q]]
        if not positives:
            continue
        items = [j for j in range(B) if j != q]
        losses.append(1.0 - _ap(s[q], positives, items, tau))
    return sum(losses) / len(losses)


def original_loss(x, y, tau=0.01):
    """The official rule on any layout: P_q = q's class including q, Omega_q = the whole batch.

    Averaged over the queries that have another item of their class (the same queries as the paper).
    """
    s = cosine_matrix(x)
    B = len(y)
    losses = []
    for q in range(B):
        if not any(i != q and y[i] == y[q] for i in range(B)):
            continue
        positives = [i for i in range(B) if y[i] == y[q]]
        losses.append(1.0 - _ap(s[q], positives, list(range(B)), tau))
    return sum(losses) / len(losses)


def exact_ap(scores, relevant):
    """AP of one list: mean over relevant i of (#relevant ranked at or above i) / (#items at or above i)."""
    n = len(scores)
    positives = [i for i in range(n) if relevant[i]]
    total = 0.0
    for i in positives:
        above_pos = 1 + sum(1 for j in positives if j != i and scores[j] > scores[i])
        above_all = 1 + sum(1 for j in range(n) if j != i and scores[j] > scores[i])
        total += above_pos / above_all
    return total / len(positives)


def smooth_ap_list(scores, relevant, tau):
    """Smoothed AP of one list (every item of the list is a candidate)."""
    n = len(scores)
    return _ap(list(scores), [i for i in range(n) if relevant[i]], list(range(n)), tau)


def clamped_sigmoid(t: torch.Tensor, tau: float) -> torch.Tensor:
    """The official sigmoid: 1 / (1 + exp(clamp(-t / tau, -50, 50)))."""
    return 1.0 / (1.0 + torch.exp(torch.clamp(-t / tau, -50.0, 50.0)))


def cube_loss(x: torch.Tensor, num_id: int, tau: float = 0.01) -> torch.Tensor:
    """The official B x B x B computation on `num_id` contiguous equal blocks (x: (B, D), normalised here).

    R_all[i, j] = 1 + sum_{k != j} G(S_ik - S_ij) over the whole batch (k = i included): a (B, B, B)
    tensor of differences; R_pos[i, j] = the same sum over i's block: (num_id, g, g, g);
    AP_i = (1/g) sum_{j in i's block, j = i included} R_pos[i, j] / R_all[i, j]; loss = 1 - mean AP.
    """
    B = x.shape[0]
    if B % num_id:
        raise ValueError(f"batch of {B} is not {num_id} equal blocks")
    g = B // num_id
    x = torch.nn.functional.normalize(x, dim=1)
    S = x @ x.T  # (B, B)
    off = 1.0 - torch.eye(B, dtype=x.dtype, device=x.device)  # k != j
    diff = S[:, None, :] - S[:, :, None]  # (B, B, B): [i, j, k] = S_ik - S_ij
    rank_all = (clamped_sigmoid(diff, tau) * off).sum(-1) + 1.0  # (B, B)
    xb = x.view(num_id, g, -1)
    Sb = xb @ xb.transpose(1, 2)  # (num_id, g, g)
    off_b = 1.0 - torch.eye(g, dtype=x.dtype, device=x.device)
    diff_b = Sb[:, :, None, :] - Sb[:, :, :, None]  # (num_id, g, g, g): [c, a, m, b] = S_ab - S_am
    rank_pos = (clamped_sigmoid(diff_b, tau) * off_b).sum(-1) + 1.0  # (num_id, g, g)
    blocks = torch.arange(B, device=x.device).view(num_id, g)
    rank_all_b = rank_all[blocks[:, :, None], blocks[:, None, :]]  # (num_id, g, g): own block's columns
    ap = (rank_pos / rank_all_b).sum(-1) / g  # (num_id, g)
    return 1.0 - ap.mean()


def dense_loss(x: torch.Tensor, y: torch.Tensor, tau: float, query_is_positive: bool = False) -> torch.Tensor:
    """Either rule on any layout with (B, B, B) masks, differentiable: a second, dense reference for gradients.

    [q, i, j]: G(S_qj - S_qi) counted when j != i and j is in q's list (j != q unless the query is
    one of its own positives); R^+ over j in P_q. AP_q over i in P_q; mean over queries with a positive.
    """
    B = x.shape[0]
    xn = torch.nn.functional.normalize(x, dim=1)
    S = xn @ xn.T
    eye = torch.eye(B, dtype=torch.bool)
    same = y[:, None] == y[None, :]
    positive = same if query_is_positive else same & ~eye  # [q, i]: i in P_q
    in_list = torch.ones(B, B, dtype=torch.bool) if query_is_positive else ~eye  # [q, j]: j in Omega_q
    G = torch.sigmoid((S[:, None, :] - S[:, :, None]) / tau)  # [q, i, j]
    counted = in_list[:, None, :] & ~eye[None, :, :]  # j in the list, j != i
    rank_all = 1.0 + (G * counted).sum(-1)  # [q, i]
    rank_pos = 1.0 + (G * (counted & positive[:, None, :])).sum(-1)
    has_pos = (same & ~eye).any(1)
    ap = ((rank_pos / rank_all) * positive).sum(1) / positive.sum(1).clamp_min(1)  # singletons: 0, dropped
    return 1.0 - ap[has_pos].mean()
