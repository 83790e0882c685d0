"""`DistributedPKSampler`: a P x K sampler's global batches, split between ranks by whole classes."""
from __future__ import annotations

from typing import Iterator

from torch.utils.data import Sampler

from rankdml import distributed
from rankdml.data.samplers import PKSampler

__all__ = ["DistributedPKSampler"]


class DistributedPKSampler(Sampler[list[int]]):
    """Give rank r its share of every global batch of a :class:`PKSampler`, whole classes per rank.

    The global batch of P classes x K items is the one `sampler` yields on a single process; rank r
    of N gets classes r P/N, ..., (r+1) P/N - 1 of it, i.e. items ``batch[r*P*K/N : (r+1)*P*K/N]``,
    all K items of each of its P/N classes. Gathering the ranks' shares in rank order
    (:func:`rankdml.distributed.gather_batch`) rebuilds exactly the single-process batch, P x K
    structure and order included, so a global-batch loss sees the same batch as one process would.
    (Keeping a class on one rank also means every rank's own share is a valid P x K batch.)

    Args:
        sampler: the global :class:`PKSampler`, built identically (same labels, P, K, seed) on every rank.
        num_replicas: N; ``None`` (default): the process group's world size (1 without one).
        rank: r; ``None`` (default): the process group's rank (0 without one).

    Raises ValueError when P is not a multiple of N (lower N or choose P = multiple of N).

    ``set_epoch(e)``, ``len()`` and the advance of the epoch after each full iteration are the
    wrapped sampler's (the same on every rank, so all ranks run the same number of steps).
    """

    def __init__(self, sampler: PKSampler, *, num_replicas: int | None = None, rank: int | None = None):
        if not isinstance(sampler, PKSampler):
            raise ValueError(f"DistributedPKSampler shards a rankdml.data.PKSampler, got {type(sampler).__name__}")
        num_replicas = distributed.world_size() if num_replicas is None else num_replicas
        rank = distributed.rank() if rank is None else rank
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(f"expected 0 <= rank < num_replicas, got rank={rank}, num_replicas={num_replicas}")
        if sampler.P % num_replicas:
            raise ValueError(f"P = {sampler.P} classes per batch cannot be split over {num_replicas} processes "
                             f"with whole classes per process; choose P a multiple of {num_replicas} "
                             f"(e.g. P = {num_replicas * max(1, round(sampler.P / num_replicas))})")
        self.sampler, self.num_replicas, self.rank = sampler, num_replicas, rank
        share = sampler.P // num_replicas * sampler.K
        self._slice = slice(rank * share, (rank + 1) * share)

    @property
    def epoch(self) -> int:
        return self.sampler.epoch

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose batches the next iteration yields, as :meth:`PKSampler.set_epoch`."""
        self.sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.sampler:
            yield batch[self._slice]

    def __len__(self) -> int:
        return len(self.sampler)

    def __repr__(self) -> str:
        return (f"DistributedPKSampler(P={self.sampler.P}, K={self.sampler.K}, rank={self.rank}, "
                f"num_replicas={self.num_replicas})")
