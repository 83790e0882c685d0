"""Triplet losses: all triplets, batch-hard and semi-hard mining."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from rankdml._checks import check_embeddings_labels
from rankdml.distances import pairwise_distances, pairwise_squared_distances
from rankdml.losses.functional import hinge, zero_loss
from rankdml.masks import check_triplets, negative_mask, positive_pairs
from rankdml.mining import batch_hard_triplets, semi_hard_triplets

__all__ = ["TripletLoss"]

MINING = ("all", "batch_hard", "semi_hard")


class TripletLoss(nn.Module):
    """Triplet margin loss with in-batch mining: all triplets, batch-hard or semi-hard.

    .. math::
        \\ell(a, p, n) = [D_{ap} - D_{an} + m]_+
        \\quad\\text{or, with } soft\\text{:}\\quad \\log\\left(1 + e^{D_{ap} - D_{an}}\\right),
        \\qquad L = \\frac{1}{|\\mathcal{T}|} \\sum_{(a,p,n) \\in \\mathcal{T}} \\ell(a, p, n)

    where :math:`D` is the Euclidean distance (squared with `squared`) between the (optionally
    L2-normalised) embeddings, :math:`m` the margin, and :math:`\\mathcal{T}` the triplets chosen by
    `mining` (anchor a, positive p with the same label, :math:`p \\ne a`, negative n with another label):

    * ``"all"``: every valid triplet of the batch ("batch all");
    * ``"batch_hard"`` (Hermans et al. 2017): per anchor, its farthest positive and closest negative;
    * ``"semi_hard"`` (Schroff et al. 2015, TensorFlow's definition): per ordered positive pair, the
      closest negative farther than the positive, or the farthest negative if there is none
      (:func:`rankdml.mining.semi_hard_triplets`).

    Args:
        margin: :math:`m`. Default 0.2 (FaceNet, tf_retrieval_baseline's semi-hard; Hermans et al.
            and tf_retrieval_baseline's batch-hard use 1.0 on unnormalised embeddings). Ignored with `soft`.
        mining: ``"all"`` (default), ``"batch_hard"`` or ``"semi_hard"``.
        squared: use :math:`D^2`. ``None`` (default): squared for ``"semi_hard"`` (FaceNet, TF),
            plain distance otherwise (Hermans et al.).
        normalize: L2-normalise the embeddings inside the loss. Default False (normalise in the head).
        soft: soft-plus instead of the hinge (Hermans et al.'s soft margin). Default False.
        average_nonzero: average over the triplets with a non-zero loss only (Hermans et al.'s
            "BA≠0"; 0 if there is none) instead of all triplets. Default False.

    Forward:
        ``loss(embeddings, labels, indices=None)``; with mined ``indices = (a, p, n)`` (see
        :mod:`rankdml.mining`) those triplets replace `mining`.

    Shape:
        embeddings (B, D), labels (B,) -> scalar. Reduction: mean over the triplets of
        :math:`\\mathcal{T}` (all: :math:`|\\mathcal{T}| = \\sum_a (K_a - 1)(B - K_a)`; batch-hard: one per
        anchor that has a positive; semi-hard: one per ordered positive pair). A batch without a
        positive pair (all labels distinct) gives 0 (connected to the graph) and a warning; a
        single-class batch raises ValueError. ``"all"`` works on (positive pairs x B) matrices,
        :math:`B^2 (K-1)` entries, never :math:`B^3`.

    Notes:
        - FaceNet keeps only negatives with :math:`D_{ap} < D_{an} < D_{ap} + m`; TF (and here) takes
          the closest negative beyond the positive and falls back to the farthest one: not a flag,
          those extra negatives give a zero hinge (the fallback ones do not).
        - tf_retrieval_baseline's distance is :math:`\\sqrt{D^2 + 10^{-12}}`; here the exact masked
          square root (gradient 0 at coincident points).
        - tf_retrieval_baseline's CLI default for batch-hard is the soft margin: ``soft=True``; its
          README runs use ``margin=1.0`` unnormalised (batch-hard) and ``margin=0.2, normalize=True``
          (semi-hard).

    References:
        Schroff, Kalenichenko, Philbin, "FaceNet", CVPR 2015 (schroff2015facenet);
        Hermans, Beyer, Leibe, "In Defense of the Triplet Loss for Person Re-Identification",
        arXiv 2017 (hermans2017defense).
    """

    def __init__(self, *, margin: float = 0.2, mining: str = "all", squared: bool | None = None,
                 normalize: bool = False, soft: bool = False, average_nonzero: bool = False):
        super().__init__()
        if mining not in MINING:
            raise ValueError(f"TripletLoss: unknown mining {mining!r}; choose one of {', '.join(MINING)}")
        self.margin, self.mining, self.normalize, self.soft = margin, mining, normalize, soft
        self.squared = (mining == "semi_hard") if squared is None else squared
        self.average_nonzero = average_nonzero

    def extra_repr(self) -> str:
        return (f"margin={self.margin}, mining={self.mining!r}, squared={self.squared}, normalize={self.normalize}, "
                f"soft={self.soft}, average_nonzero={self.average_nonzero}")

    def _reduce(self, losses: torch.Tensor, count: int) -> torch.Tensor:
        if self.average_nonzero:
            count = int((losses > 0).sum())
        return losses.sum() / max(count, 1)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor, indices=None) -> torch.Tensor:
        check_embeddings_labels(embeddings, labels, min_classes=2, where="TripletLoss")
        x = F.normalize(embeddings, dim=1) if self.normalize else embeddings
        dist = pairwise_squared_distances(x) if self.squared else pairwise_distances(x)  # (B, B)
        margin = 0.0 if self.soft else self.margin
        if indices is not None:
            a, p, n = check_triplets(indices, labels, "TripletLoss")
            if a.numel() == 0:
                return zero_loss(embeddings, "TripletLoss", "the miner returned no triplet")
        elif self.mining == "all":
            a, p = positive_pairs(labels)  # (P,)
            if a.numel() == 0:
                return zero_loss(embeddings, "TripletLoss", "no positive pair in the batch (all labels distinct)")
            neg = negative_mask(labels)[a]  # (P, B)
            losses = hinge(dist[a, p][:, None] - dist[a] + margin, self.soft)  # (P, B)
            losses = losses.masked_fill(~neg, 0.0)
            return self._reduce(losses, int(neg.sum()))
        else:
            rule = batch_hard_triplets if self.mining == "batch_hard" else semi_hard_triplets
            a, p, n = rule(dist, labels)
            if a.numel() == 0:
                return zero_loss(embeddings, "TripletLoss", "no positive pair in the batch (all labels distinct)")
        losses = hinge(dist[a, p] - dist[a, n] + margin, self.soft)  # (T,)
        return self._reduce(losses, a.numel())
