"""The cluster index of the Magnet loss: per-class k-means over the training set, and its refresh callback.

Rippel et al. (ICLR 2016) cluster every class into K clusters by k-means on the representations of
*all* its training examples, and refresh that index periodically during training (training pauses
to re-embed the training set). :class:`ClusterIndex` holds the index -- centres, each item's
cluster, each item's latest loss -- and :class:`ClusterRefresh` is the training-loop callback that
rebuilds it every N steps and feeds it the per-item losses of every batch. The Magnet sampler
(:class:`rankdml.data.MagnetSampler`) draws its neighbourhoods from the index, and
:class:`rankdml.losses.MagnetLoss` looks up the clusters of a batch in it.

Clusters are numbered class-major: cluster ``c * K + j`` is the j-th cluster of the c-th class in
increasing label order (``index.classes[c]``), as in the original code.

How the pieces fit together (the loop must pass ``batch_indices=`` to a loss whose
``needs_batch_indices`` is True, and expose the indices of the last batch as ``state.batch_indices``)::

    index = ClusterIndex(train.labels, k=3)
    loss = MagnetLoss(alpha=1.0, index=index)               # clusters looked up from batch indices
    sampler = MagnetSampler(index, M=12, D=4)               # batches drawn from the index, lazily
    refresh = ClusterRefresh(index, train_without_augmentation, every=50, sampler=sampler)
    # loader: DataLoader over `train` yielding (images, labels, indices), batch_sampler=sampler,
    # num_workers=0 (no prefetching ahead of a sampler that changes between steps); callbacks=[refresh]
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from rankdml.callbacks import Callback, TrainState
from rankdml.distances import pairwise_squared_distances

__all__ = ["ClusterIndex", "ClusterRefresh", "per_class_kmeans"]


def _faiss_kmeans(x: np.ndarray, k: int, *, seed: int, niter: int, nredo: int) -> np.ndarray:
    """faiss k-means on (n, D) float32 points; returns the (k, D) centroids. Settings explicit, no sub-sampling."""
    import faiss  # imported lazily: only the refresh needs it

    km = faiss.Kmeans(x.shape[1], k, niter=int(niter), nredo=int(nredo), seed=int(seed), verbose=False,
                      spherical=False, min_points_per_centroid=1, max_points_per_centroid=1 << 30)
    km.train(x)
    return km.centroids


def per_class_kmeans(embeddings: torch.Tensor, labels: torch.Tensor, k: int, *, seed: int = 0, niter: int = 20,
                     nredo: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """K clusters per class by k-means (faiss, seeded) on `embeddings (N, D)` with `labels (N,)`.

    Returns ``(centres (C*K, D), assignments (N,), classes (C,))`` on the device of `embeddings`:
    centres class-major (cluster ``c*K + j`` belongs to ``classes[c]``), each item assigned to the
    nearest centre *of its own class* (squared L2, ties to the lower index). With K = 1 the centre
    is the class mean, computed exactly (no k-means). k-means runs on the CPU in float32; faiss
    re-seeds empty clusters while it trains, but the final assignment may still leave a cluster
    empty (rare); the sampler never picks an empty cluster.

    Raises ValueError when a class has fewer than K items (k-means cannot make K clusters of it).
    """
    if embeddings.dim() != 2 or labels.dim() != 1 or embeddings.shape[0] != labels.shape[0]:
        raise ValueError(f"expected embeddings (N, D) and labels (N,), got shapes {tuple(embeddings.shape)} "
                         f"and {tuple(labels.shape)}")
    if k < 1:
        raise ValueError(f"k (clusters per class) must be >= 1, got {k}")
    if not torch.isfinite(embeddings).all():
        raise ValueError("per_class_kmeans: embeddings contain NaN or inf; check the model's output")
    classes, inverse, counts = torch.unique(labels, return_inverse=True, return_counts=True)
    if (counts < k).any():
        c = int(torch.argmin(counts))
        raise ValueError(f"k = {k} clusters per class, but class {int(classes[c])} has only {int(counts[c])} "
                         f"items ({int((counts < k).sum())} classes are smaller than k); lower k")
    dev, dim = embeddings.device, embeddings.shape[1]
    x = embeddings.detach().float()
    if k == 1:  # the class means, without a loop over classes
        sums = x.new_zeros(len(classes), dim).index_add_(0, inverse, x)
        return sums / counts[:, None].to(x.dtype), inverse.clone(), classes
    centres = torch.empty(len(classes) * k, dim, dtype=torch.float32, device=dev)
    assignments = torch.empty(labels.shape[0], dtype=torch.long, device=dev)
    # One k-means per class: a loop over classes (faiss has no batched k-means), not over items.
    order = torch.argsort(inverse, stable=True)
    for c, members in enumerate(torch.split(order, counts.tolist())):
        pts = x[members]  # (n_c, D)
        cent = torch.from_numpy(_faiss_kmeans(np.ascontiguousarray(pts.cpu().numpy()), k, seed=seed,
                                              niter=niter, nredo=nredo)).to(dev)
        centres[c * k:(c + 1) * k] = cent
        assignments[members] = c * k + torch.argmin(pairwise_squared_distances(pts, cent), dim=1)
    return centres, assignments, classes


class ClusterIndex:
    """Per-class k-means clusters of a training set, and the latest loss of every item.

    Args:
        labels: (N,) the class of every training item (e.g. ``dataset.labels``); the device of this
            tensor (or `device`) is where the whole state lives.
        k: clusters per class (K).
        seed, niter, nredo: faiss k-means settings (the original used scikit-learn, n_init=1, 20
            iterations).
        device: where to keep the state; default: the device of `labels`.

    State (all tensors, on `device`): ``centres (C*K, D)``, ``assignments (N,)`` (cluster of each
    item, -1 before :meth:`fit`), ``cluster_labels (C*K,)``, ``cluster_sizes (C*K,)``,
    ``item_losses (N,)`` and ``has_loss (N,)``. :meth:`state_dict` / :meth:`load_state_dict`
    carry it through a checkpoint.

    A cluster's loss is the mean latest loss of its items that have one (the original code's
    ``update_losses``, without its bug of taking an item whose loss is exactly 0 for "no loss").
    Per-item storage keeps the cluster losses meaningful across a refresh, when cluster ids change.
    """

    def __init__(self, labels, k: int, *, seed: int = 0, niter: int = 20, nredo: int = 1,
                 device: str | torch.device | None = None):
        labels = torch.as_tensor(labels)
        if labels.dim() != 1 or labels.numel() == 0 or labels.is_floating_point():
            raise ValueError(f"expected a non-empty 1-D integer tensor of labels, got shape {tuple(labels.shape)} "
                             f"and dtype {labels.dtype}")
        if k < 1:
            raise ValueError(f"k (clusters per class) must be >= 1, got {k}")
        self.device = torch.device(device) if device is not None else labels.device
        self.labels = labels.long().to(self.device)
        self.k, self.seed, self.niter, self.nredo = int(k), int(seed), int(niter), int(nredo)
        self.classes, counts = torch.unique(self.labels, return_counts=True)
        if (counts < k).any():
            c = int(torch.argmin(counts))
            raise ValueError(f"k = {k} clusters per class, but class {int(self.classes[c])} has only "
                             f"{int(counts[c])} items; lower k")
        self.class_sizes = counts
        n, self.num_clusters = self.labels.numel(), len(self.classes) * self.k
        self.cluster_labels = self.classes.repeat_interleave(self.k)  # (C*K,)
        self.centres: torch.Tensor | None = None
        self.assignments = torch.full((n,), -1, dtype=torch.long, device=self.device)
        self.item_losses = torch.zeros(n, dtype=torch.float32, device=self.device)
        self.has_loss = torch.zeros(n, dtype=torch.bool, device=self.device)
        self.refreshes = 0

    def __len__(self) -> int:
        return self.labels.numel()

    @property
    def fitted(self) -> bool:
        return self.centres is not None

    def _check_fitted(self, what: str) -> None:
        if not self.fitted:
            raise ValueError(f"{what}: the cluster index has no clusters yet; call index.fit(embeddings) or pass "
                             f"a ClusterRefresh callback to fit (it fits the index before the first step)")

    def fit(self, embeddings: torch.Tensor) -> "ClusterIndex":
        """(Re-)cluster every class from `embeddings (N, D)` of the whole training set, in item order.

        The r-th fit (r = 0, 1, ...) seeds k-means with ``seed + r``: a run is reproducible, and
        successive refreshes do not start from the same random centres.
        """
        if embeddings.dim() != 2 or embeddings.shape[0] != len(self):
            raise ValueError(f"expected embeddings of the whole training set, shape ({len(self)}, D), "
                             f"got {tuple(embeddings.shape)}")
        centres, assignments, _ = per_class_kmeans(embeddings.to(self.device), self.labels, self.k,
                                                   seed=self.seed + self.refreshes, niter=self.niter,
                                                   nredo=self.nredo)
        self.centres, self.assignments = centres, assignments
        self.refreshes += 1
        return self

    @property
    def cluster_sizes(self) -> torch.Tensor:
        """(C*K,) number of items in each cluster (0 before :meth:`fit`)."""
        sizes = torch.zeros(self.num_clusters, dtype=torch.long, device=self.device)
        assigned = self.assignments >= 0
        return sizes.index_add_(0, self.assignments[assigned], torch.ones_like(self.assignments[assigned]))

    def clusters_of(self, batch_indices: torch.Tensor) -> torch.Tensor:
        """(B,) cluster of each dataset index in `batch_indices (B,)`, on the device of `batch_indices`."""
        self._check_fitted("clusters_of")
        idx = torch.as_tensor(batch_indices).to(self.device).long()
        if idx.dim() != 1 or (idx.numel() and (idx.min() < 0 or idx.max() >= len(self))):
            raise ValueError(f"batch_indices must be a 1-D tensor of dataset indices in [0, {len(self)}), "
                             f"got shape {tuple(idx.shape)}")
        return self.assignments[idx].to(torch.as_tensor(batch_indices).device)

    def update_losses(self, batch_indices: torch.Tensor, losses: torch.Tensor) -> None:
        """Record the latest loss of the items `batch_indices (B,)`; an item drawn twice gets the mean of its two."""
        idx = torch.as_tensor(batch_indices).to(self.device).long()
        val = torch.as_tensor(losses).detach().to(self.device, torch.float32)
        if idx.dim() != 1 or val.shape != idx.shape:
            raise ValueError(f"expected batch_indices (B,) and losses (B,), got shapes {tuple(idx.shape)} "
                             f"and {tuple(val.shape)}")
        if idx.numel() and (idx.min() < 0 or idx.max() >= len(self)):
            raise ValueError(f"batch_indices must lie in [0, {len(self)})")
        if not torch.isfinite(val).all():
            raise ValueError("update_losses: the per-item losses contain NaN or inf")
        self.item_losses.scatter_reduce_(0, idx, val, reduce="mean", include_self=False)
        self.has_loss[idx] = True

    def cluster_losses(self) -> torch.Tensor:
        """(C*K,) mean latest loss of each cluster's items; a cluster none of whose items has a loss yet
        gets the mean of the clusters that have one (so it can still be drawn as a seed), or 1 when no
        item has a loss at all (the sampler is then uniform)."""
        self._check_fitted("cluster_losses")
        total = torch.zeros(self.num_clusters, dtype=torch.float32, device=self.device)
        count = torch.zeros_like(total)
        total.index_add_(0, self.assignments, self.item_losses * self.has_loss)
        count.index_add_(0, self.assignments, self.has_loss.float())
        known = count > 0
        mean = total / count.clamp_min(1)
        fill = mean[known].mean() if known.any() else torch.ones((), device=self.device)
        return torch.where(known, mean, fill)

    def seed_probabilities(self) -> torch.Tensor:
        """(C*K,) probability of each cluster to be the seed: ∝ its loss, 0 for empty clusters.

        Uniform over the non-empty clusters when every loss is 0 (never 0/0 = NaN).
        """
        nonempty = self.cluster_sizes > 0
        w = self.cluster_losses().clamp_min(0) * nonempty
        total = w.sum()
        if not torch.isfinite(total) or total <= 0:
            w, total = nonempty.float(), nonempty.sum().float()
        return w / total

    def to(self, device: str | torch.device) -> "ClusterIndex":
        """Move the whole state to `device` (in place); returns self."""
        self.device = torch.device(device)
        for name in ("labels", "classes", "class_sizes", "cluster_labels", "centres", "assignments",
                     "item_losses", "has_loss"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, value.to(self.device))
        return self

    def state_dict(self) -> dict:
        return {"k": self.k, "seed": self.seed, "refreshes": self.refreshes, "centres": self.centres,
                "assignments": self.assignments, "item_losses": self.item_losses, "has_loss": self.has_loss,
                "labels": self.labels}

    def load_state_dict(self, state: dict) -> None:
        if state["k"] != self.k or not torch.equal(state["labels"].to(self.device), self.labels):
            raise ValueError("load_state_dict: the saved cluster index was built for other labels or another k "
                             f"(saved k = {state['k']}, this index k = {self.k})")
        self.refreshes = int(state["refreshes"])
        self.centres = None if state["centres"] is None else state["centres"].to(self.device)
        for name in ("assignments", "item_losses", "has_loss"):
            setattr(self, name, state[name].to(self.device))


class ClusterRefresh(Callback):
    """Training-loop callback that keeps a :class:`ClusterIndex` up to date.

    * ``on_fit_start``: fits the index if it has no clusters yet (re-embeds the training set).
    * ``on_step_end``: records the per-item losses of the batch, ``state.loss.item_losses (B,)`` at
      ``state.batch_indices (B,)`` (the loader must yield batch indices); then, every `every`
      steps (``state.step % every == 0``) and at each step of `at_steps`, re-embeds `dataset` with
      ``state.model`` on ``state.device`` and re-clusters.

    Args:
        index: the index to maintain.
        dataset: the training set *without augmentation*, in the index's item order (same labels).
        every: refresh period in optimiser steps (the original: 50 for Magnet); ``None``: never.
        at_steps: extra steps after which to refresh (the original's RepMet runs: ``[1, 2]``).
        init_representatives: after each refresh, copy the centres into ``state.loss`` with its
            ``init_from`` (RepMet, as the original code overwrote its representatives); default False.
        sampler: a sampler whose ``state_dict`` this callback's checkpoint should carry too.
        batch_size: of the re-embedding pass.
        feed_losses: record the per-item losses (needed by :class:`rankdml.data.MagnetSampler`);
            False for a refresh-only use (e.g. k-means initialisation of RepMet with a P x K sampler,
            whose loader need not yield batch indices).
    """

    supports_distributed = False  # fit refuses it on several processes, saying why
    distributed_note = ("the refresh embeds the whole training set and runs k-means in one process; it is not "
                        "sharded")

    def __init__(self, index: ClusterIndex, dataset, *, every: int | None = 50, at_steps: Sequence[int] = (),
                 init_representatives: bool = False, sampler=None, batch_size: int = 256,
                 feed_losses: bool = True):
        if every is not None and every < 1:
            raise ValueError(f"every must be a positive number of steps or None, got {every}")
        if len(dataset) != len(index):
            raise ValueError(f"the dataset has {len(dataset)} items but the index was built for {len(index)}; "
                             f"pass the training set the index's labels come from")
        self.index, self.dataset, self.every = index, dataset, every
        self.at_steps = frozenset(int(s) for s in at_steps)
        self.init_representatives, self.sampler, self.batch_size = init_representatives, sampler, batch_size
        self.feed_losses = feed_losses
        self.refresh_steps: list[int] = []  # steps after which the index was rebuilt (0: before training)

    def refresh(self, state: TrainState) -> None:
        """Re-embed the training set with the current model and re-cluster."""
        import inspect

        from rankdml.metrics import embed  # lazy: rankdml.metrics imports the data stack

        quiet = {"progress": False} if "progress" in inspect.signature(embed).parameters else {}
        emb, _ = embed(state.model, self.dataset, batch_size=self.batch_size, device=state.device, **quiet)
        self.index.fit(emb.to(self.index.device))
        self.refresh_steps.append(int(state.step))
        if self.init_representatives:
            if not hasattr(state.loss, "init_from"):
                raise ValueError(f"init_representatives=True needs a loss with init_from(centres) (RepMetLoss), "
                                 f"got {type(state.loss).__name__}")
            state.loss.init_from(self.index)

    def on_fit_start(self, state: TrainState) -> None:
        if not self.index.fitted:
            self.refresh(state)

    def on_step_end(self, state: TrainState) -> None:
        losses = getattr(state.loss, "item_losses", None) if self.feed_losses else None
        if losses is not None:
            if state.batch_indices is None:
                raise ValueError("ClusterRefresh needs the batch indices (dataset index of every batch item): use "
                                 "a loader that yields (images, labels, indices), or feed_losses=False")
            self.index.update_losses(state.batch_indices, losses)
        if (self.every is not None and state.step % self.every == 0) or state.step in self.at_steps:
            self.refresh(state)

    def state_dict(self) -> dict:
        return {"index": self.index.state_dict(), "refresh_steps": list(self.refresh_steps),
                "sampler": self.sampler.state_dict() if self.sampler is not None else None}

    def load_state_dict(self, state: dict) -> None:
        self.index.load_state_dict(state["index"])
        self.refresh_steps = list(state["refresh_steps"])
        if self.sampler is not None and state.get("sampler") is not None:
            self.sampler.load_state_dict(state["sampler"])
