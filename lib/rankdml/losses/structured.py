"""Structured losses over the whole batch: lifted structure, N-pairs and angular."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from rankdml._checks import check_embeddings_labels
from rankdml.distances import pairwise_distances
from rankdml.losses.functional import masked_logsumexp, zero_loss
from rankdml.masks import negative_mask, positive_mask, two_per_class

__all__ = ["LiftedStructureLoss", "NPairsLoss", "AngularLoss"]


def _no_indices(indices, where: str) -> None:
    if indices is not None:
        raise ValueError(f"{where} uses the whole batch structure and takes no mined indices; "
                         f"miners go with ContrastiveLoss, TripletLoss and MarginLoss")


class LiftedStructureLoss(nn.Module):
    """Lifted structured loss (Song et al. 2016): each positive pair against all negatives of both its ends.

    .. math::
        J_{ij} = \\log\\Big(\\sum_{k \\in \\mathcal{N}_i} e^{m - D_{ik}}
                 + \\sum_{l \\in \\mathcal{N}_j} e^{m - D_{jl}}\\Big) + D_{ij},
        \\qquad
        L = \\frac{1}{2|\\hat{\\mathcal{P}}|} \\sum_{\\{i,j\\} \\in \\hat{\\mathcal{P}}} [J_{ij}]_+^2

    where :math:`D` is the Euclidean distance, :math:`m` the margin, :math:`\\mathcal{N}_i` the
    items with a label different from i's and :math:`\\hat{\\mathcal{P}}` the unordered positive
    pairs. The log-sum-exp is computed per row with the masked maximum subtracted
    (:func:`rankdml.losses.functional.masked_logsumexp`) and the two rows are combined with
    ``logaddexp``, so no exponential overflows.

    With ``smooth=True``, the generalised, smooth form of Hermans et al. (2017) instead:

    .. math::
        L = \\frac{1}{|\\mathcal{A}|} \\sum_{a \\in \\mathcal{A}} \\Big[\\log \\sum_{p \\in \\mathcal{P}_a} e^{D_{ap}}
            + \\log \\sum_{n \\in \\mathcal{N}_a} e^{m - D_{an}}\\Big]_+

    over the anchors :math:`\\mathcal{A}` that have a positive (:math:`\\mathcal{P}_a`: a's positives).

    Args:
        margin: :math:`m` (the paper's :math:`\\alpha`). Default 1.0 (paper, tf_retrieval_baseline).
        smooth: use the generalised smooth form above. Default False (paper's form).

    Shape:
        embeddings (B, D), labels (B,) -> scalar; (B, B) memory. Reduction: as in the formulas
        (equal to TF's 0.25 x sum over ordered pairs / (#ordered / 2)). A batch without a positive
        pair (all labels distinct) gives 0 (connected to the graph) and a warning; a single-class
        batch raises ValueError. Mined ``indices`` are refused (ValueError).

    Notes:
        - The paper builds batches by importance sampling of neighbouring hard classes; TF and
          tf_retrieval_baseline (and here) use plain P x K batches. Not a flag: a sampler's job.
        - tf_retrieval_baseline runs it on unnormalised embeddings with m = 1 (the defaults here).

    References:
        Song, Xiang, Jegelka, Savarese, "Deep Metric Learning via Lifted Structured Feature
        Embedding", CVPR 2016 (song2016lifted); Hermans, Beyer, Leibe 2017 (hermans2017defense).
    """

    def __init__(self, *, margin: float = 1.0, smooth: bool = False):
        super().__init__()
        self.margin, self.smooth = margin, smooth

    def extra_repr(self) -> str:
        return f"margin={self.margin}, smooth={self.smooth}"

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor, indices=None) -> torch.Tensor:
        check_embeddings_labels(embeddings, labels, min_classes=2, where="LiftedStructureLoss")
        _no_indices(indices, "LiftedStructureLoss")
        dist = pairwise_distances(embeddings)  # (B, B)
        pos, neg = positive_mask(labels), negative_mask(labels)  # (B, B)
        if not pos.any():
            return zero_loss(embeddings, "LiftedStructureLoss", "no positive pair in the batch (all labels distinct)")
        neg_lse = masked_logsumexp(self.margin - dist, neg, dim=1)  # (B,) log sum_k exp(m - D_ik)
        if self.smooth:
            has_pos = pos.any(1)  # (B,)
            pos_lse = masked_logsumexp(dist[has_pos], pos[has_pos], dim=1)  # (A,)
            return torch.relu(pos_lse + neg_lse[has_pos]).mean()
        J = torch.logaddexp(neg_lse[:, None], neg_lse[None, :]) + dist  # (B, B)
        return (torch.relu(J[pos]) ** 2).sum() / (2 * pos.sum())


def _pairs(embeddings, labels, where):
    """Anchors and positives (N, D) of an N-pair batch, from the labels (first/second occurrence)."""
    a, p = two_per_class(labels, where=where)
    return a, embeddings[a], embeddings[p]


def _l2_penalty(anchors: torch.Tensor, positives: torch.Tensor, l2_reg: float) -> torch.Tensor:
    """TF's N-pairs penalty :math:`\\tfrac{\\lambda}{4}(\\overline{\\|a\\|^2} + \\overline{\\|p\\|^2})`."""
    return 0.25 * l2_reg * ((anchors ** 2).sum(1).mean() + (positives ** 2).sum(1).mean())


class NPairsLoss(nn.Module):
    """Multi-class N-pair loss (Sohn 2016): softmax over one positive and N-1 other classes' positives.

    .. math::
        L = \\frac{1}{N} \\sum_{i=1}^{N} \\log\\Big(1 + \\sum_{j \\ne i} e^{f_i^\\top f_j^+ - f_i^\\top f_i^+}\\Big)
            + \\frac{\\lambda}{4}\\Big(\\frac{1}{N}\\sum_i \\|f_i\\|^2 + \\frac{1}{N}\\sum_i \\|f_i^+\\|^2\\Big)

    for N pairs :math:`(f_i, f_i^+)` of N distinct classes: the anchor :math:`f_i` is the first
    sample of class i in the batch and :math:`f_i^+` the second (any batch order). The first term
    is the softmax cross-entropy of the logits :math:`S = F F^{+\\top}` with targets on the diagonal;
    the embeddings are *not* normalised (inner products).

    Args:
        l2_reg: :math:`\\lambda`, weight of the L2 penalty on the embeddings. Default 0.002 (TF's
            ``npairs_loss``, tf_retrieval_baseline; the paper regularises the embedding norms too).

    Shape:
        embeddings (B, D), labels (B,) -> scalar, with B = 2N: exactly two samples per class
        (ValueError otherwise: use PKSampler with samples_per_class=2). The order of the classes in
        the batch does not matter; which sample of a class comes first (the anchor) does, the loss
        being asymmetric in :math:`(f_i, f_i^+)`. A batch without any pair (all labels distinct) gives 0 (connected to the graph) and a warning; a single-class batch
        raises ValueError. Mined ``indices`` are refused (ValueError).

    Notes:
        - TF and tf_retrieval_baseline take pairs from consecutive positions (batch_k = 2, asserted);
          here pairs come from the labels, which gives the same pairs for that layout.

    References:
        Sohn, "Improved Deep Metric Learning with Multi-class N-pair Loss Objective", NeurIPS 2016
        (sohn2016npair).
    """

    def __init__(self, *, l2_reg: float = 0.002):
        super().__init__()
        self.l2_reg = l2_reg

    def extra_repr(self) -> str:
        return f"l2_reg={self.l2_reg}"

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor, indices=None) -> torch.Tensor:
        check_embeddings_labels(embeddings, labels, min_classes=2, where="NPairsLoss")
        _no_indices(indices, "NPairsLoss")
        idx, anchors, positives = _pairs(embeddings, labels, "NPairsLoss")
        if idx.numel() == 0:
            return zero_loss(embeddings, "NPairsLoss", "no class with two samples (all labels distinct)")
        logits = anchors @ positives.T  # (N, N)
        targets = torch.arange(logits.shape[0], device=logits.device)
        return F.cross_entropy(logits, targets) + _l2_penalty(anchors, positives, self.l2_reg)


class AngularLoss(nn.Module):
    """Angular loss (Wang et al. 2017), N-pair form, alone or added to the N-pair loss.

    .. math::
        L_{ang} = \\frac{1}{N} \\sum_{i=1}^{N} \\log\\Big(1 + \\sum_{j \\ne i}
            e^{\\,4 \\tan^2\\alpha\\, (x_i + x_i^+)^\\top x_j^+ \\;-\\; 2 (1 + \\tan^2\\alpha)\\, x_i^\\top x_i^+}\\Big)

    for N pairs :math:`(x_i, x_i^+)` of distinct classes (anchor = first sample of the class in
    the batch, positive = second); the negatives of pair i are the other pairs' positives
    :math:`x_j^+`. This is the smooth N-pair version of the triplet form
    :math:`[\\|x_a - x_p\\|^2 - 4\\tan^2\\alpha\\, \\|x_n - x_c\\|^2]_+`, :math:`x_c = (x_a + x_p)/2`.
    The loss is

    .. math::
        L = L_{ang} + R \\quad\\text{or, with } combine\\_npairs\\text{:}\\quad
        L = L_{npair} + \\lambda_{ang} L_{ang} + R

    with :math:`L_{npair}` the N-pair loss (:class:`NPairsLoss` without its penalty) and :math:`R` the
    N-pairs L2 penalty :math:`\\tfrac{\\lambda}{4}(\\overline{\\|x\\|^2} + \\overline{\\|x^+\\|^2})`.

    Args:
        alpha_degrees: :math:`\\alpha` in degrees. Default 45 (tf_retrieval_baseline; the paper
            reports good values between 36 and 55).
        combine_npairs: add the N-pair loss (the paper's best objective). Default False (the angular
            term alone, as tf_retrieval_baseline).
        angular_weight: :math:`\\lambda_{ang}`, weight of the angular term when combined. Default 2 (paper).
        l2_reg: :math:`\\lambda` of the L2 penalty. Default 0.002 (tf_retrieval_baseline, ``with_l2reg``).

    Shape:
        embeddings (B, D), L2-normalised (the paper normalises; tf_retrieval_baseline does it in the
        head and this loss does not), labels (B,) -> scalar, with exactly two samples per class
        (ValueError otherwise: use PKSampler with samples_per_class=2). A batch without any pair
        gives 0 (connected to the graph) and a warning. Mined ``indices`` are refused (ValueError).

    Notes:
        - tf_retrieval_baseline uses the angular term alone: ``combine_npairs=False`` (default); the
          paper's best is N-pair + 2 x angular: ``combine_npairs=True, angular_weight=2``.
        - tf_retrieval_baseline takes pairs from consecutive positions; here from the labels.

    References:
        Wang, Zhou, Wen, Liu, Lin, "Deep Metric Learning with Angular Loss", ICCV 2017 (wang2017angular).
    """

    def __init__(self, *, alpha_degrees: float = 45.0, combine_npairs: bool = False,
                 angular_weight: float = 2.0, l2_reg: float = 0.002):
        super().__init__()
        self.alpha_degrees, self.combine_npairs = alpha_degrees, combine_npairs
        self.angular_weight, self.l2_reg = angular_weight, l2_reg

    def extra_repr(self) -> str:
        return (f"alpha_degrees={self.alpha_degrees}, combine_npairs={self.combine_npairs}, "
                f"angular_weight={self.angular_weight}, l2_reg={self.l2_reg}")

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor, indices=None) -> torch.Tensor:
        check_embeddings_labels(embeddings, labels, min_classes=2, where="AngularLoss")
        _no_indices(indices, "AngularLoss")
        idx, anchors, positives = _pairs(embeddings, labels, "AngularLoss")
        if idx.numel() == 0:
            return zero_loss(embeddings, "AngularLoss", "no class with two samples (all labels distinct)")
        t = math.tan(math.radians(self.alpha_degrees)) ** 2
        n = anchors.shape[0]
        eye = torch.eye(n, dtype=torch.bool, device=embeddings.device)
        targets = torch.arange(n, device=embeddings.device)
        off = 4.0 * t * (anchors + positives) @ positives.T  # (N, N), used off the diagonal
        diag = 2.0 * (1.0 + t) * (anchors * positives).sum(1)  # (N,)
        logits = torch.where(eye, diag[:, None], off)  # (N, N): CE = log(1 + sum_j exp(f_ij))
        loss = F.cross_entropy(logits, targets)
        if self.combine_npairs:
            loss = F.cross_entropy(anchors @ positives.T, targets) + self.angular_weight * loss
        return loss + _l2_penalty(anchors, positives, self.l2_reg)
