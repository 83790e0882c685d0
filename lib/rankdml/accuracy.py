"""The five classification accuracies of pytorch.repmet's ``evaluate.py`` (Magnet loss and RepMet).

1. :func:`batch_accuracy`: inside a batch, the nearest batch cluster mean is the item's own cluster.
2. :func:`simple_accuracy`: the class of the nearest centre (cluster centre or representative).
3. :func:`magnet_accuracy`: the Magnet paper's eq. 6 over the L nearest centres, with the running σ².
4. :func:`repmet_accuracy`: RepMet's rule over all representatives, with the σ used in training.
5. :func:`unsupervised_accuracy`: k-means with as many clusters as classes, then a one-to-one
   matching of clusters to classes (:func:`matching_accuracy`: Hungarian or greedy).

Every function returns the fraction of correctly classified items as a Python float. Distances
are squared Euclidean. Tensor inputs stay on their device (the unsupervised one clusters on the
CPU with faiss). Ties in an arg-max go to the lower centre index / smaller class label.
"""
from __future__ import annotations

import numpy as np
import torch

from rankdml._checks import check_embeddings_labels
from rankdml.distances import pairwise_squared_distances
from rankdml.losses.magnet import batch_cluster_means

__all__ = ["batch_accuracy", "simple_accuracy", "magnet_accuracy", "repmet_accuracy", "unsupervised_accuracy",
           "matching_accuracy", "class_scores"]


def _check_centres(embeddings, labels, centres, centre_labels, where):
    check_embeddings_labels(embeddings, labels, where=where)
    if centres.dim() != 2 or centres.shape[1] != embeddings.shape[1]:
        raise ValueError(f"{where}: expected centres of shape (M, {embeddings.shape[1]}), got {tuple(centres.shape)}")
    if centre_labels.shape != (centres.shape[0],):
        raise ValueError(f"{where}: expected one label per centre, shape ({centres.shape[0]},), "
                         f"got {tuple(centre_labels.shape)}")
    if not torch.isfinite(centres).all():
        raise ValueError(f"{where}: the centres contain NaN or inf")


def batch_accuracy(embeddings: torch.Tensor, clusters: torch.Tensor) -> float:
    """Fraction of items whose nearest batch cluster mean is the mean of their own cluster.

    `embeddings (B, D)`, `clusters (B,)` the cluster of each item (Magnet's batch accuracy; for
    RepMet the original uses the nearest representative, i.e. :func:`simple_accuracy` on the batch).
    """
    check_embeddings_labels(embeddings, clusters, where="batch_accuracy")
    means, own, _ = batch_cluster_means(embeddings.detach(), clusters)
    nearest = pairwise_squared_distances(embeddings.detach(), means).argmin(1)
    return float((nearest == own).double().mean())


def simple_accuracy(embeddings: torch.Tensor, labels: torch.Tensor, centres: torch.Tensor,
                    centre_labels: torch.Tensor) -> float:
    """Fraction of items whose nearest centre (`centres (M, D)` with `centre_labels (M,)`) has their label."""
    _check_centres(embeddings, labels, centres, centre_labels, "simple_accuracy")
    nearest = pairwise_squared_distances(embeddings.detach(), centres.detach().to(embeddings)).argmin(1)
    return float((centre_labels.to(labels.device)[nearest] == labels).double().mean())


def class_scores(embeddings: torch.Tensor, centres: torch.Tensor, centre_labels: torch.Tensor, variance: float,
                 *, nearest: int | None = None, normalize: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class scores :math:`\\sum_{\\mu \\in c} e^{-\\|r - \\mu\\|^2 / (2 v)}` over the `nearest` closest
    centres (all when None), divided by the sum over those centres if `normalize`.

    Returns ``(scores (B, C), classes (C,))``, classes sorted. Each row is shifted by its smallest
    distance before the exponential (a common factor: the arg-max and the normalised scores are
    unchanged), so far-away items do not underflow to all-zero scores.
    """
    sq = pairwise_squared_distances(embeddings.detach(), centres.detach().to(embeddings))  # (B, M)
    classes, centre_class = torch.unique(centre_labels.to(embeddings.device), return_inverse=True)
    keep = torch.ones_like(sq, dtype=torch.bool)
    if nearest is not None and nearest < sq.shape[1]:
        top = sq.topk(nearest, dim=1, largest=False).indices
        keep = torch.zeros_like(keep).scatter_(1, top, True)
    w = torch.exp(-(sq - sq.amin(1, keepdim=True)) / (2.0 * variance)) * keep  # (B, M)
    scores = w.new_zeros(sq.shape[0], classes.numel()).index_add_(1, centre_class, w)
    if normalize:
        scores = scores / scores.sum(1, keepdim=True)
    return scores, classes


def _argmax_accuracy(scores, classes, labels) -> float:
    return float((classes[scores.argmax(1)] == labels).double().mean())


def magnet_accuracy(embeddings: torch.Tensor, labels: torch.Tensor, centres: torch.Tensor,
                    centre_labels: torch.Tensor, variance: float, *, L: int = 128) -> float:
    """Magnet paper eq. 6: the class maximising :math:`\\sum_{\\mu \\in c} e^{-\\|r-\\mu\\|^2/(2\\sigma^2)}
    / \\sum_{\\mu} e^{-\\|r-\\mu\\|^2/(2\\sigma^2)}` over the `L` nearest cluster centres.

    `variance` is σ², the running variance of training: pass ``MagnetLoss.running_variance`` (with
    ``variance="squared"`` that buffer holds the running (σ̂²)², the scale training divided by, so
    prediction uses the same one). The original falls back to 0.5 when it has none. With K = 1 cluster per class and L ≥ 1 this is
    :func:`simple_accuracy` (the nearest centre always has the largest weight).
    """
    _check_centres(embeddings, labels, centres, centre_labels, "magnet_accuracy")
    if L < 1 or not variance > 0:
        raise ValueError(f"magnet_accuracy: need L >= 1 and variance > 0, got L={L}, variance={variance}")
    scores, classes = class_scores(embeddings, centres, centre_labels, float(variance), nearest=L)
    return _argmax_accuracy(scores, classes, labels.to(embeddings.device))


def repmet_accuracy(embeddings: torch.Tensor, labels: torch.Tensor, representatives: torch.Tensor,
                    representative_labels: torch.Tensor, sigma: float) -> float:
    """RepMet's rule: the class maximising :math:`\\sum_j e^{-\\|E - R_{ij}\\|^2 / (2\\sigma^2)}` over
    all its representatives (no cut-off; normalising would not change the arg-max).

    `sigma` is σ itself, the one used in training (``RepMetLoss.sigma``): the original passes 0.5
    as a *variance* here although training used σ = 0.5, i.e. a factor 1 instead of 2 in the
    exponent (irrelevant when K = 1).
    """
    _check_centres(embeddings, labels, representatives, representative_labels, "repmet_accuracy")
    if not sigma > 0:
        raise ValueError(f"repmet_accuracy: sigma must be > 0, got {sigma}")
    scores, classes = class_scores(embeddings, representatives, representative_labels, float(sigma) ** 2,
                                   normalize=False)
    return _argmax_accuracy(scores, classes, labels.to(embeddings.device))


def _contingency(cluster_ids: np.ndarray, labels: np.ndarray) -> np.ndarray:
    _, ci = np.unique(cluster_ids, return_inverse=True)
    _, li = np.unique(labels, return_inverse=True)
    table = np.zeros((ci.max() + 1, li.max() + 1), dtype=np.int64)
    np.add.at(table, (ci, li), 1)
    return table  # (clusters, classes) counts


def matching_accuracy(cluster_ids, labels, *, matching: str = "hungarian") -> float:
    """Accuracy of a clustering after matching clusters to classes one-to-one.

    ``"hungarian"``: the matching with the most correctly matched items
    (``scipy.optimize.linear_sum_assignment``; what the original code computes). ``"greedy"``
    (what its README describes): repeatedly match the (cluster, class) pair with the largest count
    among the unmatched ones (ties: lower cluster, then lower class). Unmatched clusters count as
    wrong. Returns matched items / N. Labels and cluster ids may be any integers.
    """
    cluster_ids = np.asarray(torch.as_tensor(cluster_ids).cpu()).reshape(-1)
    labels = np.asarray(torch.as_tensor(labels).cpu()).reshape(-1)
    if cluster_ids.shape != labels.shape or labels.size == 0:
        raise ValueError(f"matching_accuracy: expected cluster_ids and labels of the same shape (N,), got "
                         f"{cluster_ids.shape} and {labels.shape}")
    table = _contingency(cluster_ids, labels)
    if matching == "hungarian":
        from scipy.optimize import linear_sum_assignment

        rows, cols = linear_sum_assignment(table, maximize=True)
        matched = int(table[rows, cols].sum())
    elif matching == "greedy":
        work = table.astype(np.float64)
        matched = 0
        for _ in range(min(table.shape)):  # one match per round; a loop over clusters, not items
            r, c = np.unravel_index(np.argmax(work), work.shape)
            if work[r, c] < 0:
                break
            matched += int(table[r, c])
            work[r, :], work[:, c] = -1, -1
    else:
        raise ValueError(f"matching must be 'hungarian' or 'greedy', got {matching!r}")
    return matched / labels.size


def unsupervised_accuracy(embeddings: torch.Tensor, labels: torch.Tensor, *, matching: str = "hungarian",
                          seed: int = 0, niter: int = 35, nredo: int = 15) -> float:
    """k-means (faiss) with as many clusters as classes on `embeddings (N, D)`, then
    :func:`matching_accuracy`. Defaults follow the original (35 iterations, 15 restarts)."""
    from rankdml.metrics import kmeans_assign

    check_embeddings_labels(embeddings, labels, min_classes=2, where="unsupervised_accuracy")
    num_classes = int(torch.unique(labels).numel())
    ids = kmeans_assign(embeddings.detach().float().cpu().numpy(), num_classes, seed=seed, niter=niter, nredo=nredo)
    return matching_accuracy(ids, labels, matching=matching)
