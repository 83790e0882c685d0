"""Optimiser parameter groups: backbone, head and the loss's own parameters, each with its learning rate.

    opt = torch.optim.Adam(parameter_groups(model, loss, lr=1e-5, head_lr=5e-5, loss_lr=5e-4,
                                            loss_weight_decay=0.0))

Why per part: a pretrained backbone wants a small rate, a fresh head a larger one (the official
Smooth-AP code trains the last layer at 5x the backbone's rate), and parameters of the loss
(MarginLoss's β, RepMet's representatives, class proxies) often their own rate and no weight decay.
"""
from __future__ import annotations

from typing import Iterable

from torch import nn

__all__ = ["parameter_groups"]


def _head_parameters(model: nn.Module, head: str | nn.Module | Iterable[str] | None) -> list[nn.Parameter]:
    if head is None:
        return []
    names = [head] if isinstance(head, (str, nn.Module)) else list(head)
    params = []
    for name in names:
        if isinstance(name, nn.Module):
            part = name
            if not any(part is m for m in model.modules()):
                raise ValueError("head: the module given is not a sub-module of the model")
        else:
            try:
                part = model.get_submodule(name)
            except AttributeError as err:
                children = [n for n, _ in model.named_children()]
                raise ValueError(f"head: the model has no sub-module {name!r}; its children are {children}") from err
        params.extend(part.parameters())
    return params


def parameter_groups(model: nn.Module, loss: nn.Module | None = None, *, lr: float, weight_decay: float = 0.0,
                     head: str | nn.Module | Iterable[str] | None = None, head_lr: float | None = None,
                     head_weight_decay: float | None = None, loss_lr: float | None = None,
                     loss_weight_decay: float | None = None) -> list[dict]:
    """Parameter groups {"name", "params", "lr", "weight_decay"} for a torch optimiser.

    Args:
        model: its parameters form the "backbone" group (lr, weight_decay), except those of `head`.
        loss: its learnable parameters form the "loss" group (loss_lr, loss_weight_decay).
        head: the sub-module(s) of `model` trained as the "head": a name (``"head"`` for the
            models of `rankdml.models`), a dotted path, the module itself, or a list of those.
        head_lr, head_weight_decay, loss_lr, loss_weight_decay: None (default) = the backbone's value.

    Groups without parameters are left out, so a loss without parameters adds nothing. Each
    parameter is in exactly one group (a parameter shared by model and loss counts as the model's).
    """
    head_params = _head_parameters(model, head)
    if head is not None and not head_params:
        raise ValueError(f"head {head!r} has no parameters")
    head_ids = {id(p) for p in head_params}
    seen: set[int] = set()

    def take(params) -> list[nn.Parameter]:
        out = []
        for p in params:
            if p.requires_grad and id(p) not in seen:
                seen.add(id(p))
                out.append(p)
        return out

    backbone = take(p for p in model.parameters() if id(p) not in head_ids)
    heads = take(head_params)
    own = take(loss.parameters()) if loss is not None else []
    pick = lambda value, default: default if value is None else value  # noqa: E731
    groups = [
        {"name": "backbone", "params": backbone, "lr": lr, "weight_decay": weight_decay},
        {"name": "head", "params": heads, "lr": pick(head_lr, lr), "weight_decay": pick(head_weight_decay, weight_decay)},
        {"name": "loss", "params": own, "lr": pick(loss_lr, lr), "weight_decay": pick(loss_weight_decay, weight_decay)},
    ]
    return [g for g in groups if g["params"]]
