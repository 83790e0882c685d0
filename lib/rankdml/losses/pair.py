"""Pair-based losses: the contrastive loss."""
from __future__ import annotations

import torch
from torch import nn

from rankdml._checks import check_embeddings_labels
from rankdml.distances import pairwise_distances
from rankdml.losses.functional import zero_loss
from rankdml.masks import check_triplets, same_label, triplets_to_pairs

__all__ = ["ContrastiveLoss"]


class _AllPairsContrastive(torch.autograd.Function):
    """The all-pairs contrastive loss with its gradient written out, so that only one (B, B) matrix is kept.

    With :math:`S = D^2` (the norm expansion of :func:`rankdml.distances.pairwise_squared_distances`)
    and :math:`h_{ij}` the active hinge, the loss is :math:`c \\sum_{i \\ne j} h_{ij}^2` with
    :math:`c = \\text{scale} / (B(B-1))`, and

    .. math::
        G_{ij} = \\frac{\\partial L}{\\partial S_{ij}} = \\pm\\, c\\, \\frac{h_{ij}}{D_{ij}}
        \\quad (+ \\text{ same label}, - \\text{ otherwise}),
        \\qquad
        \\frac{\\partial L}{\\partial x} = 2\\,\\big(\\operatorname{diag}(A \\mathbf 1) - A\\big)\\, x,
        \\quad A = G + G^\\top .

    G is zero where autograd through the same formula gives zero: on the diagonal, where the
    expansion rounds below 0 (clamped), and where D = 0 under the masked square root. Autograd
    would keep about six (B, B) tensors and run two matrix products backwards; this keeps G alone
    and runs one.
    """

    @staticmethod
    def forward(ctx, x, same, pos_margin, neg_margin, scale, eps):
        b = x.shape[0]
        norms = (x * x).sum(1)  # (B,)
        raw = norms[:, None] + norms[None, :] - 2.0 * (x @ x.T)  # (B, B)
        kept = raw >= 0  # clamp_min's gradient mask
        sq = raw.clamp_min(0.0)
        sq.fill_diagonal_(0.0)
        if eps > 0:
            dist = (sq + eps).sqrt()
            inv = dist.reciprocal()
        else:
            positive = sq > 0
            dist = torch.where(positive, sq.clamp_min(torch.finfo(sq.dtype).tiny).sqrt(), torch.zeros_like(sq))
            inv = torch.where(positive, dist.reciprocal(), torch.zeros_like(sq))
        hinge = torch.where(same, dist - pos_margin, neg_margin - dist).clamp_min(0.0)  # (B, B)
        hinge.fill_diagonal_(0.0)  # i = i is not a pair (it costs 0 anyway unless m+ < 0 or eps > 0)
        loss = scale * hinge.square().sum() / (b * (b - 1))
        grad_sq = torch.where(same, hinge, -hinge).mul_(inv).mul_(kept).mul_(scale / (b * (b - 1)))  # G, diagonal 0
        ctx.save_for_backward(x, grad_sq)
        return loss

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_output):
        x, grad_sq = ctx.saved_tensors
        sym = grad_sq + grad_sq.T  # (B, B)
        grad_x = (sym.sum(1, keepdim=True) * x - sym @ x).mul_(2.0 * grad_output)  # (B, D)
        return grad_x, None, None, None, None, None


class ContrastiveLoss(nn.Module):
    """Contrastive loss (Hadsell, Chopra, LeCun 2006) over all pairs of the batch, with two margins.

    .. math::
        \\ell_{ij} = \\tfrac{1}{2}\\, y_{ij} \\,[D_{ij} - m_+]_+^2
                 + \\tfrac{1}{2}\\, (1 - y_{ij}) \\,[m_- - D_{ij}]_+^2,
        \\qquad
        L = \\frac{1}{|\\mathcal{P}| + |\\mathcal{N}|} \\sum_{(i,j) \\in \\mathcal{P} \\cup \\mathcal{N}} \\ell_{ij}

    where :math:`D_{ij} = \\|f_i - f_j\\|` is the Euclidean distance, :math:`y_{ij} = 1` for a
    pair with the same label and 0 otherwise, :math:`\\mathcal{P}` the ordered positive pairs
    (:math:`i \\ne j`) and :math:`\\mathcal{N}` the ordered negative pairs of the batch.
    With :math:`m_+ = 0` this is the paper's :math:`\\tfrac12 y D^2 + \\tfrac12 (1-y)[m - D]_+^2`.

    Args:
        pos_margin: :math:`m_+`, positive pairs closer than this cost nothing. Default 0 (paper).
        neg_margin: :math:`m_-` (the paper's :math:`m`), negative pairs farther than this cost
            nothing. Default 1.0 (tf_retrieval_baseline; the paper leaves m to the data).
        scale: factor in front of both terms. Default 0.5 (paper's ½).
        eps: smoothing inside the square root, :math:`D = \\sqrt{D^2 + \\epsilon}`; 0 (default) uses
            the exact masked square root (see :func:`rankdml.distances.pairwise_distances`); both
            keep the gradient finite when two embeddings coincide.

    Forward:
        ``loss(embeddings, labels, indices=None)``; `indices` = mined triplets (a, p, n) (see
        :mod:`rankdml.mining`): each gives the positive pair (a, p) and the negative pair (a, n),
        and the mean runs over these 2T pairs instead of all pairs.

    Shape:
        embeddings (B, D), labels (B,) -> scalar. Reduction: mean over all ordered pairs
        (positive and negative together, each unordered pair counted twice, which does not change
        the mean). A batch without a positive pair (all labels distinct) gives 0 (connected to the
        graph) and a warning; a single-class batch raises ValueError.

    Notes:
        - tf_retrieval_baseline drops the ½: ``scale=1.0``.
        - tf_retrieval_baseline uses :math:`\\sqrt{D^2 + 10^{-5}}`: ``eps=1e-5``.
        - tf_retrieval_baseline forms only 4 fixed pairs per 8 images (needs batch_k = 4); not
          reproduced as a flag: pass those pairs as ``indices``.

    References:
        Hadsell, Chopra, LeCun, "Dimensionality Reduction by Learning an Invariant Mapping",
        CVPR 2006 (hadsell2006dimensionality).
    """

    def __init__(self, *, pos_margin: float = 0.0, neg_margin: float = 1.0, scale: float = 0.5, eps: float = 0.0):
        super().__init__()
        self.pos_margin, self.neg_margin, self.scale, self.eps = pos_margin, neg_margin, scale, eps

    def extra_repr(self) -> str:
        return f"pos_margin={self.pos_margin}, neg_margin={self.neg_margin}, scale={self.scale}, eps={self.eps}"

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor, indices=None) -> torch.Tensor:
        check_embeddings_labels(embeddings, labels, min_classes=2, where="ContrastiveLoss")
        if indices is None:
            # Dense over the (B, B) matrix, no boolean indexing (its nonzero + gather, and the scatter
            # in the backward pass, cost more than the arithmetic at these sizes). Every ordered pair
            # i != j is positive or negative, so the mean is over B (B - 1) terms.
            same = same_label(labels)  # (B, B), diagonal included
            if int(same.sum()) == labels.shape[0]:
                return zero_loss(embeddings, "ContrastiveLoss", "no positive pair in the batch (all labels distinct)")
            return _AllPairsContrastive.apply(embeddings, same, self.pos_margin, self.neg_margin, self.scale, self.eps)
        else:
            a1, p, a2, n = triplets_to_pairs(check_triplets(indices, labels, "ContrastiveLoss"))
            if a1.numel() == 0:
                return zero_loss(embeddings, "ContrastiveLoss", "the miner returned no triplet")
            dist = pairwise_distances(embeddings, eps=self.eps)  # (B, B)
            pos_terms = torch.relu(dist[a1, p] - self.pos_margin) ** 2  # (T,)
            neg_terms = torch.relu(self.neg_margin - dist[a2, n]) ** 2  # (T,)
        total = pos_terms.sum() + neg_terms.sum()
        return self.scale * total / (pos_terms.numel() + neg_terms.numel())
