"""Margin loss with a learnable boundary β (Wu et al. 2017)."""
from __future__ import annotations

import torch
from torch import nn

from rankdml._checks import check_embeddings_labels
from rankdml.distances import pairwise_distances
from rankdml.losses.functional import zero_loss
from rankdml.masks import check_triplets, negative_pairs, positive_pairs, triplets_to_pairs

__all__ = ["MarginLoss", "param_groups"]


class MarginLoss(nn.Module):
    """Margin loss (Wu et al. 2017): pairs pushed to the right side of a learnable boundary β, with margin α.

    .. math::
        \\ell(i, j) = \\big[\\alpha + y_{ij} (D_{ij} - \\beta_{c(i)})\\big]_+,
        \\qquad
        L = \\frac{\\sum_{(i,j)} \\ell(i, j)}{\\max\\big(1, \\#\\{(i,j): \\ell(i,j) > 0\\}\\big)} + \\nu\\, \\overline{\\beta}

    where :math:`D_{ij} = \\sqrt{\\|f_i - f_j\\|^2 + \\epsilon}`, :math:`y_{ij} = +1` for a positive
    pair and :math:`-1` for a negative pair, :math:`\\beta_{c(i)}` the boundary of the anchor's class
    (or one global β), and :math:`\\overline{\\beta}` the mean of the β used by the pairs. The pairs
    are all ordered positive and negative pairs of the batch (``sampler=None``), or the positive pair
    (a, p) and negative pair (a, n) of each triplet drawn by `sampler` or passed as ``indices``.
    A sum of zero terms is 0: no division by zero.

    Args:
        margin: :math:`\\alpha`. Default 0.2 (paper).
        beta: initial :math:`\\beta`. Default 1.2 (paper).
        learn_beta: make β an ``nn.Parameter`` (else a buffer). Default True (paper). Give it its own
            learning rate with :func:`rankdml.optim.parameter_groups` (``loss_lr=``).
        num_classes: one β per training class, indexed by the anchor's label (labels must lie in
            [0, num_classes)); ``None`` (default): one global β.
        nu: :math:`\\nu`, weight of the β penalty. Default 0 (paper's experiments).
        sampler: a miner called on each batch, e.g. :class:`rankdml.mining.DistanceWeightedSampler`
            (the paper's distance-weighted sampling). ``None`` (default): all pairs, deterministic.
        eps: :math:`\\epsilon` inside the square root. Default 1e-8 (the MXNet and PADS code).

    Forward:
        ``loss(embeddings, labels, indices=None)``; mined ``indices = (a, p, n)`` override `sampler`.

    Shape:
        embeddings (B, D), L2-normalised (β = 1.2 assumes distances in [0, 2]), labels (B,) -> scalar.
        A batch without a positive pair (all labels distinct), or a sampler returning no triplet,
        gives 0 (connected to the graph) and a warning; a single-class batch raises ValueError.

    Notes:
        - The paper writes :math:`\\beta = \\beta^{(0)} + \\beta^{(class)} + \\beta^{(img)}`; the MXNet code
          and PADS use one β per class: ``num_classes=C``.
        - The MXNet code adds :math:`\\nu \\sum_t \\beta_t` *before* dividing by the count; here
          :math:`\\nu \\overline{\\beta}` is added after (same effect up to scale; ν = 0 in every run).
        - The MXNet code does not guard the division when no term is non-zero; PADS and here do.
        - PADS draws one positive and one negative per anchor: ``sampler=DistanceWeightedSampler(num_negatives=1)``
          (which takes the anchor's first positive rather than a random one), without the 1.4
          cut-off (``nonzero_loss_cutoff=float("inf")``).

    References:
        Wu, Manmatha, Smola, Krähenbühl, "Sampling Matters in Deep Embedding Learning", ICCV 2017
        (wu2017sampling).
    """

    def __init__(self, *, margin: float = 0.2, beta: float = 1.2, learn_beta: bool = True,
                 num_classes: int | None = None, nu: float = 0.0, sampler=None, eps: float = 1e-8):
        super().__init__()
        self.margin, self.nu, self.sampler, self.eps = margin, nu, sampler, eps
        self.num_classes = num_classes
        init = torch.full((num_classes if num_classes else 1,), float(beta))
        if learn_beta:
            self.beta = nn.Parameter(init)
        else:
            self.register_buffer("beta", init)

    def extra_repr(self) -> str:
        return (f"margin={self.margin}, beta_shape={tuple(self.beta.shape)}, nu={self.nu}, eps={self.eps}, "
                f"sampler={self.sampler!r}")

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor, indices=None) -> torch.Tensor:
        check_embeddings_labels(embeddings, labels, min_classes=2, where="MarginLoss")
        if self.num_classes and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise ValueError(f"MarginLoss: with num_classes={self.num_classes} (one β per class) labels must lie "
                             f"in [0, {self.num_classes}), got [{int(labels.min())}, {int(labels.max())}]")
        if indices is None and self.sampler is not None:
            indices = self.sampler(embeddings, labels)
        if indices is None:
            a1, p = positive_pairs(labels)
            a2, n = negative_pairs(labels)
            if a1.numel() == 0:
                return zero_loss(embeddings, "MarginLoss", "no positive pair in the batch (all labels distinct)")
        else:
            a1, p, a2, n = triplets_to_pairs(check_triplets(indices, labels, "MarginLoss"))
            if a1.numel() == 0:
                return zero_loss(embeddings, "MarginLoss", "the sampler or miner returned no triplet")
        dist = pairwise_distances(embeddings, eps=self.eps)  # (B, B)
        beta = self.beta.to(embeddings.dtype)
        beta_pos = beta[labels[a1]] if self.num_classes else beta.expand(a1.numel())  # (P,)
        beta_neg = beta[labels[a2]] if self.num_classes else beta.expand(a2.numel())  # (N,)
        pos_terms = torch.relu(self.margin + dist[a1, p] - beta_pos)  # (P,)
        neg_terms = torch.relu(self.margin - dist[a2, n] + beta_neg)  # (N,)
        count = int((pos_terms > 0).sum() + (neg_terms > 0).sum())
        loss = (pos_terms.sum() + neg_terms.sum()) / max(count, 1)
        if self.nu:
            loss = loss + self.nu * torch.cat([beta_pos, beta_neg]).mean()
        return loss


def param_groups(model: nn.Module, loss: nn.Module, *, lr: float, beta_lr: float,
                 weight_decay: float = 0.0) -> list[dict]:
    """Deprecated: use :func:`rankdml.optim.parameter_groups` (``loss_lr=beta_lr, loss_weight_decay=0.0``).

    Kept for old code: gives a learnable ``beta`` of `loss` the rate `beta_lr` and no weight decay;
    other parameters of `loss` (if any) keep `lr` and `weight_decay`, as before.
    """
    import warnings

    from rankdml.optim import parameter_groups

    warnings.warn("rankdml.losses.param_groups is deprecated; use rankdml.optim.parameter_groups(model, loss, "
                  "lr=..., loss_lr=..., loss_weight_decay=0.0)", DeprecationWarning, stacklevel=2)
    beta = getattr(loss, "beta", None)
    if not isinstance(beta, nn.Parameter):
        return parameter_groups(model, loss, lr=lr, weight_decay=weight_decay)
    others = nn.ParameterList([q for q in loss.parameters() if q is not beta])
    groups = parameter_groups(nn.ModuleList([model, others]), lr=lr, weight_decay=weight_decay)
    return groups + [{"name": "loss", "params": [beta], "lr": beta_lr, "weight_decay": 0.0}]
