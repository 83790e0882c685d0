"""Input checks shared by losses, miners and metrics: each raises a ValueError that says what was expected."""
from __future__ import annotations

import torch


def check_embeddings_labels(embeddings: torch.Tensor, labels: torch.Tensor, *, min_classes: int = 1,
                            where: str = "", finite: bool = True) -> None:
    """Check `embeddings (B, D)` and `labels (B,)`: shapes, finiteness and the number of classes.

    ``finite=False`` leaves out the finiteness pass over the (B, D) embeddings, for a loss that checks
    its own scalar result instead (a NaN or inf embedding always reaches it) and calls
    :func:`check_finite_embeddings` only then, to say why.
    """
    who = f"{where}: " if where else ""
    if not isinstance(embeddings, torch.Tensor) or not isinstance(labels, torch.Tensor):
        raise ValueError(f"{who}expected torch tensors, got {type(embeddings).__name__} and {type(labels).__name__}")
    if embeddings.dim() != 2:
        raise ValueError(f"{who}expected embeddings of shape (B, D), got shape {tuple(embeddings.shape)}")
    if labels.dim() != 1:
        raise ValueError(f"{who}expected labels of shape (B,), got shape {tuple(labels.shape)}")
    if embeddings.shape[0] != labels.shape[0]:
        raise ValueError(f"{who}embeddings and labels disagree on the batch size: "
                         f"{embeddings.shape[0]} embeddings, {labels.shape[0]} labels")
    if embeddings.is_floating_point() is False:
        raise ValueError(f"{who}expected floating-point embeddings, got dtype {embeddings.dtype}")
    if labels.is_floating_point() or labels.is_complex():
        raise ValueError(f"{who}expected integer labels, got dtype {labels.dtype}")
    if finite:
        check_finite_embeddings(embeddings, where=where)
    if min_classes > 1 and torch.unique(labels).numel() < min_classes:
        raise ValueError(f"{who}expected at least {min_classes} distinct classes in the batch, "
                         f"got {torch.unique(labels).numel()}; use a P x K batch sampler with P >= {min_classes}")


def check_finite_embeddings(embeddings: torch.Tensor, *, where: str = "") -> None:
    """Raise ValueError if `embeddings` hold a NaN or an inf."""
    if not torch.isfinite(embeddings).all():
        who = f"{where}: " if where else ""
        raise ValueError(f"{who}embeddings contain NaN or inf; check the learning rate and the model's output")
