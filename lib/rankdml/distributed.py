"""Distributed data parallel with a global ranking batch: launch, gather with autograd, global-batch loss.

Plain DDP gives each process its own slice of the batch; a ranking loss computed per slice sees
B/N items, a different loss. Here every process embeds its share, the embeddings, labels and
batch indices are all-gathered in rank order, and every process computes the loss (and mining)
on the same global batch of B items.

Why the gradient comes out right (N processes, global loss :math:`L(e_1, \\dots, e_N)`, rank r's
slice :math:`e_r`): every rank computes the same :math:`L`, so the gradient each rank sends back
to slice r is :math:`\\partial L / \\partial e_r`. The gather's backward all-reduces (sums) the
incoming gradient and keeps its own slice, so rank r receives :math:`N\\, \\partial L / \\partial e_r`
and back-propagates it into its model copy; DDP then *averages* the parameter gradients over the
N ranks, which divides by N: every model parameter gets
:math:`\\sum_r (\\partial e_r / \\partial \\theta)^\\top \\partial L / \\partial e_r = \\partial L / \\partial \\theta`,
the single-process gradient of the global batch. No extra loss scaling is needed (the factor N of
the all-reduce and the 1/N of DDP cancel), and the loss value is the global loss, the same on every rank.

The loss's own parameters (MarginLoss's β, proxies) live outside the DDP-wrapped model: every rank
computes their gradient from the same global loss, so it is already :math:`\\partial L / \\partial \\beta`;
:meth:`GlobalBatchLoss.average_gradients` all-reduces (averages) them anyway, so that ranks whose
kernels are not bitwise deterministic (CUDA atomics) cannot drift apart, and the constructor
broadcasts rank 0's initial values, as DDP does for the model.

Usage under ``torchrun --nproc_per_node=N train.py``::

    info = rankdml.distributed.init()                       # NCCL on CUDA, gloo on CPU
    device = rankdml.distributed.device_for_rank()          # cuda:LOCAL_RANK or cpu
    model = DDP(model.to(device), device_ids=[device.index] if device.type == "cuda" else None)
    criterion = GlobalBatchLoss(MarginLoss(), miner=None).to(device)
    loader = DataLoader(ds, batch_sampler=DistributedPKSampler(PKSampler(labels, P, K, seed=0)))
    for x, y, idx in loader:
        value = criterion(model(x.to(device)), y.to(device), idx.to(device))
        opt.zero_grad(); value.backward(); criterion.average_gradients(); opt.step()

Without an initialised process group (a single process) every function here is the identity or a
no-op, so the same script runs unchanged with ``python train.py``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from rankdml._checks import check_embeddings_labels

__all__ = ["LaunchInfo", "launch_info", "init", "shutdown", "is_distributed", "rank", "world_size",
           "is_main", "barrier", "device_for_rank", "all_gather_with_grad", "gather_batch",
           "GlobalBatchLoss", "eval_shard", "gather_embeddings_for_eval", "broadcast_module_state",
           "average_gradients", "broadcast_object", "all_gather_object", "any_rank"]


@dataclass(frozen=True)
class LaunchInfo:
    """Where this process stands: global rank, number of processes, rank on this machine."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def launched(self) -> bool:
        """True when started by torchrun (or a launcher setting the same variables) with several processes."""
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} should be an integer (set by torchrun)") from None


def launch_info() -> LaunchInfo:
    """Read torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK); a plain `python` run gives (0, 1, 0)."""
    info = LaunchInfo(_env_int("RANK", 0), _env_int("WORLD_SIZE", 1), _env_int("LOCAL_RANK", 0))
    if info.world_size < 1 or not 0 <= info.rank < info.world_size or info.local_rank < 0:
        raise ValueError(f"inconsistent launch environment: RANK={info.rank}, WORLD_SIZE={info.world_size}, "
                         f"LOCAL_RANK={info.local_rank}; expected 0 <= RANK < WORLD_SIZE and LOCAL_RANK >= 0")
    return info


def is_distributed() -> bool:
    """True inside an initialised process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's global rank (0 without a process group)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    """The number of processes (1 without a process group)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main() -> bool:
    """True on rank 0 (and in a single process): the one that prints, evaluates and writes checkpoints."""
    return rank() == 0


def device_for_rank(local_rank: int | None = None) -> torch.device:
    """``cuda:LOCAL_RANK`` when CUDA is available, else ``cpu`` (today's ``"auto"`` gives cuda:0 on every rank).

    Raises ValueError when there are fewer GPUs than processes on this machine.
    """
    local_rank = launch_info().local_rank if local_rank is None else local_rank
    if not torch.cuda.is_available():
        return torch.device("cpu")
    count = torch.cuda.device_count()
    if local_rank >= count:
        raise ValueError(f"LOCAL_RANK={local_rank} but this machine has {count} GPU(s); start at most "
                         f"{count} processes per node (torchrun --nproc_per_node={count})")
    return torch.device("cuda", local_rank)


def init(backend: str | None = None) -> LaunchInfo:
    """Join the process group described by torchrun's environment, if there is one; return the launch info.

    `backend`: ``None`` picks ``"nccl"`` when CUDA is available and ``"gloo"`` otherwise. With a
    single process (no torchrun), nothing is initialised. Calling it twice is harmless. Uses
    ``init_method="env://"`` (MASTER_ADDR, MASTER_PORT, set by torchrun). With NCCL the current CUDA
    device is set to :func:`device_for_rank`.
    """
    info = launch_info()
    if not info.launched or dist.is_initialized():
        return info
    if not dist.is_available():
        raise ValueError("WORLD_SIZE > 1 but this PyTorch build has no torch.distributed support")
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend not in ("nccl", "gloo"):
        raise ValueError(f"unknown backend {backend!r}; use 'nccl' (GPUs), 'gloo' (CPUs) or None (choose)")
    if backend == "nccl":
        if not torch.cuda.is_available():
            raise ValueError("backend='nccl' needs CUDA; use backend='gloo' (or None) on a CPU machine")
        torch.cuda.set_device(device_for_rank(info.local_rank))
    for name in ("MASTER_ADDR", "MASTER_PORT"):
        if name not in os.environ:
            raise ValueError(f"WORLD_SIZE={info.world_size} but {name} is not set; launch with torchrun, "
                             f"or set MASTER_ADDR and MASTER_PORT yourself")
    dist.init_process_group(backend, init_method="env://", rank=info.rank, world_size=info.world_size)
    return info


def shutdown() -> None:
    """Leave the process group (no-op without one)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every process (no-op in a single process)."""
    if not is_distributed():
        return
    if dist.get_backend() == "nccl":
        dist.barrier(device_ids=[torch.cuda.current_device()])
    else:
        dist.barrier()


_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)  # codes for the agreement check


def _gather_rows(tensor: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    """All-gather (n_r, ...) tensors of per-rank row counts `sizes` into (sum n_r, ...), rank order.

    Collectives need equal shapes, so every shard is padded to the largest one and trimmed after.
    """
    tensor = tensor.contiguous()
    rows = max(sizes)
    if tensor.shape[0] < rows:
        pad = tensor.new_zeros((rows - tensor.shape[0],) + tuple(tensor.shape[1:]))
        tensor = torch.cat([tensor, pad])
    parts = [torch.empty_like(tensor) for _ in sizes]
    dist.all_gather(parts, tensor)
    return torch.cat([part[:n] for part, n in zip(parts, sizes)])


class _AllGatherWithGrad(torch.autograd.Function):
    """Forward: all-gather rows in rank order. Backward: all-reduce (sum) the gradient, keep this rank's rows."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor, sizes: list[int]) -> torch.Tensor:
        r = dist.get_rank()
        ctx.start, ctx.stop = sum(sizes[:r]), sum(sizes[:r + 1])
        return _gather_rows(tensor, sizes)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad = grad.contiguous().clone()  # all_reduce works in place; the incoming buffer is not ours
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.start:ctx.stop], None


class _GatherBatch(torch.autograd.Function):
    """:class:`_AllGatherWithGrad` for (n, D) embeddings carrying (n, m) int64 riders (labels, indices).

    The riders travel in the same all-gather as their embeddings, reinterpreted bit for bit as the
    embeddings' dtype (a copy, no arithmetic, so exact): one collective instead of two.
    """

    @staticmethod
    def forward(ctx, embeddings: torch.Tensor, riders: torch.Tensor, sizes: list[int]):
        r = dist.get_rank()
        ctx.start, ctx.stop = sum(sizes[:r]), sum(sizes[:r + 1])
        dim = embeddings.shape[1]
        bits = riders.to(device=embeddings.device, dtype=torch.long).contiguous().view(embeddings.dtype)
        both = _gather_rows(torch.cat([embeddings, bits], 1), sizes)  # (B, D + m * 8 / itemsize)
        gathered_riders = both[:, dim:].contiguous().view(torch.long)  # (B, m)
        ctx.mark_non_differentiable(gathered_riders)
        return both[:, :dim].contiguous(), gathered_riders

    @staticmethod
    def backward(ctx, grad: torch.Tensor, _riders_grad):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.start:ctx.stop], None, None


def _shard_sizes(tensor: torch.Tensor, extra: list[int] | None = None) -> torch.Tensor:
    """(world, 1 + len(extra)) table of every rank's row count and `extra` integers (one small collective)."""
    mine = torch.tensor([tensor.shape[0]] + list(extra or []), dtype=torch.long, device=tensor.device)
    table = [torch.empty_like(mine) for _ in range(dist.get_world_size())]
    dist.all_gather(table, mine)
    return torch.stack(table)


def all_gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate every rank's `tensor` (n_r, ...) in rank order, (sum n_r, ...), keeping autograd.

    The backward all-reduces (sums) the gradient of the gathered tensor and returns this rank's
    rows, so when every rank computes the same function of the gathered tensor, rank r's slice gets
    N times that function's gradient (DDP's averaging over N ranks then gives it back exactly; see the
    module docstring). Shards may have different row counts. Identity without a process group.

    Why not ``torch.distributed.nn.functional.all_gather``: it has the same gradient (sum over
    ranks of the gradient for one's own slice: a reduce-scatter on NCCL, emulated with all-to-all on
    gloo) but needs equal shapes on every rank and returns a tuple; this one handles uneven shards
    and costs one all-gather forward and one all-reduce backward on every backend. The tests check
    that both give the same gradients.
    """
    if not is_distributed():
        return tensor
    sizes = [int(n) for n in _shard_sizes(tensor)[:, 0]]
    return _AllGatherWithGrad.apply(tensor, sizes)


def gather_batch(embeddings: torch.Tensor, labels: torch.Tensor, batch_indices: torch.Tensor | None = None):
    """The global batch, in rank order: ``(embeddings (B, D), labels (B,), batch_indices (B,) or None)``.

    Each rank passes its share: embeddings (B_r, D) with autograd, labels (B_r,), and optionally the
    dataset indices (B_r,). Embeddings keep their graph (the gradient of :func:`all_gather_with_grad`);
    labels and indices travel without one, in the same all-gather. Every rank must pass the same D,
    dtype and choice of `batch_indices` (None or not), else ValueError on every rank. Identity
    without a process group. Collectives: one small all-gather of the shapes, one of the data.
    """
    check_embeddings_labels(embeddings, labels, where="gather_batch")
    if batch_indices is not None and (batch_indices.dim() != 1 or batch_indices.shape[0] != labels.shape[0]
                                      or batch_indices.is_floating_point()):
        raise ValueError(f"gather_batch: expected integer batch_indices of shape ({labels.shape[0]},), got "
                         f"{batch_indices.dtype} of shape {tuple(batch_indices.shape)}")
    if not is_distributed():
        return embeddings, labels, batch_indices
    has_indices = int(batch_indices is not None)
    dtype_code = _DTYPES.index(embeddings.dtype) if embeddings.dtype in _DTYPES else len(_DTYPES)
    table = _shard_sizes(embeddings, [embeddings.shape[1], has_indices, dtype_code]).tolist()  # a row per rank
    if any(len({row[k] for row in table}) != 1 for k in (1, 2, 3)):
        raise ValueError(f"gather_batch: ranks disagree on the embedding size, on passing batch_indices or on "
                         f"the dtype (per rank [rows, D, has_indices, dtype code]: {table}); every rank must "
                         f"embed with the same model and dtype and pass batch_indices everywhere or nowhere")
    sizes = [row[0] for row in table]
    meta = labels.to(torch.long)[:, None]
    if has_indices:
        meta = torch.cat([meta, batch_indices.to(device=labels.device, dtype=torch.long)[:, None]], 1)
    gathered, meta = _GatherBatch.apply(embeddings, meta, sizes)  # meta: (B, 1 or 2) labels, indices
    meta = meta.to(labels.device)
    global_labels = meta[:, 0].to(labels.dtype)
    return gathered, global_labels, (meta[:, 1] if has_indices else None)


class GlobalBatchLoss(nn.Module):
    """Compute `loss` (and `miner`) on the global batch gathered from every rank.

    ``GlobalBatchLoss(loss, miner=None)(embeddings (B_r, D), labels (B_r,), batch_indices=None) -> scalar``

    Each rank passes its own share; the value returned is the wrapped loss of the global batch
    (B = sum B_r items, in rank order), the same on every rank, and after DDP's gradient averaging
    every model parameter's gradient equals the single-process gradient of that global batch (see
    the module docstring: no extra scaling). With a miner, ``loss(E, y, indices=miner(E, y))``; else
    ``loss(E, y)``. Miners and samplers that draw at random (``DistanceWeightedSampler``, also as
    ``MarginLoss(sampler=...)``) must draw the same on every rank: give them a ``torch.Generator``
    on the embeddings' device seeded identically on every rank (they see the same global batch, so
    they then pick the same triplets).

    The loss's own parameters (β, proxies) are synchronised by the wrapper, not by DDP:

    - at the first call, rank 0's parameters and buffers are broadcast to every rank (at the
      first call rather than at construction, so that ``.to(device)`` has already moved them where
      NCCL wants them; call :meth:`broadcast_state` yourself after loading a checkpoint on rank 0 only);
    - after ``backward()``, call :meth:`average_gradients` before ``optimizer.step()``: their
      gradients (already the global-batch gradient on every rank) are averaged over the ranks.

    After a call, :attr:`last_batch` holds the global ``(embeddings, labels, batch_indices)``,
    detached, for callbacks that need the whole batch.
    """

    def __init__(self, loss: nn.Module, miner=None):
        super().__init__()
        if not callable(loss):
            raise ValueError(f"GlobalBatchLoss: expected a loss module called as loss(embeddings, labels), "
                             f"got {type(loss).__name__}")
        self.loss, self.miner = loss, miner
        self.last_batch: tuple | None = None
        self._state_broadcast = False

    def extra_repr(self) -> str:
        return f"miner={self.miner!r}"

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor,
                batch_indices: torch.Tensor | None = None) -> torch.Tensor:
        emb, lab, idx = gather_batch(embeddings, labels, batch_indices)
        if not self._state_broadcast:  # every rank reaches its first call together: a safe collective
            self.broadcast_state()
        self.last_batch = (emb.detach(), lab, idx)
        if self.miner is None:
            return self.loss(emb, lab)
        return self.loss(emb, lab, indices=self.miner(emb, lab))

    def broadcast_state(self, src: int = 0) -> None:
        """Copy rank `src`'s parameters and buffers of the loss to every rank (no-op in one process)."""
        self._state_broadcast = True
        broadcast_module_state(self.loss, src)

    def average_gradients(self) -> None:
        """Average the gradients of the loss's parameters over the ranks (see :func:`average_gradients`)."""
        average_gradients(self.loss)


def broadcast_module_state(module: nn.Module, src: int = 0, *, buffers_only: bool = False) -> None:
    """Copy rank `src`'s parameters and buffers of `module` (or only its buffers) to every rank.

    No-op in one process. `fit` uses it for the loss's own parameters at the start (DDP does the
    same for the model) and for the model's buffers (BatchNorm statistics, which each rank updates
    from its own share) before every evaluation, so that every rank evaluates rank 0's model.
    """
    if not is_distributed():
        return
    tensors = list(module.buffers()) if buffers_only else list(module.parameters()) + list(module.buffers())
    with torch.no_grad():
        for tensor in tensors:
            dist.broadcast(tensor.data, src)


def average_gradients(module: nn.Module) -> None:
    """Average the gradients of `module`'s parameters over the ranks (one all-reduce; no-op in one process).

    For parameters outside the DDP-wrapped model (a loss's β or proxies): each rank computed their
    gradient from the same global loss, so averaging changes nothing but float noise, and keeps the
    ranks from drifting apart. A parameter without a gradient on every rank keeps ``grad=None``.
    """
    params = [p for p in module.parameters() if p.requires_grad]
    if not params or not is_distributed():
        return
    flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params]
                     + [torch.tensor([float(p.grad is not None) for p in params], dtype=params[0].dtype,
                                     device=params[0].device)])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= dist.get_world_size()
    offset, had_grad = 0, flat[-len(params):] > 0
    for p, has in zip(params, had_grad.tolist()):
        chunk = flat[offset:offset + p.numel()].view_as(p)
        offset += p.numel()
        if has:
            p.grad = chunk.clone()


def broadcast_object(obj, src: int = 0):
    """Rank `src`'s picklable `obj` on every rank (the object itself in one process)."""
    if not is_distributed():
        return obj
    box = [obj if rank() == src else None]
    dist.broadcast_object_list(box, src)
    return box[0]


def all_gather_object(obj) -> list:
    """Every rank's picklable `obj`, in rank order (``[obj]`` in one process)."""
    if not is_distributed():
        return [obj]
    out = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def any_rank(flag: bool) -> bool:
    """True on every rank when `flag` is true on at least one (``flag`` in one process)."""
    if not is_distributed():
        return bool(flag)
    return any(all_gather_object(bool(flag)))


def eval_shard(num_items: int) -> range:
    """This rank's contiguous share of ``range(num_items)`` for evaluation (sizes differ by at most one)."""
    n, r = world_size(), rank()
    base, extra = divmod(num_items, n)
    start = r * base + min(r, extra)
    return range(start, start + base + (r < extra))


@torch.no_grad()
def gather_embeddings_for_eval(embeddings: torch.Tensor, labels: torch.Tensor,
                               indices: torch.Tensor | None = None, dst: int = 0):
    """Collect every rank's evaluation embeddings on rank `dst`, which alone computes the metrics.

    embeddings (n_r, D), labels (n_r,), indices (n_r,) the dataset index of each row (optional).
    Returns ``(embeddings (N, D), labels (N,))`` on `dst` and ``(None, None)`` elsewhere. With
    `indices`, rows come back sorted by dataset index with duplicates dropped (samplers that pad
    shards repeat items); without, in rank order (e.g. shards from :func:`eval_shard`). In a single
    process the inputs come back (sorted by `indices` if given). Implemented with the training
    gather (an all-gather, so NCCL and gloo behave alike); the other ranks drop the result at once.
    """
    check_embeddings_labels(embeddings, labels, where="gather_embeddings_for_eval")
    if is_distributed():
        all_emb, all_lab, all_idx = gather_batch(embeddings.detach(), labels, indices)
        if rank() != dst:
            return None, None
    else:
        all_emb, all_lab, all_idx = embeddings.detach(), labels, indices
    if all_idx is not None:
        order = torch.argsort(all_idx, stable=True)
        all_emb, all_lab, all_idx = all_emb[order], all_lab[order], all_idx[order]
        first = torch.ones_like(all_idx, dtype=torch.bool)
        first[1:] = all_idx[1:] != all_idx[:-1]
        all_emb, all_lab = all_emb[first], all_lab[first]
    return all_emb, all_lab
