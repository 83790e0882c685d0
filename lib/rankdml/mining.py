"""Miners: pick triplets (anchor_idx, pos_idx, neg_idx) from a batch.

Protocol (one for the whole library): a miner is a callable
``miner(embeddings, labels) -> (anchor_idx, pos_idx, neg_idx)`` returning three LongTensors of
the same length. It never builds a graph (selection runs under ``torch.no_grad``). The
triplet- and pair-based losses take the result in their forward::

    loss = TripletLoss(margin=0.2)
    value = loss(embeddings, labels, indices=SemiHardMiner()(embeddings, labels))

:class:`~rankdml.losses.ContrastiveLoss` and :class:`~rankdml.losses.MarginLoss` turn each triplet
into one positive pair (a, p) and one negative pair (a, n) (:func:`rankdml.masks.triplets_to_pairs`).

The selection rules are also available as functions of a distance matrix
(:func:`batch_hard_triplets`, :func:`semi_hard_triplets`), which the losses call on their own
distances so that ``TripletLoss(mining="semi_hard")`` and ``SemiHardMiner`` agree exactly.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from rankdml._checks import check_embeddings_labels
from rankdml.distances import pairwise_distances
from rankdml.masks import negative_mask, positive_mask, positive_pairs

__all__ = ["batch_hard_triplets", "semi_hard_triplets", "BatchHardMiner", "SemiHardMiner",
           "DistanceWeightedSampler"]


def batch_hard_triplets(dist: torch.Tensor, labels: torch.Tensor):
    """Per anchor, its hardest (farthest) positive and hardest (closest) negative (Hermans et al. 2017).

    `dist` is a (B, B) distance matrix (squared or not: the choice is the same). Anchors without a
    positive are skipped. Ties go to the lowest index. Returns `(anchor_idx, pos_idx, neg_idx)`.
    """
    dist = dist.detach()
    pos, neg = positive_mask(labels), negative_mask(labels)  # (B, B)
    hardest_pos = dist.masked_fill(~pos, float("-inf")).argmax(1)  # (B,)
    hardest_neg = dist.masked_fill(~neg, float("inf")).argmin(1)  # (B,)
    anchors = torch.nonzero(pos.any(1) & neg.any(1), as_tuple=True)[0]
    return anchors, hardest_pos[anchors], hardest_neg[anchors]


def semi_hard_triplets(dist: torch.Tensor, labels: torch.Tensor):
    """FaceNet semi-hard negatives with TensorFlow's semantics, one triplet per positive pair.

    For every ordered positive pair (a, p): the closest negative farther than the positive,
    :math:`n^* = \\arg\\min_{n: D_{an} > D_{ap}} D_{an}`; when no negative is farther than the
    positive, the *farthest* negative of a. (FaceNet's extra condition :math:`D_{an} < D_{ap} + m`
    is not applied: such negatives give a zero hinge anyway.) Ties go to the lowest index.
    """
    dist = dist.detach()
    a, p = positive_pairs(labels)  # (P,)
    d_ap = dist[a, p][:, None]  # (P, 1)
    d_an = dist[a]  # (P, B)
    neg = negative_mask(labels)[a]  # (P, B)
    outside = neg & (d_an > d_ap)  # (P, B) negatives beyond the positive
    closest_outside = d_an.masked_fill(~outside, float("inf")).argmin(1)  # (P,)
    farthest = d_an.masked_fill(~neg, float("-inf")).argmax(1)  # (P,)
    n = torch.where(outside.any(1), closest_outside, farthest)
    keep = neg.any(1)
    return a[keep], p[keep], n[keep]


class _DistanceMiner:
    """Shared body: distances of the (optionally L2-normalised) detached embeddings -> a selection rule."""

    rule = staticmethod(batch_hard_triplets)

    def __init__(self, *, normalize: bool = False):
        self.normalize = normalize

    @torch.no_grad()
    def __call__(self, embeddings: torch.Tensor, labels: torch.Tensor):
        check_embeddings_labels(embeddings, labels, where=type(self).__name__)
        x = embeddings.detach()
        if self.normalize:
            x = F.normalize(x, dim=1)
        return self.rule(pairwise_distances(x), labels)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(normalize={self.normalize})"


class BatchHardMiner(_DistanceMiner):
    """Batch-hard mining (Hermans et al. 2017): one triplet per anchor, hardest positive and negative.

    Args:
        normalize: L2-normalise the embeddings before computing distances. Default False.

    Returns (on call) `(anchor_idx, pos_idx, neg_idx)`, one entry per anchor that has a positive.
    See :func:`batch_hard_triplets`.
    """

    rule = staticmethod(batch_hard_triplets)


class SemiHardMiner(_DistanceMiner):
    """Semi-hard mining (Schroff et al. 2015, TensorFlow semantics): one triplet per positive pair.

    Args:
        normalize: L2-normalise the embeddings before computing distances. Default False.

    See :func:`semi_hard_triplets` for the rule and its fallback to the farthest negative. The choice
    does not depend on whether distances are squared.
    """

    rule = staticmethod(semi_hard_triplets)


class DistanceWeightedSampler:
    """Distance-weighted negative sampling (Wu et al. 2017): negatives drawn with probability ∝ 1/q(d).

    On the unit sphere in :math:`n` dimensions, the distance between two uniform points has density

    .. math::
        q(d) \\propto d^{\\,n-2} \\left(1 - \\tfrac{d^2}{4}\\right)^{(n-3)/2},

    so weighting the negatives of anchor :math:`a` by

    .. math::
        w_{an} \\propto \\frac{1}{q(\\max(d_{an}, c))} \\,[y_n \\ne y_a]\\,[d_{an} < c_{nz}]

    spreads the sampled distances evenly. The weights are computed as
    :math:`\\log w = -(n-2)\\log d - \\tfrac{n-3}{2}\\log(1 - d^2/4)`, minus the row maximum, then
    exponentiated and normalised per row.

    Args:
        cutoff: :math:`c`, lower clamp of the distance (bounds the weights; "avoids high variance").
            Default 0.5 (Wu et al.).
        nonzero_loss_cutoff: :math:`c_{nz}`, negatives at :math:`d \\ge c_{nz}` get weight 0 (they
            give zero margin loss, :math:`c_{nz} = \\beta + \\alpha`). Default 1.4 (Wu et al.).
        num_negatives: negatives per anchor. ``None`` (default, as the reference code): as many as
            the anchor has positives, :math:`K_a - 1`, and triplet j pairs the j-th positive with
            the j-th negative. An int m: m negatives per anchor, the anchor's positives cycled.
        seed: reproducible draws from a generator that the sampler creates, seeded with `seed`, on the
            device of the first batch it sees (so it works on CUDA as on the CPU). Default None.
        generator: or an explicit ``torch.Generator``; best on the embeddings' device. One on another
            device (a CPU generator with CUDA embeddings) still works: the draw is made on the
            generator's device and the indices are moved to the embeddings' device.
            Neither `seed` nor `generator`: torch's global generator of the embeddings' device.

    Returns (on call) `(anchor_idx, pos_idx, neg_idx)`. Negatives are drawn with replacement, as in
    the reference code (``np.random.choice``). Only anchors with at least one positive get triplets.

    Shape:
        embeddings (B, D), L2-normalised (the density is the unit sphere's; D = n); labels (B,).

    Notes:
        - ``state_dict()`` / ``load_state_dict()`` save and restore the generator, so a training
          checkpoint (`rankdml.checkpoint`) resumes the same draws.
        - Fallback: a row whose negatives are all at :math:`d \\ge c_{nz}` has no admissible
          negative; it samples uniformly over the anchor's negatives (the MXNet code falls back to
          uniform over the *whole* batch, positives included). Needs at least two classes.
        - The PADS copy drops the 1.4 cut-off (set ``nonzero_loss_cutoff=float("inf")``); the
          weight of :math:`d \\to 2` then explodes. Here d is clamped below 2 - 1e-6 inside the log.

    References:
        Wu, Manmatha, Smola, Krähenbühl, "Sampling Matters in Deep Embedding Learning", ICCV 2017
        (wu2017sampling).
    """

    def __init__(self, *, cutoff: float = 0.5, nonzero_loss_cutoff: float = 1.4,
                 num_negatives: int | None = None, seed: int | None = None,
                 generator: torch.Generator | None = None):
        if num_negatives is not None and num_negatives < 1:
            raise ValueError(f"num_negatives must be None or a positive int, got {num_negatives}")
        if seed is not None and generator is not None:
            raise ValueError("DistanceWeightedSampler: pass either seed or generator, not both")
        self.cutoff = cutoff
        self.nonzero_loss_cutoff = nonzero_loss_cutoff
        self.num_negatives = num_negatives
        self.seed = seed
        self.generator = generator

    def _generator_for(self, device: torch.device) -> torch.Generator | None:
        if self.generator is None and self.seed is not None:
            # created lazily: the data's device is known only at the first call
            self.generator = torch.Generator(device=device).manual_seed(self.seed)
        return self.generator

    def state_dict(self) -> dict:
        """The generator's state (None when the global generator is used), for checkpoints."""
        if self.generator is None:
            return {"generator": None, "device": None}
        return {"generator": self.generator.get_state(), "device": str(self.generator.device)}

    def load_state_dict(self, state: dict) -> None:
        if state["generator"] is None:
            return
        if self.generator is None:
            self.generator = torch.Generator(device=state["device"])
        elif str(self.generator.device) != state["device"]:
            raise ValueError(f"DistanceWeightedSampler: the saved generator lived on {state['device']}, this "
                             f"one on {self.generator.device}; create the sampler with seed= to let it follow")
        self.generator.set_state(state["generator"])

    def __repr__(self) -> str:
        return (f"DistanceWeightedSampler(cutoff={self.cutoff}, nonzero_loss_cutoff={self.nonzero_loss_cutoff}, "
                f"num_negatives={self.num_negatives}, seed={self.seed})")

    @torch.no_grad()
    def weights(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """(B, B) sampling probabilities of negatives per anchor (rows sum to 1), fallback included."""
        check_embeddings_labels(embeddings, labels, min_classes=2, where="DistanceWeightedSampler")
        x = embeddings.detach()
        n = x.shape[1]
        d = pairwise_distances(x)  # (B, B)
        neg = negative_mask(labels)  # (B, B)
        admissible = neg & (d < self.nonzero_loss_cutoff)  # (B, B)
        dc = d.clamp(min=self.cutoff, max=2.0 - 1e-6)
        log_w = -(n - 2.0) * torch.log(dc) - ((n - 3.0) / 2.0) * torch.log(1.0 - 0.25 * dc * dc)
        log_w = log_w.masked_fill(~admissible, float("-inf"))
        has_any = admissible.any(1, keepdim=True)  # (B, 1)
        row_max = log_w.max(1, keepdim=True).values.masked_fill(~has_any, 0.0)
        w = torch.exp(log_w - row_max)  # (B, B), 0 where not admissible
        w = torch.where(has_any, w, neg.to(w.dtype))  # fallback: uniform over the anchor's negatives
        return w / w.sum(1, keepdim=True)

    @torch.no_grad()
    def __call__(self, embeddings: torch.Tensor, labels: torch.Tensor):
        probs = self.weights(embeddings, labels)  # (B, B)
        a_pos, p_pos = positive_pairs(labels)  # sorted by anchor
        B = labels.shape[0]
        n_pos = torch.bincount(a_pos, minlength=B)  # (B,) positives per anchor
        anchors = torch.nonzero(n_pos > 0, as_tuple=True)[0]
        if anchors.numel() == 0:
            empty = labels.new_empty(0, dtype=torch.long)
            return empty, empty, empty
        per_anchor = n_pos[anchors] if self.num_negatives is None else torch.full_like(anchors, self.num_negatives)
        gen = self._generator_for(probs.device)
        on = gen.device if gen is not None else probs.device  # torch.multinomial needs both on one device
        draws = torch.multinomial(probs[anchors].to(on), int(per_anchor.max()), replacement=True,
                                  generator=gen).to(probs.device)  # (A, M)
        a = torch.repeat_interleave(anchors, per_anchor)  # (T,)
        row = torch.repeat_interleave(torch.arange(anchors.numel(), device=labels.device), per_anchor)
        start = torch.cumsum(per_anchor, 0) - per_anchor
        j = torch.arange(a.numel(), device=labels.device) - start[row]  # rank of the triplet within its anchor
        pos_start = torch.cumsum(n_pos, 0) - n_pos  # (B,) offset of each anchor's positives in p_pos
        p = p_pos[pos_start[a] + j % n_pos[a]]
        n = draws[row, j]
        return a, p, n
