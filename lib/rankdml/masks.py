"""Label masks and index tuples, shared by the losses and the miners.

Everything is built from the labels, never from the batch layout: the batch may be in any order
and the classes may have unequal sizes. Conventions: a *positive pair* is an ordered pair (a, p)
with the same label and a != p; a *negative pair* (a, n) has different labels; a *triplet*
(a, p, n) is a positive pair and a negative pair sharing the anchor a. Index tuples are
LongTensors on the labels' device.

PADS's "self-regularised" triplets break these conventions on purpose (the anchor may be its own
positive, and a same-class item or the anchor itself may be the "negative"); a sampler that draws
them returns a :class:`SelfRegularisedTriplets`, and only then (or with
``allow_self_regularised=True``) does :func:`check_triplets` accept them.
"""
from __future__ import annotations

import torch


def same_label(labels: torch.Tensor, ref_labels: torch.Tensor | None = None) -> torch.Tensor:
    """(B, M) bool: ``labels[i] == ref_labels[j]`` (the diagonal is True when `ref_labels` is None)."""
    ref = labels if ref_labels is None else ref_labels
    return labels[:, None] == ref[None, :]


def positive_mask(labels: torch.Tensor) -> torch.Tensor:
    """(B, B) bool: same label and i != j."""
    eye = torch.eye(labels.shape[0], dtype=torch.bool, device=labels.device)
    return same_label(labels) & ~eye


def negative_mask(labels: torch.Tensor) -> torch.Tensor:
    """(B, B) bool: different labels."""
    return ~same_label(labels)


def triplet_mask(labels: torch.Tensor) -> torch.Tensor:
    """(B, B, B) bool: entry [a, p, n] is True for a valid triplet. Memory B^3: small batches only."""
    return positive_mask(labels)[:, :, None] & negative_mask(labels)[:, None, :]


def positive_pairs(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """All ordered positive pairs `(anchor_idx, pos_idx)`, sorted by anchor then positive."""
    a, p = torch.nonzero(positive_mask(labels), as_tuple=True)
    return a, p


def negative_pairs(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """All ordered negative pairs `(anchor_idx, neg_idx)`, sorted by anchor then negative."""
    a, n = torch.nonzero(negative_mask(labels), as_tuple=True)
    return a, n


def all_triplets(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """All valid triplets `(anchor_idx, pos_idx, neg_idx)`.

    Built as positive pairs x negatives of the anchor, a (P, B) mask with P = number of positive
    pairs (B(K-1) for P x K batches), never the (B, B, B) cube.
    """
    a, p = positive_pairs(labels)  # (P,), (P,)
    neg = negative_mask(labels)[a]  # (P, B)
    pair, n = torch.nonzero(neg, as_tuple=True)
    return a[pair], p[pair], n


def triplets_to_pairs(indices: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Triplets (a, p, n) -> pairs `(a, p, a, n)`: each triplet gives one positive and one negative pair.

    Pairs are not de-duplicated: a pair counts as many times as it appears in the triplets.
    """
    a, p, n = indices
    return a, p, a, n


class SelfRegularisedTriplets(tuple):
    """`(anchor_idx, pos_idx, neg_idx)` marked as self-regularised: the anchor may be its own positive and
    a same-class item or the anchor itself may be the negative (PADS). `check_triplets` accepts them."""

    __slots__ = ()


def check_triplets(indices, labels: torch.Tensor, where: str = "", *, allow_self_regularised: bool | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Validate mined `indices = (anchor_idx, pos_idx, neg_idx)` against the labels; return them as LongTensors.

    Raises ValueError if the tuple does not have three 1-D integer tensors of the same length, if an
    index is out of range, or if a positive has another label than its anchor (or is the anchor),
    or a negative has the anchor's label. Self-regularised triplets (positive = anchor, negative of
    the anchor's class) are accepted only when asked: ``allow_self_regularised=True``, or, when it is
    None (default), if `indices` is a :class:`SelfRegularisedTriplets`; a positive must still share
    its anchor's label.
    """
    who = f"{where}: " if where else ""
    if allow_self_regularised is None:
        allow_self_regularised = isinstance(indices, SelfRegularisedTriplets)
    if not isinstance(indices, (tuple, list)) or len(indices) != 3:
        raise ValueError(f"{who}indices must be a tuple (anchor_idx, pos_idx, neg_idx) of three LongTensors, "
                         f"as returned by the miners in rankdml.mining")
    a, p, n = (torch.as_tensor(t, device=labels.device) for t in indices)
    if any(t.dim() != 1 or t.dtype not in (torch.int64, torch.int32) for t in (a, p, n)):
        raise ValueError(f"{who}indices must be 1-D integer tensors")
    if not (a.shape == p.shape == n.shape):
        raise ValueError(f"{who}anchor_idx, pos_idx and neg_idx must have the same length, "
                         f"got {a.numel()}, {p.numel()}, {n.numel()}")
    a, p, n = a.long(), p.long(), n.long()
    B = labels.shape[0]
    if a.numel() and (torch.cat([a, p, n]).min() < 0 or torch.cat([a, p, n]).max() >= B):
        raise ValueError(f"{who}indices out of range for a batch of {B}")
    if allow_self_regularised:
        if a.numel() and not (labels[a] == labels[p]).all():
            raise ValueError(f"{who}every positive must share its anchor's label")
        return a, p, n
    hint = " (PADS-style self-regularised triplets must come as SelfRegularisedTriplets)"
    if a.numel() and not ((labels[a] == labels[p]) & (a != p)).all():
        raise ValueError(f"{who}every positive must share its anchor's label and differ from the anchor{hint}")
    if a.numel() and (labels[a] == labels[n]).any():
        raise ValueError(f"{who}every negative must have a label different from its anchor's{hint}")
    return a, p, n


def two_per_class(labels: torch.Tensor, where: str = "") -> tuple[torch.Tensor, torch.Tensor]:
    """One (anchor, positive) pair per class for N-pair batches: first and second occurrence of each label.

    Returns `(anchor_idx, pos_idx)`, both (N,), classes in increasing label order; the batch may be
    in any order. Raises ValueError unless every class has exactly two samples (N-pairs layout).
    Returns two empty tensors when every label is distinct (no pair at all), so the caller can warn.
    """
    who = f"{where}: " if where else ""
    sorted_labels, order = torch.sort(labels, stable=True)  # stable: first occurrence first
    _, counts = torch.unique_consecutive(sorted_labels, return_counts=True)
    if (counts == 1).all():
        empty = labels.new_empty(0, dtype=torch.long)
        return empty, empty
    if not (counts == 2).all():
        raise ValueError(f"{who}needs exactly two samples per class, got class sizes "
                         f"{sorted(set(counts.tolist()))}: use PKSampler with samples_per_class=2")
    return order[0::2], order[1::2]
