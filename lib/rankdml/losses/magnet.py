"""Magnet loss (Rippel, Paluri, Dollár, Bourdev, ICLR 2016): each item against the cluster means of the batch."""
from __future__ import annotations

import torch
from torch import nn

from rankdml._checks import check_embeddings_labels
from rankdml.distances import pairwise_squared_distances
from rankdml.losses.functional import zero_loss

__all__ = ["MagnetLoss", "batch_cluster_means"]

VARIANCES = ("paper", "squared")
RUNNING = ("mean", "ema")


def batch_cluster_means(embeddings: torch.Tensor, clusters: torch.Tensor
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Means of the clusters present in a batch.

    Returns ``(means (M, D), own (B,), cluster_ids (M,))``: ``means[own[i]]`` is the mean of the
    batch items of item i's cluster, ``cluster_ids`` the M distinct values of `clusters (B,)`, sorted.
    """
    cluster_ids, own = torch.unique(clusters, return_inverse=True)
    sums = embeddings.new_zeros(cluster_ids.numel(), embeddings.shape[1]).index_add(0, own, embeddings)
    counts = torch.bincount(own, minlength=cluster_ids.numel()).to(embeddings.dtype)
    return sums / counts[:, None], own, cluster_ids


class MagnetLoss(nn.Module):
    """Magnet loss (Rippel et al. 2016): pull each item to its own cluster mean, push it from the means
    of the other classes' clusters, with the batch variance as the length scale.

    With the batch's M clusters, :math:`\\hat\\mu_m` the mean of the batch items of cluster m,
    :math:`N = B` items and

    .. math::
        \\hat\\sigma^2 = \\frac{1}{N - 1} \\sum_i \\|r_i - \\hat\\mu_{m(i)}\\|^2, \\qquad
        \\ell_i = \\Big[\\frac{\\|r_i - \\hat\\mu_{m(i)}\\|^2}{2v} + \\alpha
            + \\log \\sum_{m:\\, C(m) \\ne C(r_i)} e^{-\\|r_i - \\hat\\mu_m\\|^2 / (2v)}\\Big]_+, \\qquad
        L = \\frac{1}{N} \\sum_i \\ell_i,

    which is the paper's :math:`[-\\log(e^{-\\|r - \\hat\\mu\\|^2/(2\\sigma^2) - \\alpha} / \\sum e^{\\dots})]_+`
    computed with a log-sum-exp (no ``+ 1e-8`` inside the logarithms, unlike the original code).
    The variance term :math:`v` is :math:`\\hat\\sigma^2` (``variance="paper"``: the paper and
    pytorch.repmet at 32cbecc) or :math:`(\\hat\\sigma^2)^2` (``variance="squared"``: the
    TensorFlow port pumpikano/tf-magnet-loss and vithursant/MagnetLoss-PyTorch, which pytorch.repmet's
    HEAD copies). :math:`\\hat\\sigma^2` is not detached (as in every implementation).

    Args:
        alpha: the cluster separation gap α. Default 1.0 (paper).
        variance: ``"paper"`` or ``"squared"``, see above.
        index: a :class:`rankdml.clusters.ClusterIndex`; with it the loss finds the clusters of a
            batch from its dataset indices (``batch_indices``). ``None``: clusters must be passed.
        running: how the buffer ``running_variance`` (the σ² of prediction, paper eq. 6) follows the
            batches in training mode: ``"mean"`` (default), the true running mean of :math:`v`
            over all training batches; ``"ema"``, the original code's ``avg = (avg + v) / 2``.

    Forward (the contract with the training loop):
        ``loss(embeddings, labels, clusters=None, *, batch_indices=None)``.

        * ``clusters (B,)``: the cluster of each item (any integers; a cluster's items must share a
          label). Takes precedence.
        * else ``batch_indices (B,)``: dataset indices, looked up in `index`. The attribute
          ``needs_batch_indices`` is True when an index is attached: a training loop that sees it
          must call ``loss(embeddings, labels, batch_indices=...)`` with the batch's dataset indices.
        * neither, and no index: each class of the batch is one cluster (the Magnet loss with K = 1).

        After each call, ``item_losses (B,)`` holds the detached :math:`\\ell_i` (what
        :class:`rankdml.clusters.ClusterRefresh` feeds to the index for the sampler) and
        ``batch_variance`` the detached :math:`\\hat\\sigma^2`.

    Shape:
        embeddings (B, D), labels (B,) -> scalar. The batch needs at least two classes. A batch in
        which no cluster has two items (e.g. all labels distinct) has :math:`\\hat\\sigma^2 = 0`
        and gives 0 with a warning.

    References:
        Rippel, Paluri, Dollár, Bourdev, "Metric Learning with Adaptive Density Discrimination",
        ICLR 2016 (rippel2016magnet).
    """

    def __init__(self, *, alpha: float = 1.0, variance: str = "paper", index=None, running: str = "mean"):
        super().__init__()
        if variance not in VARIANCES:
            raise ValueError(f"variance must be one of {VARIANCES}, got {variance!r}")
        if running not in RUNNING:
            raise ValueError(f"running must be one of {RUNNING}, got {running!r}")
        self.alpha, self.variance, self.index, self.running = float(alpha), variance, index, running
        self.register_buffer("running_variance", torch.zeros((), dtype=torch.float64))
        self.register_buffer("num_batches", torch.zeros((), dtype=torch.long))
        self.item_losses: torch.Tensor | None = None
        self.batch_variance: torch.Tensor | None = None

    @property
    def needs_batch_indices(self) -> bool:
        return self.index is not None

    def extra_repr(self) -> str:
        return (f"alpha={self.alpha}, variance={self.variance!r}, running={self.running!r}, "
                f"index={self.index is not None}")

    def _clusters(self, labels, clusters, batch_indices) -> torch.Tensor:
        if clusters is not None:
            clusters = torch.as_tensor(clusters, device=labels.device)
            if clusters.shape != labels.shape or clusters.is_floating_point():
                raise ValueError(f"MagnetLoss: clusters must be integers of shape {tuple(labels.shape)} (one per "
                                 f"item), got dtype {clusters.dtype} and shape {tuple(clusters.shape)}")
            return clusters
        if batch_indices is not None:
            if self.index is None:
                raise ValueError("MagnetLoss: batch_indices given but no cluster index: build the loss with "
                                 "MagnetLoss(index=ClusterIndex(...)) or pass clusters=")
            if torch.as_tensor(batch_indices).shape != labels.shape:
                raise ValueError(f"MagnetLoss: batch_indices must have shape {tuple(labels.shape)}, "
                                 f"got {tuple(torch.as_tensor(batch_indices).shape)}")
            clusters = self.index.clusters_of(batch_indices).to(labels.device)
            if not torch.equal(self.index.cluster_labels.to(labels.device)[clusters], labels):
                raise ValueError("MagnetLoss: the labels disagree with the cluster index's labels at these "
                                 "batch_indices; the loader's dataset must be the one the index was built on")
            return clusters
        if self.index is not None:
            raise ValueError("MagnetLoss: this loss has a cluster index and needs batch_indices= (the dataset "
                             "index of every item) or clusters=; use a loader that yields batch indices")
        return labels

    def _update_running(self, v: torch.Tensor) -> None:
        v = v.detach().to(self.running_variance.dtype)
        n = self.num_batches
        if self.running == "mean" or n == 0:
            self.running_variance += (v - self.running_variance) / (n + 1)
        else:
            self.running_variance.copy_((self.running_variance + v) / 2)
        self.num_batches += 1

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor, clusters: torch.Tensor | None = None, *,
                batch_indices: torch.Tensor | None = None, indices=None) -> torch.Tensor:
        check_embeddings_labels(embeddings, labels, min_classes=2, where="MagnetLoss")
        if indices is not None:
            raise ValueError("MagnetLoss uses the batch's clusters and takes no mined indices; miners go with "
                             "ContrastiveLoss, TripletLoss and MarginLoss")
        clusters = self._clusters(labels, clusters, batch_indices)
        means, own, cluster_ids = batch_cluster_means(embeddings, clusters)
        # a cluster's items share one label: the cluster's label is any of its items' labels
        cluster_label = labels.new_empty(cluster_ids.numel()).scatter_(0, own, labels)
        if not torch.equal(cluster_label[own], labels):
            raise ValueError("MagnetLoss: a cluster holds items of different labels; each cluster must "
                             "lie inside one class")
        self.item_losses = embeddings.new_zeros(labels.shape[0]).detach()  # until the batch proves usable
        self.batch_variance = embeddings.new_zeros(()).detach()
        if torch.bincount(own).max() < 2:
            return zero_loss(embeddings, "MagnetLoss",
                             "no cluster has two items (all labels distinct, or one item per cluster), "
                             "so the batch variance is 0")
        # own distances from the differences, not the norm expansion: they are small (tight clusters)
        # where |x|^2 + |mu|^2 - 2 x.mu cancels catastrophically in float32
        own_sq = ((embeddings - means[own]) ** 2).sum(1)  # (B,)
        sq = pairwise_squared_distances(embeddings, means)  # (B, M), only other classes' entries are used
        sigma2 = own_sq.sum() / (labels.shape[0] - 1)
        if sigma2 <= 0:
            return zero_loss(embeddings, "MagnetLoss", "every item coincides with its cluster mean, so the batch "
                             "variance is 0")
        v = sigma2 if self.variance == "paper" else sigma2 * sigma2
        other = labels[:, None] != cluster_label[None, :]  # (B, M) clusters of another class
        # every row has an other-class cluster (>= 2 classes checked), so no row of the log-sum-exp is all -inf
        impostors = torch.logsumexp((-sq / (2 * v)).masked_fill(~other, float("-inf")), dim=1)
        terms = torch.relu(own_sq / (2 * v) + self.alpha + impostors)
        self.item_losses = terms.detach()
        self.batch_variance = sigma2.detach()
        if self.training:
            with torch.no_grad():
                self._update_running(v)
        return terms.mean()
