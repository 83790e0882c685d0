"""Shared by the distributed tests: the cases, a spawn helper, and the worker each process runs.

One spawn runs every case for every world size; each rank saves its results to `<out>/world<w>_rank<r>.pt` and
the test process compares them with a single-process computation on the same global batch.
(No __init__.py in tests/distributed: a package named `distributed` would shadow Dask's.)
"""
from __future__ import annotations

import os
import socket
import traceback
from datetime import timedelta
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from rankdml.data import DistributedPKSampler, PKSampler
from rankdml.losses import (AngularLoss, ContrastiveLoss, LiftedStructureLoss, MarginLoss, NPairsLoss,
                            SmoothAPLoss, TripletLoss)
from rankdml.mining import BatchHardMiner, DistanceWeightedSampler, SemiHardMiner

IN_DIM, EMB_DIM, NUM_CLASSES, PER_CLASS = 5, 4, 10, 5
P = 6  # classes per global batch: divisible by 2 and 3 processes


def dataset():
    """A fixed float64 data set: (N, IN_DIM) inputs, labels 0..NUM_CLASSES-1 shuffled."""
    g = torch.Generator().manual_seed(123)
    labels = torch.arange(NUM_CLASSES).repeat_interleave(PER_CLASS)
    labels = labels[torch.randperm(labels.numel(), generator=g)]
    x = torch.randn(labels.numel(), IN_DIM, generator=g, dtype=torch.float64)
    return x, labels


class Net(nn.Module):
    """The small model every rank copies: a linear embedding, L2-normalised."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(7)
        self.fc = nn.Linear(IN_DIM, EMB_DIM).double()

    def forward(self, x):
        return F.normalize(self.fc(x), dim=1)


def _dws(seed=5):
    return DistanceWeightedSampler(generator=torch.Generator().manual_seed(seed))


#: name -> (K, builder of (loss, miner)); builders run on every rank and in the reference alike.
CASES = {
    "contrastive": (3, lambda: (ContrastiveLoss(neg_margin=1.2), None)),
    "contrastive+semi_hard_miner": (3, lambda: (ContrastiveLoss(neg_margin=1.2), SemiHardMiner())),
    "triplet_all": (3, lambda: (TripletLoss(margin=0.5, mining="all"), None)),
    "triplet_batch_hard_inloss": (3, lambda: (TripletLoss(margin=0.5, mining="batch_hard"), None)),
    "triplet_semi_hard_inloss": (3, lambda: (TripletLoss(margin=0.5, mining="semi_hard"), None)),
    "triplet+batch_hard_miner": (3, lambda: (TripletLoss(margin=0.5), BatchHardMiner())),
    "triplet+semi_hard_miner": (3, lambda: (TripletLoss(margin=0.5), SemiHardMiner())),
    "lifted": (3, lambda: (LiftedStructureLoss(), None)),
    "lifted_smooth": (3, lambda: (LiftedStructureLoss(smooth=True), None)),
    "npairs": (2, lambda: (NPairsLoss(), None)),
    "angular": (2, lambda: (AngularLoss(), None)),
    "margin_all_pairs_per_class_beta": (3, lambda: (MarginLoss(num_classes=NUM_CLASSES, beta=0.9), None)),
    "margin+distance_weighted": (3, lambda: (MarginLoss(beta=0.9, sampler=_dws()), None)),
    "smooth_ap": (3, lambda: (SmoothAPLoss(temperature=0.1), None)),
    "smooth_ap_original": (3, lambda: (SmoothAPLoss(temperature=0.1, variant="original"), None)),
    "margin_per_class_beta+distance_weighted_miner": (
        3, lambda: (MarginLoss(num_classes=NUM_CLASSES, beta=0.9, nu=0.1), _dws(11))),
}


def global_batch(K: int, epoch: int = 0) -> list[int]:
    """The first global batch of the P x K sampler at `epoch` (what one process would train on)."""
    _, labels = dataset()
    sampler = PKSampler(labels.numpy(), P, K, seed=3)
    sampler.set_epoch(epoch)
    return next(iter(sampler))


def grads(model: nn.Module, loss: nn.Module) -> dict[str, torch.Tensor]:
    out = {f"model.{n}": p.grad.detach().clone() for n, p in model.named_parameters()}
    out.update({f"loss.{n}": p.grad.detach().clone() for n, p in loss.named_parameters() if p.grad is not None})
    return out


def single_process_reference(name: str) -> dict:
    """Loss value and every parameter's gradient, one process, the whole global batch."""
    K, build = CASES[name]
    x, labels = dataset()
    idx = torch.tensor(global_batch(K))
    model, (loss, miner) = Net(), build()
    emb = model(x[idx])
    value = loss(emb, labels[idx]) if miner is None else loss(emb, labels[idx], indices=miner(emb, labels[idx]))
    value.backward()
    return {"value": value.detach(), "grads": grads(model, loss)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn(worlds: tuple[int, ...], out: Path, backend: str = "gloo") -> dict[int, list[dict]]:
    """Run `worker` once on max(worlds) processes; for each world size w, ranks 0..w-1 form a process
    group of w (one after the other, the others wait), run every case and save their results.

    One spawn for all world sizes: starting a process (importing torch and rankdml) is what costs.
    Returns {w: [results of rank 0, ..., rank w-1]}.
    """
    ports = [free_port() for _ in worlds]
    torch.multiprocessing.spawn(worker, args=(tuple(worlds), ports, str(out), backend), nprocs=max(worlds), join=True)
    return {w: [torch.load(out / f"world{w}_rank{r}.pt", weights_only=False) for r in range(w)] for w in worlds}


def _init(rank: int, world: int, port: int, backend: str):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    from rankdml import distributed as rd

    info = rd.init(backend=backend)
    torch.distributed.barrier()  # the group works before anything else
    return rd, info


def worker(rank: int, worlds: tuple[int, ...], ports: list[int], out: str, backend: str) -> None:
    torch.set_num_threads(1)
    for world, port in zip(worlds, ports):
        if rank < world:
            _run_world(rank, world, port, out, backend)


def _run_world(rank: int, world: int, port: int, out: str, backend: str) -> None:
    rd, info = _init(rank, world, port, backend)
    device = rd.device_for_rank() if backend == "nccl" else torch.device("cpu")
    results: dict = {"info": (info.rank, info.world_size, info.local_rank), "is_main": rd.is_main(),
                     "backend": torch.distributed.get_backend(), "device": str(device)}
    try:
        results["losses"] = {name: _loss_case(rd, name, rank, world, device) for name in CASES}
        results["gather"] = _gather_cases(rd, rank, world, device)
        results["eval"] = _eval_case(rd, rank, world, device)
        results["training"] = train_two_epochs(rd, device)
        results["average"] = _average_case(rd, rank, device)
        results["errors"] = _error_cases(rd, rank, device)
        rd.barrier()
    except Exception:  # keep the traceback: spawn only reports the exception type of one rank
        results["traceback"] = traceback.format_exc()
        raise
    finally:
        torch.save(results, Path(out) / f"world{world}_rank{rank}.pt")
        rd.shutdown()


def _loss_case(rd, name: str, rank: int, world: int, device) -> dict:
    """One DDP step's loss value and gradients, this rank holding its DistributedPKSampler share."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    K, build = CASES[name]
    x, labels = dataset()
    sampler = DistributedPKSampler(PKSampler(labels.numpy(), P, K, seed=3))  # rank/world from the group
    mine = torch.tensor(next(iter(sampler)))
    model = Net().to(device)
    ddp = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
    loss, miner = build()
    if device.type == "cuda":  # samplers' generators must live on the embeddings' device
        for holder in (loss, miner):
            s = getattr(holder, "sampler", holder)
            if isinstance(s, DistanceWeightedSampler):
                s.generator = torch.Generator(device).manual_seed(s.generator.initial_seed())
    with torch.no_grad():  # other ranks start from other β: the first call must broadcast rank 0's
        for q in loss.parameters():
            q.add_(0.25 * rank)
    criterion = rd.GlobalBatchLoss(loss.to(device), miner=miner)
    value = criterion(ddp(x[mine].to(device)), labels[mine].to(device), mine.to(device))
    value.backward()
    criterion.average_gradients()
    _, _, gathered_idx = criterion.last_batch
    return {"value": value.detach().cpu(), "grads": {k: v.cpu() for k, v in grads(model, loss).items()},
            "gathered_indices": gathered_idx.cpu(), "local_indices": mine,
            "loss_params": {n: q.detach().cpu() for n, q in loss.named_parameters()}}


def train_two_epochs(rd=None, device="cpu") -> dict:
    """Two epochs of SGD (model + per-class β, distance-weighted sampling) through a DataLoader.

    With `rd` (inside a process group): DDP, DistributedPKSampler and GlobalBatchLoss; without: one
    process on PKSampler's global batches. Returns every step's loss and the final parameters.
    """
    from torch.utils.data import DataLoader, TensorDataset

    x, labels = dataset()
    device = torch.device(device)
    pk = PKSampler(labels.numpy(), P, 3, seed=3)
    model = Net().to(device)
    loss = MarginLoss(num_classes=NUM_CLASSES, beta=0.9, sampler=_dws(21)).to(device)
    if rd is None:
        net, criterion, batches = model, loss, pk
    else:
        from torch.nn.parallel import DistributedDataParallel as DDP

        net = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
        criterion, batches = rd.GlobalBatchLoss(loss), DistributedPKSampler(pk)
    if device.type == "cuda":
        loss.sampler.generator = torch.Generator(device).manual_seed(21)
    loader = DataLoader(TensorDataset(x, labels, torch.arange(len(labels))), batch_sampler=batches)
    opt = torch.optim.SGD(list(model.parameters()) + list(loss.parameters()), lr=0.5, momentum=0.9)
    values = []
    for epoch in range(2):
        batches.set_epoch(epoch)
        for xb, yb, ib in loader:
            xb, yb, ib = xb.to(device), yb.to(device), ib.to(device)
            value = criterion(net(xb), yb) if rd is None else criterion(net(xb), yb, ib)
            opt.zero_grad()
            value.backward()
            if rd is not None:
                criterion.average_gradients()
            opt.step()
            values.append(float(value.detach()))
    params = {f"model.{n}": q.detach().cpu() for n, q in model.named_parameters()}
    params.update({f"loss.{n}": q.detach().cpu() for n, q in loss.named_parameters()})
    return {"values": values, "params": params}


def _weights(seed: int, rows: int, device) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(rows, 3, generator=g, dtype=torch.float64).to(device)


def _equal_rows(world: int) -> torch.Tensor:
    return torch.randn(2 * world, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)


def _gather_cases(rd, rank: int, world: int, device) -> dict:
    """The gather's autograd on its own: uneven shards, rank-dependent functions, torch's version."""
    sizes = [r + 1 for r in range(world)]  # uneven on purpose
    total = sum(sizes)
    full = torch.randn(total, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    start = sum(sizes[:rank])
    mine = full[start:start + sizes[rank]].to(device).requires_grad_()
    gathered = rd.all_gather_with_grad(mine)
    # Each rank takes a different function of the global tensor: f_r = sum(w_r * G^2) + sum(G)
    (_weights(100 + rank, total, device) * gathered ** 2).sum().add(gathered.sum()).backward()
    out = {"gathered": gathered.detach().cpu(), "grad_uneven": mine.grad.cpu(), "sizes": sizes}

    # Equal shards: ours against torch.distributed.nn.functional.all_gather
    from torch.distributed.nn.functional import all_gather as torch_all_gather

    equal = _equal_rows(world)[2 * rank:2 * rank + 2].to(device)
    a, b = equal.clone().requires_grad_(), equal.clone().requires_grad_()
    w = _weights(200 + rank, 2 * world, device)
    (w * rd.all_gather_with_grad(a) ** 3).sum().backward()
    (w * torch.cat(torch_all_gather(b)) ** 3).sum().backward()
    out["grad_ours_equal"], out["grad_torch_equal"] = a.grad.cpu(), b.grad.cpu()
    return out


def _eval_case(rd, rank: int, world: int, device) -> dict:
    """Evaluation shards with a duplicated item (as padding samplers do) gathered on rank 0."""
    n = 11
    emb = torch.randn(n, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    labels = torch.arange(n) % 4
    shard = torch.tensor(list(rd.eval_shard(n)))
    order = shard.flip(0)  # shards in any order: the gather sorts by dataset index
    if rank == world - 1:
        order = torch.cat([order, torch.tensor([0])])  # item 0 twice (padding)
    e, y = rd.gather_embeddings_for_eval(emb[order].to(device), labels[order].to(device), order.to(device))
    e2, y2 = rd.gather_embeddings_for_eval(emb[shard].to(device), labels[shard].to(device))  # rank order
    return {"shard": (shard.min().item(), shard.max().item() + 1),
            "emb": None if e is None else e.cpu(), "labels": None if y is None else y.cpu(),
            "emb_rank_order": None if e2 is None else e2.cpu(), "expected": (emb, labels)}


def _average_case(rd, rank: int, device) -> dict:
    """average_gradients on gradients that differ between ranks: their mean; no gradient stays None."""
    holder = nn.Linear(2, 1).double().to(device)
    criterion = rd.GlobalBatchLoss(holder)
    holder.weight.grad = torch.full_like(holder.weight, float(rank + 1))
    criterion.average_gradients()
    return {"weight_grad": holder.weight.grad.cpu(), "bias_grad_is_none": holder.bias.grad is None}


def _error_cases(rd, rank: int, device) -> dict:
    """Ranks that disagree must all get the same ValueError, not hang."""
    messages = {}
    dim = 3 if rank == 0 else 4
    try:
        rd.gather_batch(torch.zeros(2, dim, dtype=torch.float64, device=device),
                        torch.tensor([0, 1], device=device))
    except ValueError as err:
        messages["dims"] = str(err)
    try:
        idx = torch.tensor([0, 1], device=device) if rank == 0 else None
        rd.gather_batch(torch.zeros(2, 3, dtype=torch.float64, device=device), torch.tensor([0, 1], device=device), idx)
    except ValueError as err:
        messages["indices"] = str(err)
    try:
        dtype = torch.float64 if rank == 0 else torch.float32
        rd.gather_batch(torch.zeros(2, 3, dtype=dtype, device=device), torch.tensor([0, 1], device=device))
    except ValueError as err:
        messages["dtype"] = str(err)
    return messages


def expected_gather_grad(world: int, rank: int) -> torch.Tensor:
    """Single-process autograd of sum_s f_s(G) over the whole tensor G, rank's rows: the all-reduce's promise."""
    sizes = [r + 1 for r in range(world)]
    total = sum(sizes)
    full = torch.randn(total, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64).requires_grad_()
    sum((_weights(100 + s, total, "cpu") * full ** 2).sum() + full.sum() for s in range(world)).backward()
    start = sum(sizes[:rank])
    return full.grad[start:start + sizes[rank]]


def expected_equal_grad(world: int, rank: int) -> torch.Tensor:
    full = _equal_rows(world).requires_grad_()
    sum((_weights(200 + s, 2 * world, "cpu") * full ** 3).sum() for s in range(world)).backward()
    return full.grad[2 * rank:2 * rank + 2]


__all__ = ["CASES", "train_two_epochs", "spawn", "single_process_reference", "global_batch", "expected_gather_grad",
           "expected_equal_grad"]
