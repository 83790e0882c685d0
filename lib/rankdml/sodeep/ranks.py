"""Exact ranks in SoDeep's convention: descending and normalised, the largest score gets 1/n."""
from __future__ import annotations

import torch

__all__ = ["exact_rank", "check_sequences"]


def check_sequences(x: torch.Tensor, where: str, *, seq_len: int | None = None) -> None:
    """Check a batch of score sequences `x (B, n)`: a floating, finite 2-D tensor, of length `seq_len` if given."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{where}: expected a torch tensor of shape (B, n), got {type(x).__name__}")
    if x.dim() != 2 or x.shape[1] == 0:
        raise ValueError(f"{where}: expected sequences of shape (B, n) with n >= 1, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{where}: expected floating-point scores, got dtype {x.dtype}")
    if not torch.isfinite(x).all():
        raise ValueError(f"{where}: the scores contain NaN or inf; check the model's output")
    if seq_len is not None and x.shape[1] != seq_len:
        raise ValueError(f"{where}: this sorter was trained on sequences of length {seq_len} and needs "
                         f"inputs of shape (B, {seq_len}), got length {x.shape[1]}; use the 'exact' sorter "
                         f"(any length) or train one for length {x.shape[1]} with train_sorter")


def exact_rank(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Descending normalised ranks along `dim`: :math:`r_i = (1 + \\#\\{j : x_j > x_i\\}) / n`.

    The largest entry gets 1/n, the smallest 1 (SoDeep's convention, section 2.1 of the reference).
    **Ties** share the best rank of their group (competition ranking: ``[3, 1, 1] -> [1, 2, 2] / 3``),
    so the ranks are a function of the values only; the original's double argsort breaks ties by
    position instead. No gradient (ranks are piecewise constant). Same shape, dtype and device as `x`;
    O(n log n) per sequence (a sort and a binary search, no n x n matrix).
    """
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise ValueError("exact_rank: expected a floating-point torch tensor")
    if x.dim() == 0:
        raise ValueError("exact_rank: expected at least one dimension to rank along, got a scalar")
    if torch.isnan(x).any():
        raise ValueError("exact_rank: the input contains NaN, which has no rank")
    x = x.detach().movedim(dim, -1)
    n = x.shape[-1]
    ascending = torch.sort(x, dim=-1).values.contiguous()
    # number of entries <= x_i, so n - that = number of entries strictly greater than x_i
    at_most = torch.searchsorted(ascending, x.contiguous(), right=True)
    ranks = (1 + n - at_most).to(x.dtype) / n
    return ranks.movedim(-1, dim)
