"""Pairwise distances and similarities between embeddings, safe to differentiate everywhere.

All functions take `x (B, D)` and an optional `y (M, D)` (default: `x` itself) and return a
`(B, M)` matrix with the dtype and device of `x`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def pairwise_squared_distances(x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
    """Squared Euclidean distances :math:`D^2_{ij} = \\|x_i - y_j\\|^2`, shape (B, M).

    Computed from the norm expansion :math:`\\|x\\|^2 + \\|y\\|^2 - 2 x^\\top y` (one matrix
    product), clamped at 0 against rounding; when `y` is None the diagonal is exactly 0 (and
    its gradient is 0).
    """
    same = y is None
    y = x if y is None else y
    sq = (x * x).sum(1)[:, None] + (y * y).sum(1)[None, :] - 2.0 * (x @ y.T)  # (B, M)
    sq = sq.clamp_min(0.0)
    if same:
        eye = torch.eye(x.shape[0], dtype=torch.bool, device=x.device)
        sq = sq.masked_fill(eye, 0.0)
    return sq


def pairwise_distances(x: torch.Tensor, y: torch.Tensor | None = None, *, eps: float = 0.0) -> torch.Tensor:
    """Euclidean distances :math:`D_{ij} = \\|x_i - y_j\\|`, shape (B, M), with a square root safe at 0.

    Two ways to keep the gradient finite when two embeddings coincide (where
    :math:`d\\sqrt{u}/du = \\infty`):

    * ``eps == 0`` (default), the *masked square root* of TensorFlow's metric-learning ops:
      :math:`D_{ij} = \\sqrt{D^2_{ij}}` where :math:`D^2_{ij} > 0` and exactly 0 elsewhere, with
      gradient 0 at coincident points (a valid sub-gradient). Distances are exact.
    * ``eps > 0``, the smoothing of Wu et al.'s and PADS's code: :math:`D_{ij} = \\sqrt{D^2_{ij} + \\epsilon}`
      everywhere (``eps=1e-8`` there). Differentiable everywhere, but every distance, the
      diagonal included, is biased upwards by about :math:`\\epsilon / (2 D_{ij})`.
    """
    sq = pairwise_squared_distances(x, y)  # (B, M)
    if eps > 0:
        return torch.sqrt(sq + eps)
    positive = sq > 0
    # The inner clamp keeps sqrt's derivative finite on the entries that torch.where discards:
    # an inf there would turn into NaN (inf * 0) in the backward pass.
    return torch.where(positive, sq.clamp_min(torch.finfo(sq.dtype).tiny).sqrt(), torch.zeros_like(sq))


def cosine_similarity(x: torch.Tensor, y: torch.Tensor | None = None, *, eps: float = 1e-12) -> torch.Tensor:
    """Cosine similarities :math:`s_{ij} = x_i^\\top y_j / (\\|x_i\\| \\|y_j\\|)`, shape (B, M).

    Rows are L2-normalised with ``torch.nn.functional.normalize`` (norms clamped below at `eps`).
    """
    xn = F.normalize(x, dim=1, eps=eps)
    yn = xn if y is None else F.normalize(y, dim=1, eps=eps)
    return xn @ yn.T
