"""Losses on a cross-modal score matrix, and the wrapper that trains them on two-view batches.

A cross-modal batch holds B pairs (query i, gallery item i), e.g. one design team's drawing of an
emoji and another team's drawing of the same emoji. `scores (B, B)` holds the similarity of query
i to gallery item j; the positives are on the diagonal. :class:`TwoViewLoss` turns such a loss
into one on ``(embeddings (2B, D), labels (2B,))`` batches (queries first, then their gallery
items in the same order, as :class:`rankdml.data.TwoViewSampler` yields them), so that
`rankdml.train.fit` trains it like every other loss.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["HardNegativeTripletLoss", "TwoViewLoss", "check_scores"]


def check_scores(scores: torch.Tensor, where: str) -> None:
    """A finite, floating (B, B) matrix with B >= 2 (one positive and at least one negative per row)."""
    if not isinstance(scores, torch.Tensor) or scores.dim() != 2 or not scores.is_floating_point():
        raise ValueError(f"{where}: expected a floating-point (B, B) score matrix, got "
                         f"{tuple(scores.shape) if isinstance(scores, torch.Tensor) else type(scores).__name__}")
    if scores.shape[0] != scores.shape[1] or scores.shape[0] < 2:
        raise ValueError(f"{where}: expected a square (B, B) matrix with B >= 2 and the positives on the "
                         f"diagonal, got shape {tuple(scores.shape)}")
    if not torch.isfinite(scores).all():
        raise ValueError(f"{where}: the scores contain NaN or inf")


class HardNegativeTripletLoss(nn.Module):
    """Hinge on the hardest negative of each row and each column (VSE++, Faghri et al. 2018):

    .. math::
        L = \\sum_i \\big[m - S_{ii} + \\max_{j \\ne i} S_{ij}\\big]_+ + \\sum_j \\big[m - S_{jj} + \\max_{i \\ne j} S_{ij}\\big]_+

    on `scores (B, B)` (positives on the diagonal), summed over the batch as SoDeep's cross-modal
    losses are. ``hardest=False`` sums the hinge over every negative instead (the older "sum of
    hinges" loss). The baseline SoDeep's `RankLoss` / `RankHardLoss` were compared with.
    """

    def __init__(self, margin: float = 0.2, *, hardest: bool = True):
        super().__init__()
        self.margin, self.hardest = margin, hardest

    def forward(self, scores: torch.Tensor) -> torch.Tensor:
        check_scores(scores, "HardNegativeTripletLoss")
        B = scores.shape[0]
        eye = torch.eye(B, dtype=torch.bool, device=scores.device)
        positive = torch.diagonal(scores)
        # row i: query i against every gallery item; column j: gallery item j against every query
        cost_rows = (self.margin - positive[:, None] + scores).masked_fill(eye, 0).clamp_min(0)
        cost_cols = (self.margin - positive[None, :] + scores).masked_fill(eye, 0).clamp_min(0)
        if self.hardest:
            return cost_rows.max(dim=1).values.sum() + cost_cols.max(dim=0).values.sum()
        return cost_rows.sum() + cost_cols.sum()

    def extra_repr(self) -> str:
        return f"margin={self.margin}, hardest={self.hardest}"


class TwoViewLoss(nn.Module):
    """`score_loss(S)` on the cosine similarities S = q̂ ĝᵀ of a two-view batch.

    `embeddings (2B, D)`: the B queries first, then their B gallery items in the same order;
    `labels (2B,)`: the class of each, with ``labels[:B] == labels[B:]`` and B distinct classes (so
    that the diagonal holds the only positives). Embeddings are L2-normalised here.
    """

    def __init__(self, score_loss: nn.Module):
        super().__init__()
        self.score_loss = score_loss

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor, indices=None) -> torch.Tensor:
        if indices is not None:
            raise ValueError("TwoViewLoss takes no mined indices; call it without a miner")
        if not isinstance(embeddings, torch.Tensor) or embeddings.dim() != 2 or embeddings.shape[0] % 2:
            raise ValueError(f"TwoViewLoss: expected embeddings of shape (2B, D), queries then gallery items, got "
                             f"{tuple(embeddings.shape) if isinstance(embeddings, torch.Tensor) else type(embeddings).__name__}")
        B = embeddings.shape[0] // 2
        if labels.shape != (2 * B,) or not torch.equal(labels[:B], labels[B:]):
            raise ValueError("TwoViewLoss: expected labels (2B,) with labels[:B] == labels[B:] (query i and gallery "
                             "item i of the same class); batch with rankdml.data.TwoViewSampler")
        if labels[:B].unique().numel() != B:
            raise ValueError("TwoViewLoss: the B pairs of a batch must be of B distinct classes (the diagonal "
                             "must hold the only positives)")
        if not torch.isfinite(embeddings).all():
            raise ValueError("TwoViewLoss: the embeddings contain NaN or inf; check the model's output")
        x = F.normalize(embeddings, dim=1)
        return self.score_loss(x[:B] @ x[B:].T)
