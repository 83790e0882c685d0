"""Ranking losses for deep metric learning.

Every loss is an ``nn.Module`` called as ``loss(embeddings (B, D), labels (B,), indices=None) -> scalar``.
`indices` are mined triplets ``(anchor_idx, pos_idx, neg_idx)`` from :mod:`rankdml.mining`; the
pair- and triplet-based losses (contrastive, triplet, margin) use them, the structured ones
(lifted, npairs, angular) refuse them. Pick a loss by name with :func:`make_loss`.
"""
from __future__ import annotations

from rankdml.losses.classification import NormSoftmaxLoss
from rankdml.losses.cross_modal import HardNegativeTripletLoss, TwoViewLoss
from rankdml.losses.magnet import MagnetLoss
from rankdml.losses.margin import MarginLoss, param_groups
from rankdml.losses.pair import ContrastiveLoss
from rankdml.losses.repmet import RepMetLoss
from rankdml.losses.smooth_ap import SmoothAPLoss, TemperatureSchedule, smooth_ap_estimate
from rankdml.losses.structured import AngularLoss, LiftedStructureLoss, NPairsLoss
from rankdml.losses.triplet import TripletLoss
from rankdml.sodeep.losses import SoDeepAPLoss  # noqa: E402  (needs rankdml.losses.functional only)

LOSSES = {
    "contrastive": ContrastiveLoss,
    "triplet": TripletLoss,
    "lifted": LiftedStructureLoss,
    "npairs": NPairsLoss,
    "angular": AngularLoss,
    "margin": MarginLoss,
    "magnet": MagnetLoss,
    "smooth_ap": SmoothAPLoss,
    "sodeep_ap": SoDeepAPLoss,
}  # NormSoftmaxLoss (the classification baseline) and RepMetLoss need num_classes and embedding_dim: built directly


def make_loss(name: str, **kwargs):
    """Build the loss registered under `name` in :data:`LOSSES` with keyword hyper-parameters.

    >>> make_loss("triplet", margin=0.2, mining="semi_hard")
    TripletLoss(margin=0.2, mining='semi_hard', squared=True, normalize=False, soft=False, average_nonzero=False)
    """
    try:
        cls = LOSSES[name]
    except KeyError:
        raise ValueError(f"unknown loss {name!r}; choose one of: {', '.join(sorted(LOSSES))}") from None
    return cls(**kwargs)


__all__ = ["LOSSES", "make_loss", "param_groups", "ContrastiveLoss", "TripletLoss", "LiftedStructureLoss",
           "NPairsLoss", "AngularLoss", "MarginLoss", "NormSoftmaxLoss", "MagnetLoss", "RepMetLoss", "SoDeepAPLoss",
           "SmoothAPLoss", "TemperatureSchedule", "smooth_ap_estimate", "HardNegativeTripletLoss", "TwoViewLoss"]
