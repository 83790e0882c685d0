"""Small pure helpers shared by the loss modules."""
from __future__ import annotations

import warnings

import torch


def zero_loss(embeddings: torch.Tensor, where: str, why: str) -> torch.Tensor:
    """A zero scalar that stays connected to the graph (``requires_grad`` like `embeddings`), with a warning.

    Used when a batch cannot form a single positive pair / triplet: training goes on, with zero
    gradients, instead of returning NaN (a mean over nothing) or crashing.
    """
    warnings.warn(f"{where}: {why}; the loss is 0 for this batch. Use a P x K batch sampler "
                  f"(e.g. rankdml.data.PKSampler) so that every class has at least two samples.",
                  RuntimeWarning, stacklevel=3)
    return (embeddings * 0.0).sum()


def masked_logsumexp(x: torch.Tensor, mask: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """:math:`\\log \\sum_{j: mask_j} e^{x_j}` along `dim`, stable (the masked maximum is subtracted).

    Rows with an empty mask give -inf. Entries outside the mask never reach `exp`, so they cannot
    overflow and get zero gradient.
    """
    x = x.masked_fill(~mask, float("-inf"))
    row_max = x.amax(dim=dim, keepdim=True).detach()
    row_max = torch.where(torch.isfinite(row_max), row_max, torch.zeros_like(row_max))
    return torch.log(torch.exp(x - row_max).sum(dim=dim)) + row_max.squeeze(dim)


def hinge(x: torch.Tensor, soft: bool = False) -> torch.Tensor:
    """:math:`[x]_+` or, with `soft`, the soft-plus :math:`\\log(1 + e^x)`."""
    return torch.nn.functional.softplus(x) if soft else torch.relu(x)
