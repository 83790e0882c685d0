"""The Magnet loss's neighbourhood sampler: a seed cluster, its nearest impostor clusters, D items each."""
from __future__ import annotations

from typing import Iterator

import torch
from torch.utils.data import Sampler

__all__ = ["MagnetSampler"]


class MagnetSampler(Sampler[list[int]]):
    """Batches of M clusters x D items drawn from a :class:`rankdml.clusters.ClusterIndex` (Rippel et al. 2016).

    Each batch: (i) a seed cluster drawn with probability ∝ its current mean loss
    (``index.seed_probabilities()``: uniform before any loss and when every loss is 0, never NaN;
    empty clusters never); (ii) its M - 1 nearest clusters *of other classes* by centre distance
    (several may belong to the same class when K > 1); (iii) D items of each of the M clusters,
    uniformly without replacement -- or, for a cluster with fewer than D items and
    ``allow_replacement=True``, with replacement. Batches are lists of M*D dataset indices, each
    cluster's D items next to each other, the seed cluster first.

    The batches follow the index as it changes (cluster losses after every step, clusters at every
    refresh), so each batch is drawn only when the loader asks for it: ``updates_during_epoch``
    is True, and the loader must not prefetch (``num_workers=0``). Randomness comes from a
    ``torch.Generator`` on the index's device, seeded by `seed`; its state is in
    :meth:`state_dict` -- a run resumes by restoring that state, not by replaying batches.

    Args:
        index: the cluster index (fitted before the first batch is drawn, e.g. by
            :class:`rankdml.clusters.ClusterRefresh` at the start of training).
        M: clusters per batch (paper: 12).
        D: items per cluster (paper: 4).
        allow_replacement: if False (default), a cluster with fewer than D items is an error when
            it is drawn (and a class with fewer than D items one at construction).
        num_batches: batches per epoch; default N // (M*D), about one pass over the data.
        seed: seed of the generator.
    """

    supports_distributed = False  # fit refuses it on several processes, saying why
    distributed_note = ("MagnetSampler draws each batch from a cluster index that the loss updates after every "
                        "step; sharding it between processes is not implemented")

    updates_during_epoch = True

    def __init__(self, index, M: int, D: int, *, allow_replacement: bool = False, num_batches: int | None = None,
                 seed: int = 0):
        if M < 2 or D < 1:
            raise ValueError(f"need M >= 2 clusters per batch (a seed and its impostors) and D >= 1 items per "
                             f"cluster, got M={M}, D={D}")
        num_classes = index.classes.numel()
        if num_classes < 2:
            raise ValueError("MagnetSampler needs at least two classes (impostors come from other classes)")
        if index.num_clusters - index.k < M - 1:
            raise ValueError(f"M = {M}: a seed cluster has only {index.num_clusters - index.k} clusters of other "
                             f"classes (C = {num_classes} classes x K = {index.k}); lower M")
        small = index.class_sizes < D
        if small.any() and not allow_replacement:
            raise ValueError(f"{int(small.sum())} classes have fewer than D = {D} items (smallest: "
                             f"{int(index.class_sizes.min())}); lower D or pass allow_replacement=True")
        self.index, self.M, self.D, self.allow_replacement = index, int(M), int(D), allow_replacement
        self.num_batches = int(num_batches) if num_batches is not None else max(1, len(index) // (M * D))
        if self.num_batches < 1:
            raise ValueError(f"num_batches must be >= 1, got {num_batches}")
        self.seed = int(seed)
        self.generator = torch.Generator(device=index.device).manual_seed(self.seed)
        self._layout = None

    def __len__(self) -> int:
        return self.num_batches

    def _choose_clusters(self) -> torch.Tensor:
        """(M,) the seed cluster then its M - 1 nearest non-empty clusters of other classes."""
        idx = self.index
        p = idx.seed_probabilities()
        seed = torch.multinomial(p, 1, generator=self.generator)  # (1,)
        d = ((idx.centres - idx.centres[seed]) ** 2).sum(1)  # (C*K,)
        unusable = (idx.cluster_labels == idx.cluster_labels[seed]) | (idx.cluster_sizes == 0)
        if int((~unusable).sum()) < self.M - 1:
            raise ValueError(f"only {int((~unusable).sum())} non-empty clusters of other classes for M - 1 = "
                             f"{self.M - 1} impostors; lower M")
        impostors = d.masked_fill(unusable, float("inf")).topk(self.M - 1, largest=False).indices
        return torch.cat([seed, impostors])

    def _draw_items(self, chosen: torch.Tensor) -> torch.Tensor:
        """(M, D) dataset indices: D items of each chosen cluster."""
        idx, dev = self.index, self.index.device
        if self._layout is None or self._layout[0] is not idx.assignments:  # recomputed after each refresh
            sizes = idx.cluster_sizes
            self._layout = (idx.assignments, torch.argsort(idx.assignments, stable=True), sizes,
                            torch.cumsum(sizes, 0) - sizes)
        _, order, sizes, starts = self._layout  # items grouped by cluster, cluster sizes and offsets
        n = sizes[chosen]  # (M,)
        if not self.allow_replacement and (n < self.D).any():
            c = int(chosen[n < self.D][0])
            raise ValueError(f"cluster {c} (class {int(idx.cluster_labels[c])}) has {int(sizes[c])} items, fewer "
                             f"than D = {self.D}; pass allow_replacement=True, or lower D or k")
        # Without replacement: the D smallest of uniform keys over a cluster's slots (a random D-subset);
        # the keys of slots beyond a cluster's size are pushed past 1 so they are never chosen.
        width = max(int(n.max()), self.D)
        keys = torch.rand(self.M, width, generator=self.generator, device=dev)
        keys = keys.masked_fill(torch.arange(width, device=dev)[None, :] >= n[:, None], 2.0)
        without = keys.topk(self.D, dim=1, largest=False).indices  # (M, D)
        with_repl = (torch.rand(self.M, self.D, generator=self.generator, device=dev) * n[:, None]).long()
        slots = torch.where((n < self.D)[:, None], with_repl.clamp_max(n[:, None] - 1), without)
        return order[starts[chosen][:, None] + slots]

    def sample_batch(self) -> list[int]:
        """One batch of M*D dataset indices from the index's current state."""
        self.index._check_fitted("MagnetSampler")
        return self._draw_items(self._choose_clusters()).reshape(-1).tolist()

    def __iter__(self) -> Iterator[list[int]]:
        for _ in range(self.num_batches):
            yield self.sample_batch()  # drawn lazily: sees the losses and clusters of the latest step

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state(), "seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"].cpu() if hasattr(state["generator"], "cpu") else state["generator"])
