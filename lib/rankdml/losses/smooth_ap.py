"""Smooth-AP (Brown et al. 2020): average precision with the ranking's step function replaced by a sigmoid.

For a query q, a relevant item i and the other items j of the list, with scores s and
:math:`D_{ij} = s_{qj} - s_{qi}`, the rank of i among the relevant items and among all items are

.. math::
    R^+(i) = 1 + \\sum_{j \\in P_q, j \\ne i} G(D_{ij}), \\qquad
    R(i) = 1 + \\sum_{j \\in \\Omega_q, j \\ne i} G(D_{ij}), \\qquad
    AP_q = \\frac{1}{|P_q|} \\sum_{i \\in P_q} \\frac{R^+(i)}{R(i)}

with :math:`G = \\mathbb{1}[x > 0]` for the exact AP and :math:`G(x) = \\sigma(x / \\tau)` for the
smoothed one. Each (query, relevant item) pair needs one row of G over the list, so the whole
computation holds (pairs x list) terms, B·K·B for a batch of B items with K per class, never the
B x B x B cube of the official code; the rows are processed in blocks of queries, and the backward
pass recomputes each block with the analytic gradient instead of keeping every block alive.
"""
from __future__ import annotations

import math
import numbers
from typing import NamedTuple

import torch
from torch import nn

from rankdml._checks import check_embeddings_labels
from rankdml.callbacks import Callback, TrainState
from rankdml.losses.functional import zero_loss
from rankdml.losses.structured import _no_indices
from rankdml.masks import positive_mask, same_label

__all__ = ["SmoothAPLoss", "smooth_ap_estimate", "TemperatureSchedule"]

VARIANTS = ("paper", "original")
SCHEDULES = ("constant", "linear", "cosine", "exponential")
# Terms of one block of (query, relevant item) pairs x list: 2**22 float32 values are 16 MB per
# (M, N) tensor, a handful of which are alive at once.
DEFAULT_BLOCK_ELEMENTS = 1 << 22


def _check_temperature(temperature, where: str) -> float:
    if isinstance(temperature, bool) or not isinstance(temperature, numbers.Real) \
            or not math.isfinite(temperature) or temperature <= 0:
        raise ValueError(f"{where}: the temperature must be a finite number > 0 (the paper uses 0.01), "
                         f"got {temperature!r}")
    return float(temperature)


class _Pairs(NamedTuple):
    """Each query's relevant items as a padded (Q, K) table: slot (q, k) is the pair (q, table[q, k])."""

    table: torch.Tensor  # (Q, K) columns of the relevant items; padding repeats the first one
    valid: torch.Tensor  # (Q, K) bool, False on the padding
    counts: torch.Tensor  # (Q,) |P_q|
    excluded: torch.Tensor | None  # (Q,) a column left out of each query's list (the query itself), or None


def _pairs(relevant: torch.Tensor, excluded: torch.Tensor | None) -> _Pairs:
    rows, cols = torch.nonzero(relevant, as_tuple=True)  # sorted by row
    counts = relevant.sum(1)
    starts = counts.cumsum(0) - counts
    slot = torch.arange(rows.numel(), device=rows.device) - starts[rows]  # rank of the pair within its query
    Q, K = relevant.shape[0], int(counts.max())
    table = cols[starts][:, None].repeat(1, K)  # padding: a real relevant column, masked by `valid`
    valid = torch.zeros(Q, K, dtype=torch.bool, device=rows.device)
    table[rows, slot] = cols
    valid[rows, slot] = True
    return _Pairs(table, valid, counts, excluded)


def _blocks(pairs: _Pairs, num_items: int, max_elements: int) -> list[slice]:
    """Slices of queries such that (queries x K x N) <= `max_elements` (one query at least)."""
    Q, K = pairs.table.shape
    step = max(1, max_elements // (K * num_items))
    return [slice(a, min(a + step, Q)) for a in range(0, Q, step)]


def _block_terms(t: torch.Tensor, pairs: _Pairs, blk: slice, smooth: bool):
    """G(D_ij) for the queries of `blk`, every relevant item i (slot k) against the whole list j.

    t: (Q, N) scores, divided by τ when `smooth`; G = σ (smooth) or the step 1[x > 0].
    Returns g (b, K, N) (unmasked: the excluded column and i itself hold their value), g_pos
    (b, K, K) (G at the query's relevant items j, 0 on the padding), rank_pos (b, K), rank_all (b, K).
    """
    tb, table, valid = t[blk], pairs.table[blk], pairs.valid[blk]
    b, K = table.shape
    g = tb[:, None, :] - tb.gather(1, table)[:, :, None]  # (b, K, N): D_ij (/ τ)
    g = g.sigmoid_() if smooth else (g > 0).to(t.dtype)
    g_pos = g.gather(2, table[:, None, :].expand(b, K, K))  # (b, K, K): [k, l] = G(D_{i_k, j_l})
    own = g_pos.diagonal(dim1=1, dim2=2)  # G(0) of i against itself: in no sum (subtracted as computed: exact)
    g_pos = g_pos * valid[:, None, :]
    rank_pos = 1.0 + g_pos.sum(2) - own
    rank_all = 1.0 + g.sum(2) - own
    if pairs.excluded is not None:
        rank_all = rank_all - g.gather(2, pairs.excluded[blk][:, None, None].expand(b, K, 1))[:, :, 0]
    return g, g_pos, rank_pos, rank_all


def _average_precision(t: torch.Tensor, pairs: _Pairs, blocks: list[slice], smooth: bool, keep: bool = False):
    """(Q,) AP of every row; with `keep`, also the (g, g_pos, rank_pos, rank_all) of each block."""
    ap, kept = [], []
    for blk in blocks:
        terms = _block_terms(t, pairs, blk, smooth)
        ap.append((terms[2] / terms[3] * pairs.valid[blk]).sum(1))
        if keep:
            kept.append(terms)
    return torch.cat(ap) / pairs.counts, kept


class _SmoothAP(torch.autograd.Function):
    """Smoothed AP per row, (Q, N) scores -> (Q,); the backward pass recomputes block by block.

    Gradient, for a pair (q, i) with g_j = σ(D_ij/τ), A = R^+(i), Z = R(i) and j ≠ i in q's list:
    ∂(A/Z)/∂s_qj = (1[j ∈ P_q]/Z − A/Z²) g_j (1 − g_j)/τ and ∂(A/Z)/∂s_qi = −Σ_j ∂(A/Z)/∂s_qj.
    A single block is kept from the forward pass instead of being recomputed.
    """

    @staticmethod
    def forward(ctx, scores, pairs: _Pairs, temperature: float, max_elements: int):
        t = scores * (1.0 / temperature)
        blocks = _blocks(pairs, scores.shape[1], max_elements)
        ap, kept = _average_precision(t, pairs, blocks, True, keep=len(blocks) == 1)
        ctx.save_for_backward(t)
        ctx.pairs, ctx.blocks, ctx.kept, ctx.temperature = pairs, blocks, kept, temperature
        return ap

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_ap):
        (t,) = ctx.saved_tensors
        pairs = ctx.pairs
        grad = torch.empty_like(t)
        weight = grad_ap / pairs.counts / ctx.temperature  # dL/dAP_q / |P_q| / τ, per query
        for b, blk in enumerate(ctx.blocks):
            g, g_pos, rank_pos, rank_all = ctx.kept[b] if ctx.kept else _block_terms(t, pairs, blk, True)
            table, valid = pairs.table[blk], pairs.valid[blk]
            w = weight[blk][:, None] * valid  # (b, K): 0 on the padding
            # σ' = σ(1 − σ); for every j of the list: −A/Z² ...
            c = torch.addcmul(g, g, g, value=-1.0).mul_((-w * rank_pos / rank_all ** 2)[:, :, None])  # (b, K, N)
            # ... and + 1/Z for the relevant j (g_pos is 0 on the padding)
            c.scatter_add_(2, table[:, None, :].expand_as(g_pos), (w / rank_all)[:, :, None] * (g_pos - g_pos * g_pos))
            # (The j = i entry needs no masking: it enters ∂/∂s_qj and ∂/∂s_qi with opposite signs.)
            if pairs.excluded is not None:  # the query is not in its own list (paper)
                c.scatter_(2, pairs.excluded[blk][:, None, None].expand(*w.shape, 1), 0.0)
            grad[blk] = c.sum(1).scatter_add_(1, table, -c.sum(2))  # ∂/∂s_qj, then ∂/∂s_qi
        ctx.kept = None
        return grad, None, None, None


def _smooth_ap_rows(scores: torch.Tensor, relevant: torch.Tensor, excluded: torch.Tensor | None,
                    temperature: float, max_elements: int) -> torch.Tensor:
    """(Q,) smoothed AP of each row of `scores` (Q, N); relevant (Q, N) bool, >= 1 per row;
    `excluded` (Q,): a column left out of row q's list (never relevant), or None."""
    return _SmoothAP.apply(scores, _pairs(relevant, excluded), temperature, max_elements)


class _CosineGram(torch.autograd.Function):
    """S = X̂ X̂ᵀ with X̂ the rows of X divided by max(‖x‖, eps), as ``F.normalize``.

    Backward in one matrix product (S is symmetric): dX̂ = (dS + dSᵀ) X̂, then
    dx = (dx̂ − x̂ (x̂ · dx̂)) / ‖x‖ (dx̂ / eps where the norm is clamped).
    """

    @staticmethod
    def forward(ctx, x, eps: float = 1e-12):
        norm = torch.linalg.vector_norm(x, dim=1, keepdim=True)
        clamped = norm < eps
        xn = x / norm.clamp_min(eps)
        ctx.save_for_backward(xn, norm, clamped)
        ctx.eps = eps
        return xn @ xn.T

    @staticmethod
    def backward(ctx, grad_s):
        xn, norm, clamped = ctx.saved_tensors
        grad_xn = (grad_s + grad_s.T) @ xn
        tangent = grad_xn - xn * (xn * grad_xn).sum(1, keepdim=True)
        return torch.where(clamped, grad_xn, tangent) / norm.clamp_min(ctx.eps), None


class SmoothAPLoss(nn.Module):
    """Smooth-AP loss (Brown et al. 2020): one minus the sigmoid-smoothed AP of every query in the batch.

    Every item q is a query against the rest of the batch, with cosine similarities
    :math:`s_{qj}` of the L2-normalised embeddings, :math:`D_{ij} = s_{qj} - s_{qi}` and
    :math:`G(x) = \\sigma(x / \\tau)`:

    .. math::
        AP_q = \\frac{1}{|P_q|} \\sum_{i \\in P_q}
               \\frac{1 + \\sum_{j \\in P_q, j \\ne i} G(D_{ij})}{1 + \\sum_{j \\in \\Omega_q, j \\ne i} G(D_{ij})},
        \\qquad
        L = \\frac{1}{|\\mathcal{Q}|} \\sum_{q \\in \\mathcal{Q}} (1 - AP_q)

    ``variant="paper"``: :math:`P_q` = the other items of q's class, :math:`\\Omega_q` = every
    item but q (the paper's formula). ``variant="original"``: the official code's rule, the query
    counted among its own positives: :math:`P_q` = q's class *including q*, :math:`\\Omega_q` = the
    whole batch. On the official layout (contiguous equal blocks of distinct classes) this is the
    official value exactly; on any other layout it is the same rule applied to the labels.
    :math:`\\mathcal{Q}` = the queries with at least one other item of their class: a class with a
    single item in the batch gives no query (its AP is undefined), but its item still counts as a
    negative for the others (in both variants, so they average over the same queries).

    Args:
        temperature: :math:`\\tau`. Default 0.01 (paper). A plain attribute: a
            :class:`TemperatureSchedule` callback may change it during training.
        variant: ``"paper"`` (default) or ``"original"`` (see above).
        max_block_elements: the largest block of (query, positive) pairs x B terms computed at once;
            peak memory is a few such float tensors. Default 2**22.

    Shape:
        embeddings (B, D) (normalised here), labels (B,) in any order, classes of any sizes -> scalar.
        Time O(B·K·B) with K the largest class size in the batch; memory: blocks of at most
        `max_block_elements` terms (one query at least), never a B x B x B tensor.
        A batch without a positive pair (all labels distinct) gives 0 (connected to the graph) and a
        warning; a single-class batch raises ValueError. Mined ``indices`` are refused (ValueError).

    Notes:
        - The official code also needs ``num_id`` contiguous equal blocks (positives inferred from the
          positions) and builds B x B x B tensors (the authors trained B = 384 on a 48 GB GPU; it does
          not fit 32 GB); here positives come from the labels, so any sampler and unequal class sizes
          (as in SOP) work.
        - Its sigmoid clamps the argument to ±50 (values differ by < 1e-21, and the clamp zeroes the
          gradient there); ``torch.sigmoid`` is stable without it, and its derivative σ(1 − σ) is
          finite at any τ (similarities of ±1 with τ = 1e-3 included).
        - pytorch-metric-learning's ``SmoothAPLoss`` (2.9.0) keeps the original rule but reshapes the
          batch into blocks of size (number of classes) instead of (samples per class): right only when
          the two are equal.

    References:
        Brown, Xie, Kalogeiton, Zisserman, "Smooth-AP: Smoothing the Path Towards Large-Scale Image
        Retrieval", ECCV 2020 (brown2020smoothap).
    """

    def __init__(self, *, temperature: float = 0.01, variant: str = "paper",
                 max_block_elements: int = DEFAULT_BLOCK_ELEMENTS):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"SmoothAPLoss: unknown variant {variant!r}; choose one of {', '.join(VARIANTS)}")
        if not isinstance(max_block_elements, int) or max_block_elements < 1:
            raise ValueError(f"SmoothAPLoss: max_block_elements must be a positive int, got {max_block_elements!r}")
        self.temperature = _check_temperature(temperature, "SmoothAPLoss")
        self.variant, self.max_block_elements = variant, max_block_elements

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, variant={self.variant!r}"

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor, indices=None) -> torch.Tensor:
        check_embeddings_labels(embeddings, labels, min_classes=2, where="SmoothAPLoss")
        _no_indices(indices, "SmoothAPLoss")
        tau = _check_temperature(self.temperature, "SmoothAPLoss")
        pos = positive_mask(labels)  # (B, B)
        queries = pos.any(1)  # (B,): the queries with an AP
        if not queries.any():
            return zero_loss(embeddings, "SmoothAPLoss", "no positive pair in the batch (all labels distinct)")
        scores = _CosineGram.apply(embeddings)  # (B, B) cosine similarities
        if not queries.all():
            scores = scores[queries]  # (Q, B)
        if self.variant == "paper":
            relevant = pos[queries]
            excluded = torch.arange(labels.shape[0], device=labels.device)[queries]  # q is not in its own list
        else:
            relevant = same_label(labels)[queries]  # q is one of its own positives, in its own list
            excluded = None
        ap = _smooth_ap_rows(scores, relevant, excluded, tau, self.max_block_elements)
        return 1.0 - ap.mean()


def smooth_ap_estimate(scores: torch.Tensor, relevance: torch.Tensor, temperature: float = 0.01, *,
                       max_block_elements: int = DEFAULT_BLOCK_ELEMENTS) -> tuple[torch.Tensor, torch.Tensor]:
    """The smoothed AP beside the exact AP of ranked lists, for analysis.

    Each row is one query's list (the query itself not in it): score :math:`s_j` of item j and
    whether it is relevant. Exact: :math:`G(x) = \\mathbb{1}[x > 0]` (an item tied with i is not
    counted before it; on untied scores this is the usual AP); smoothed: :math:`G(x) = \\sigma(x/\\tau)`,
    in the formula of the module docstring with :math:`\\Omega` = the whole list.

    Args:
        scores: (N,) or (Q, N) floating similarities (higher = ranked first).
        relevance: same shape, bool or 0/1; every row needs at least one relevant item.
        temperature: :math:`\\tau` > 0.

    Returns:
        ``(smoothed, exact)``, each () for a 1-D input or (Q,); `smoothed` is differentiable with
        respect to `scores`.
    """
    where = "smooth_ap_estimate"
    tau = _check_temperature(temperature, where)
    if not isinstance(max_block_elements, int) or max_block_elements < 1:
        raise ValueError(f"{where}: max_block_elements must be a positive int, got {max_block_elements!r}")
    if not isinstance(scores, torch.Tensor) or not isinstance(relevance, torch.Tensor):
        raise ValueError(f"{where}: expected torch tensors, got {type(scores).__name__} and {type(relevance).__name__}")
    if scores.dim() not in (1, 2) or scores.shape != relevance.shape:
        raise ValueError(f"{where}: expected scores (N,) or (Q, N) and relevance of the same shape, "
                         f"got {tuple(scores.shape)} and {tuple(relevance.shape)}")
    if not scores.is_floating_point():
        raise ValueError(f"{where}: expected floating-point scores, got dtype {scores.dtype}")
    if not torch.isfinite(scores).all():
        raise ValueError(f"{where}: scores contain NaN or inf")
    if relevance.dtype != torch.bool:
        if not ((relevance == 0) | (relevance == 1)).all():
            raise ValueError(f"{where}: relevance must be bool or 0/1")
        relevance = relevance != 0
    squeeze = scores.dim() == 1
    s, rel = (scores[None], relevance[None]) if squeeze else (scores, relevance)
    rel = rel.to(s.device)
    empty = ~rel.any(1)
    if empty.any():
        raise ValueError(f"{where}: rows {empty.nonzero().flatten().tolist()[:10]} have no relevant item "
                         f"(AP is undefined); leave them out")
    smoothed = _smooth_ap_rows(s, rel, None, tau, max_block_elements)
    pairs = _pairs(rel, None)
    exact, _ = _average_precision(s.detach(), pairs, _blocks(pairs, s.shape[1], max_block_elements), smooth=False)
    return (smoothed[0], exact[0]) if squeeze else (smoothed, exact)


class TemperatureSchedule(Callback):
    """Anneal a loss's ``temperature`` from `start` to `end` over training (a step callback).

    With progress :math:`p = \\min(1, t / T)` (t = optimiser steps done, T = `steps` or the
    run's ``total_steps``), the temperature used by the next step is

    - ``"constant"``: :math:`\\tau_s`;
    - ``"linear"``: :math:`\\tau_s + (\\tau_e - \\tau_s)\\, p`;
    - ``"cosine"``: :math:`\\tau_e + (\\tau_s - \\tau_e)(1 + \\cos \\pi p)/2`;
    - ``"exponential"`` (geometric): :math:`\\tau_s (\\tau_e / \\tau_s)^p`.

    It is set at the start of the run (so a resumed run continues where it stopped) and after every
    step, on `loss` or else on the training loop's ``state.loss`` (which must have a
    ``temperature`` attribute, e.g. :class:`SmoothAPLoss`).

    Args:
        start, end: :math:`\\tau_s`, :math:`\\tau_e` > 0 (``end`` defaults to ``start``).
        kind: one of ``"constant"``, ``"linear"``, ``"cosine"``, ``"exponential"``.
        steps: the number of steps of the schedule; None (default): the run's ``total_steps``.
        loss: the module to set; None (default): ``state.loss``.
    """

    def __init__(self, start: float = 0.01, end: float | None = None, *, kind: str = "linear",
                 steps: int | None = None, loss: nn.Module | None = None):
        if kind not in SCHEDULES:
            raise ValueError(f"TemperatureSchedule: unknown kind {kind!r}; choose one of {', '.join(SCHEDULES)}")
        if steps is not None and (not isinstance(steps, int) or steps < 1):
            raise ValueError(f"TemperatureSchedule: steps must be a positive int or None, got {steps!r}")
        self.start = _check_temperature(start, "TemperatureSchedule")
        self.end = _check_temperature(self.start if end is None else end, "TemperatureSchedule")
        self.kind, self.steps, self.loss = kind, steps, loss
        self.temperature: float | None = None  # the last value set

    def __repr__(self) -> str:
        return f"TemperatureSchedule(start={self.start}, end={self.end}, kind={self.kind!r}, steps={self.steps})"

    def temperature_at(self, step: int, total_steps: int) -> float:
        """The temperature after `step` of `total_steps` steps (`steps`, if given, overrides `total_steps`)."""
        total = self.steps if self.steps is not None else total_steps
        if total < 1:
            raise ValueError(f"TemperatureSchedule: needs total_steps >= 1, got {total}")
        p = min(1.0, max(0.0, step / total))
        s, e = self.start, self.end
        if self.kind == "constant":
            return s
        if self.kind == "linear":
            return s + (e - s) * p
        if self.kind == "cosine":
            return e + (s - e) * 0.5 * (1.0 + math.cos(math.pi * p))
        return s * (e / s) ** p

    def _apply(self, state: TrainState) -> None:
        target = self.loss if self.loss is not None else state.loss
        if not hasattr(target, "temperature"):
            raise ValueError(f"TemperatureSchedule: {type(target).__name__} has no 'temperature' attribute; "
                             f"pass the loss to anneal as TemperatureSchedule(..., loss=my_smooth_ap_loss)")
        self.temperature = self.temperature_at(state.step, state.total_steps)
        target.temperature = self.temperature

    def on_fit_start(self, state: TrainState) -> None:
        self._apply(state)

    def on_step_end(self, state: TrainState) -> None:
        self._apply(state)

    def state_dict(self) -> dict:
        return {"start": self.start, "end": self.end, "kind": self.kind, "steps": self.steps,
                "temperature": self.temperature}

    def load_state_dict(self, state: dict) -> None:
        saved = (state["start"], state["end"], state["kind"], state["steps"])
        if saved != (self.start, self.end, self.kind, self.steps):
            raise ValueError(f"TemperatureSchedule: the checkpoint was made with (start, end, kind, steps) = "
                             f"{saved}, this run has {(self.start, self.end, self.kind, self.steps)}; "
                             f"resume with the same schedule")
        self.temperature = state["temperature"]
