"""One training loop for every chapter: `fit(model, loss, loader, epochs=...)`.

The loss is any module called as `loss(embeddings, labels)` (or, with a miner,
`loss(embeddings, labels, indices=miner(embeddings, labels))`). Stateful methods plug in as
`Callback` objects (`rankdml.callbacks`) with step and epoch hooks that see one `TrainState`.
Evaluation on named splits (`evaluate_splits`) and custom evaluators, every N epochs or every N
steps, goes into a `History`. Checkpoints (`rankdml.checkpoint`) hold the whole state, so a run
resumed from any of them, also from the middle of an epoch, equals the uninterrupted run.

The same call runs on several processes (``torchrun --nproc_per_node=N``, or processes that joined
a torch.distributed group themselves): see "Several processes" in `fit`'s docstring.
"""
from __future__ import annotations

import contextlib
import json
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from rankdml import distributed
from rankdml.callbacks import Callback, EarlyStopping, TrainState, as_callback
from rankdml.checkpoint import (config_mismatch, describe, load_checkpoint, rng_state, save_checkpoint,
                                set_rng_state, stateful_parts)
from rankdml.metrics import embed, evaluate, query_gallery_metrics, retrieval_metrics
from rankdml.runtime import progress as progress_bar, resolve_device

__all__ = ["fit", "History", "Callback", "TrainState", "EarlyStopping", "evaluate_split", "evaluate_splits",
           "NonFiniteLossError", "CHECKPOINT_FORMAT"]

EvalSet = Dataset | tuple[Dataset, Dataset]  # a leave-one-out split, or (query, gallery)
#: A custom evaluator: `evaluator(state) -> {"metric": value}`; it sees state.model, state.loss, ...
Evaluator = Callable[[TrainState], Mapping[str, float]]

#: Bumped when the content of fit's checkpoints changes; an older checkpoint is refused, not misread.
CHECKPOINT_FORMAT = 2


class NonFiniteLossError(FloatingPointError, ValueError):
    """The loss became NaN or infinite (a FloatingPointError, as before, and a ValueError)."""


@dataclass
class History:
    """Per-epoch records: {"epoch", "loss", "seconds", "<split>/<metric>", ...}; epoch 0 = before training.

    `step_records` holds the step-based evaluations (`fit(evaluate_every_steps=N)`):
    {"step", "epoch", "<split>/<metric>", ...}. The last epoch record of a run stopped in the middle
    of an epoch (`max_steps`, a callback) covers the batches done in that epoch.
    """

    records: list[dict[str, float]] = field(default_factory=list)
    step_records: list[dict[str, float]] = field(default_factory=list)

    def __getitem__(self, key: str) -> list[float]:
        """The values of `key` over the epochs that have it, e.g. `history["val/recall@1"]`."""
        return [r[key] for r in self.records if key in r]

    def epochs(self, key: str) -> list[int]:
        return [int(r["epoch"]) for r in self.records if key in r]

    def steps(self, key: str) -> tuple[list[int], list[float]]:
        """(steps, values) of `key` in the step-based evaluations."""
        rows = [r for r in self.step_records if key in r]
        return [int(r["step"]) for r in rows], [r[key] for r in rows]

    def best(self, key: str, mode: str = "max") -> dict[str, float]:
        """The record where `key` is largest (mode="max") or smallest ("min")."""
        rows = [r for r in self.records if key in r]
        if not rows:
            raise ValueError(f"no epoch recorded {key!r}; recorded keys: {sorted({k for r in self.records for k in r})}")
        return (max if mode == "max" else min)(rows, key=lambda r: r[key])

    @property
    def last(self) -> dict[str, float]:
        return self.records[-1]

    def to_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.records, indent=1))


# --------------------------------------------------------------------------------------------------
# evaluation
# --------------------------------------------------------------------------------------------------

def evaluate_split(model: nn.Module, data: EvalSet, *, ks: Sequence[int] = (1, 2, 4, 8), nmi: bool = True,
                   batch_size: int = 256, device: str | torch.device = "auto", progress: bool = True) -> dict[str, float]:
    """Retrieval metrics of `model` on one split: a data set (leave-one-out) or a (query, gallery) pair.

    Returns {"recall@K", "precision@1", "r_precision", "map@r", "nmi" (leave-one-out only)}.
    """
    query, gallery = data if isinstance(data, tuple) else (data, None)
    return evaluate(model, query, ks=ks, gallery=gallery, batch_size=batch_size, device=device, nmi=nmi,
                    progress=progress)


def evaluate_splits(model: nn.Module, eval_sets: Mapping[str, EvalSet], *, ks: Sequence[int] = (1, 2, 4, 8),
                    nmi: bool = True, batch_size: int = 256, device: str | torch.device = "auto",
                    progress: bool = True) -> dict[str, float]:
    """`evaluate_split` on every named split: {"<split>/<metric>": value}, e.g. {"val/recall@1": 0.4, ...}."""
    out = {}
    for split, data in eval_sets.items():
        metrics = evaluate_split(model, data, ks=ks, nmi=nmi, batch_size=batch_size, device=device, progress=progress)
        out.update({f"{split}/{name}": value for name, value in metrics.items()})
    return out


def _embed_shared(model: nn.Module, dataset: Dataset, batch_size: int, device: torch.device, progress: bool):
    """Each rank embeds its contiguous share of `dataset`; rank 0 gets the whole (N, D), (N,), the others None."""
    shard = torch.utils.data.Subset(dataset, list(distributed.eval_shard(len(dataset))))
    emb, lab = embed(model, shard, batch_size=batch_size, device=device, progress=progress)
    return distributed.gather_embeddings_for_eval(emb.to(device), lab.to(device))


def _evaluate_splits_distributed(model: nn.Module, eval_sets: Mapping[str, EvalSet], *, ks: Sequence[int],
                                 nmi: bool, batch_size: int, device: torch.device,
                                 progress: bool) -> dict[str, float] | None:
    """`evaluate_splits` on several processes: embeddings computed in shares, metrics on rank 0 only (None elsewhere)."""
    out: dict[str, float] = {}
    for split, data in eval_sets.items():
        query, gallery = data if isinstance(data, tuple) else (data, None)
        q_emb, q_lab = _embed_shared(model, query, batch_size, device, progress)
        if gallery is None:
            metrics = retrieval_metrics(q_emb.cpu(), q_lab.cpu(), ks, nmi=nmi) if q_emb is not None else None
        else:
            g_emb, g_lab = _embed_shared(model, gallery, batch_size, device, progress)
            metrics = (query_gallery_metrics(q_emb.cpu(), q_lab.cpu(), g_emb.cpu(), g_lab.cpu(), ks)
                       if q_emb is not None else None)
        if metrics is not None:
            out.update({f"{split}/{name}": value for name, value in metrics.items()})
    return out if distributed.is_main() else None


def _run_evaluators(state: TrainState, evaluators: Mapping[str, Evaluator]) -> dict[str, float]:
    out: dict[str, float] = {}
    if not evaluators:
        return out
    was_training = state.model.training, state.loss.training
    state.model.eval()
    state.loss.eval()
    try:
        with torch.no_grad():
            for name, evaluator in evaluators.items():
                values = evaluator(state)
                if not isinstance(values, Mapping):
                    raise ValueError(f"evaluator {name!r} must return a dict {{metric: value}}, "
                                     f"got {type(values).__name__}")
                out.update({f"{name}/{key}": float(value) for key, value in values.items()})
    finally:
        state.model.train(was_training[0])
        state.loss.train(was_training[1])
    return out


# --------------------------------------------------------------------------------------------------
# helpers of the loop
# --------------------------------------------------------------------------------------------------

def _plain(value: Any) -> Any:
    """NumPy scalars as Python numbers, so records load with weights_only=True."""
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    return value


def _plain_records(records: list[dict]) -> list[dict]:
    return [{k: _plain(v) for k, v in r.items()} for r in records]


def _unpack(batch: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    if isinstance(batch, (list, tuple)) and len(batch) in (2, 3):
        return batch[0], batch[1], (batch[2] if len(batch) == 3 else None)
    shape = f"a {type(batch).__name__} of {len(batch)}" if isinstance(batch, (list, tuple)) else type(batch).__name__
    raise ValueError(f"the training loader must yield (images, labels) or (images, labels, indices), got {shape}; "
                     f"wrap the data set with rankdml.data.with_indices for the indices")


def _needs_indices(component: Any) -> bool:
    return bool(getattr(component, "needs_batch_indices", False))


def _describe_callable(obj: Any) -> str:
    if obj is None or isinstance(obj, Callback) or not callable(obj) or isinstance(obj, nn.Module):
        return describe(obj)
    if type(obj).__repr__ is object.__repr__ or hasattr(obj, "__qualname__"):  # functions: no memory address
        return getattr(obj, "__qualname__", type(obj).__name__)
    return repr(obj)


def _describe_sampler(sampler: Any) -> str:
    """A sharded sampler described without its rank, so that every rank's configuration is the same."""
    inner = getattr(sampler, "sampler", None)
    if getattr(sampler, "num_replicas", None) is not None and inner is not None and hasattr(sampler, "rank"):
        return f"{type(sampler).__name__}({describe(inner)}, num_replicas={sampler.num_replicas})"
    return describe(sampler)


def _configuration(model, loss, optimizer, scheduler, scheduler_interval, miner, sampler, steps_per_epoch,
                   eval_sets, evaluators, evaluate_every, evaluate_every_steps, evaluate_before, ks, nmi,
                   precision, callbacks) -> dict[str, str]:
    """What must be equal for a checkpoint to continue this run (not the length of the run, nor the device)."""
    if distributed.is_distributed():
        sampler_description = _describe_sampler(sampler)
        processes = {"world_size": str(distributed.world_size())}  # only then: older one-process checkpoints load
    else:
        sampler_description, processes = describe(sampler), {}
    return {**processes,
        "model": describe(model), "loss": describe(loss), "optimizer": describe(optimizer),
        "scheduler": describe(scheduler), "scheduler_interval": scheduler_interval,
        "miner": _describe_callable(miner), "sampler": sampler_description, "steps_per_epoch": str(steps_per_epoch),
        "eval_sets": repr({k: ([len(d) for d in v] if isinstance(v, tuple) else len(v)) for k, v in eval_sets.items()}),
        "evaluators": repr(list(evaluators)), "evaluate_every": str(evaluate_every),
        "evaluate_every_steps": str(evaluate_every_steps), "evaluate_before": str(evaluate_before),
        "ks": str(tuple(ks)), "nmi": str(nmi), "precision": precision,
        "callbacks": repr([describe(c) for c in callbacks]),
    }


def _optimiser_step(batch: Any, state: TrainState, autocast: Callable, precision: str, loss_needs: bool,
                    miner_needs: bool, forward: nn.Module, ddp: bool
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """One batch: forward, (gather), (mining), loss, backward, optimiser step.

    `forward` is the model, or its DistributedDataParallel wrapper on several processes (`ddp`),
    where each rank's share is gathered into the global batch before mining and the loss.
    Returns (embeddings, labels, indices, loss) of the (global) batch.
    """
    loss, miner, device = state.loss, state.miner, state.device
    images, labels, batch_indices = _unpack(batch)
    if (loss_needs or miner_needs) and batch_indices is None:
        raise ValueError(f"{type(loss).__name__ if loss_needs else type(miner).__name__} needs the dataset "
                         f"index of every batch item; build the loader on rankdml.data.with_indices(dataset)")
    images, labels = images.to(device), labels.to(device)
    batch_indices = batch_indices.to(device) if batch_indices is not None else None
    with autocast():
        embeddings = forward(images)
    if precision == "bf16":
        embeddings = embeddings.float()  # ranking losses (exp, sorting, small margins) in float32
    if ddp:  # every rank computes the loss of the global batch; see rankdml.distributed for the gradient
        embeddings, labels, batch_indices = distributed.gather_batch(embeddings, labels, batch_indices)
    kwargs = {}
    if miner is not None:
        kwargs["indices"] = (miner(embeddings, labels, batch_indices=batch_indices) if miner_needs
                             else miner(embeddings, labels))
    if loss_needs:
        kwargs["batch_indices"] = batch_indices
    value = loss(embeddings, labels, **kwargs)
    if not torch.isfinite(value):
        raise NonFiniteLossError(f"the loss became {value.item()} at epoch {state.epoch}, batch "
                                 f"{state.batch_in_epoch} (step {state.step + 1}); lower the learning "
                                 f"rate or check the loss's inputs")
    state.optimizer.zero_grad(set_to_none=True)
    value.backward()
    if ddp:
        distributed.average_gradients(loss)  # the loss's own parameters (β, proxies) live outside DDP
    state.optimizer.step()
    return embeddings, labels, batch_indices, value


def _check_distributed(loader: DataLoader, loss: nn.Module, miner: Any, callbacks: Sequence[Callback]) -> None:
    """Refuse, with the fix, what cannot run on several processes."""
    batch_sampler = getattr(loader, "batch_sampler", None)
    parts = [("the loader's batch sampler", batch_sampler), ("the loss", loss), ("the miner", miner)]
    parts += [(f"the callback {type(c).__name__}", c) for c in callbacks]
    for what, obj in parts:
        if obj is not None and getattr(obj, "supports_distributed", True) is False:
            why = getattr(obj, "distributed_note", "")
            raise ValueError(f"{what} ({type(obj).__name__}) does not support training on several processes"
                             f"{': ' + why if why else ''}; run it in a single process")
    world = distributed.world_size()
    shards = {getattr(batch_sampler, "num_replicas", None), getattr(getattr(loader, "sampler", None), "num_replicas", None)}
    if world not in shards:
        raise ValueError(f"fit runs on {world} processes but the loader's sampler is not sharded between them, so "
                         f"every process would train on the same items; wrap the batch sampler as "
                         f"rankdml.data.DistributedPKSampler(PKSampler(labels, P, K, seed=...)) (or use a "
                         f"torch DistributedSampler)")


# --------------------------------------------------------------------------------------------------
# the loop
# --------------------------------------------------------------------------------------------------

def fit(model: nn.Module, loss: nn.Module, loader: DataLoader, *, epochs: int | None = None,
        max_steps: int | None = None, optimizer: torch.optim.Optimizer | None = None, lr: float = 1e-3,
        weight_decay: float = 0.0, scheduler: Any = None, scheduler_interval: str = "epoch",
        miner: Callable | None = None, eval_sets: Mapping[str, EvalSet] | None = None,
        evaluators: Mapping[str, Evaluator] | None = None, evaluate_every: int = 1,
        evaluate_every_steps: int | None = None, evaluate_before: bool = True, ks: Sequence[int] = (1, 2, 4, 8),
        nmi: bool = True, eval_batch_size: int = 256, device: str | torch.device = "auto", precision: str = "fp32",
        checkpoint_dir: str | Path | None = None, checkpoint_every_steps: int | None = None, resume: bool = True,
        callbacks: Sequence[Callback | Callable[[int, dict, nn.Module], None]] = (),
        progress: bool = True) -> History:
    """Train `model` with `loss` on the batches of `loader` for `epochs` epochs (or `max_steps` steps).

    Args:
        model: maps images (B, C, H, W) to embeddings (B, D).
        loss: `loss(embeddings (B, D), labels (B,)) -> scalar`; its own parameters (a learnable
            margin, class proxies) are trained too. A loss with `needs_batch_indices = True` is
            called with `batch_indices=` (B,) too.
        loader: yields (images, labels) or (images, labels, indices) — the latter from a data set
            wrapped by `rankdml.data.with_indices`; usually `DataLoader(ds, batch_sampler=PKSampler(...))`.
        epochs: number of epochs; `max_steps`: stop after that many optimiser steps, also in the
            middle of an epoch (whichever comes first; one of the two is needed).
        optimizer: default Adam(lr, weight_decay) over the parameters of model and loss; for
            per-part rates see `rankdml.optim.parameter_groups`.
        scheduler: `scheduler.step()` after every epoch (`scheduler_interval="epoch"`) or after
            every optimiser step (`"step"`).
        miner: optional `miner(embeddings, labels) -> indices`, passed to the loss as `indices=`
            (with `batch_indices=` too if the miner has `needs_batch_indices = True`).
        eval_sets: {"val": dataset, "test": dataset, "inshop": (query, gallery)}, see `evaluate_splits`.
        evaluators: {"name": evaluator(state) -> {"metric": value}}, custom evaluations that see
            the model and the loss (run under no_grad in eval mode), recorded as "name/metric".
            Both are evaluated every `evaluate_every` epochs, at the last epoch, at epoch 0 if
            `evaluate_before`, and every `evaluate_every_steps` steps if given (into
            `History.step_records`). Evaluation precedes the callbacks of the same step or epoch.
        precision: "fp32" (default) or "bf16": the model's forward under CUDA bf16 autocast (the
            loss is computed in float32 on the float32-cast embeddings). "bf16" on a CPU is a
            ValueError, not a silent no-op.
        checkpoint_dir: if given, `last.pt` is written there (atomically) after every epoch and, with
            `checkpoint_every_steps=N`, every N steps; with `resume=True`, training continues from it
            and ends exactly as an uninterrupted run would. A checkpoint written by a different
            configuration (model, loss, optimizer, sampler, ... — not the number of epochs) is refused,
            with the differences named; delete it or pass another folder to start afresh.
        callbacks: `rankdml.callbacks.Callback` objects (hooks `on_fit_start`, `on_epoch_start`,
            `on_step_end`, `on_epoch_end`, `on_fit_end`, see `rankdml.callbacks`), or plain
            functions `f(epoch, record, model)` called after every epoch. Their `state_dict()` is
            checkpointed; setting `state.should_stop` ends training after the current step.
        progress: False silences every bar, the evaluation's embedding bars included.

    Batch samplers that change during an epoch: a sampler updated by a callback between steps
    (Magnet's cluster sampler) declares `updates_during_epoch = True`. With `loader.num_workers > 0`
    the DataLoader asks the sampler for `prefetch_factor * num_workers` batches ahead of time, which
    would then be drawn before the update; `fit` refuses that combination. With `num_workers=0`
    (the default) each batch is drawn when the loop asks for it, after the previous step's callbacks.

    Resuming in the middle of an epoch replays the epoch's batches (the sampler's `set_epoch`, the
    RNG state of the epoch's start) and skips those already done without running the model; the
    random generators (torch CPU/CUDA, NumPy, Python), the sampler's, miner's and callbacks' states
    are then restored as they were after the last step done.

    Several processes (``torchrun --nproc_per_node=N script.py``, NCCL on GPUs, gloo on CPUs): `fit`
    joins the process group torchrun describes (`rankdml.distributed.init`), `device="auto"` picks
    ``cuda:LOCAL_RANK`` (or the CPU), the model is wrapped in DistributedDataParallel, and the
    loader's batch sampler must be sharded (`rankdml.data.DistributedPKSampler`; else a ValueError).
    Each rank embeds its share; embeddings, labels and batch indices are gathered so that the miner,
    the loss and the callbacks see the global batch, and every parameter's gradient is the
    single-process gradient of that batch (`rankdml.distributed`). The loss's own parameters start
    from rank 0's values and their gradients are averaged. Evaluation: each rank embeds a share of
    every split with rank 0's model (its BatchNorm buffers are broadcast first), rank 0 alone
    computes the metrics and runs the custom `evaluators`, and the results are broadcast, so the
    `History` is the same on every rank (each epoch record is rank 0's). Callbacks run on every rank,
    seeing the same global batch; one with ``rank_zero_only = True`` runs on rank 0 only, and one
    with ``supports_distributed = False`` (Magnet's sampler and cluster refresh, PADS) is refused.
    `should_stop` set on any rank stops every rank. Checkpoints are written by rank 0 (with every
    rank's random generator states) into a folder all ranks can read, and every rank resumes from
    it; a checkpoint of another number of processes is refused. Progress bars show on rank 0 only.
    BatchNorm layers normalise each rank's share by its own statistics (as in all DDP training; on
    GPUs ``torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)`` makes them global). Seed each rank
    differently (``seed_everything(seed + rank)``) if the data augmentation draws from torch's
    global generator, or every rank augments its share with the same random numbers.

    Returns: the `History`, one record per epoch (epoch 0 holds the metrics before training).
    """
    if epochs is None and max_steps is None:
        raise ValueError("give epochs (a number of epochs) or max_steps (a number of optimiser steps)")
    if (epochs is not None and epochs < 0) or evaluate_every < 1:
        raise ValueError(f"need epochs >= 0 and evaluate_every >= 1, got {epochs} and {evaluate_every}")
    for name, value in (("max_steps", max_steps), ("evaluate_every_steps", evaluate_every_steps),
                        ("checkpoint_every_steps", checkpoint_every_steps)):
        if value is not None and value < 1:
            raise ValueError(f"{name} must be None or a positive number of steps, got {value}")
    if scheduler_interval not in ("epoch", "step"):
        raise ValueError(f"scheduler_interval must be 'epoch' or 'step', got {scheduler_interval!r}")
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"precision must be 'fp32' or 'bf16', got {precision!r}")
    try:
        steps_per_epoch = len(loader)
    except TypeError as err:
        raise ValueError("the training loader must have a length (a map-style data set or a sized batch sampler)") from err
    if steps_per_epoch == 0:
        raise ValueError("the training loader yields no batch; check the batch size / sampler against the data")
    sampler = getattr(loader, "batch_sampler", None)
    if getattr(sampler, "updates_during_epoch", False) and getattr(loader, "num_workers", 0) > 0:
        raise ValueError(f"{type(sampler).__name__} changes during an epoch (updates_during_epoch = True), but the "
                         f"loader has num_workers={loader.num_workers}: workers prefetch batches before the update. "
                         f"Use a DataLoader with num_workers=0 for this sampler")
    if epochs is None:
        epochs = math.ceil(max_steps / steps_per_epoch)
    # Only max_steps stops by count: a PKSampler's epochs differ by a batch or two, so epochs x len(loader)
    # is the expected length (state.total_steps, for schedules), not a limit.
    step_limit = max_steps if max_steps is not None else math.inf
    total_steps = epochs * steps_per_epoch if max_steps is None else min(max_steps, epochs * steps_per_epoch)
    distributed.init()  # joins torchrun's process group; nothing without one
    ddp = distributed.is_distributed()
    device = distributed.device_for_rank() if ddp and device == "auto" else resolve_device(device)
    if precision == "bf16" and device.type != "cuda":
        raise ValueError(f"precision='bf16' autocasts on CUDA only, the device is {device}; use precision='fp32'")
    model.to(device)
    loss.to(device)
    if optimizer is None:
        optimizer = torch.optim.Adam([*model.parameters(), *loss.parameters()], lr=lr, weight_decay=weight_decay)
    eval_sets, evaluators = dict(eval_sets or {}), dict(evaluators or {})
    callbacks = [as_callback(c) for c in callbacks]
    if ddp:
        _check_distributed(loader, loss, miner, callbacks)
    main = distributed.is_main()
    # the callbacks whose hooks run in this process (all of them, but on rank 0 only for rank_zero_only ones)
    hooks = [c for c in callbacks if main or not getattr(c, "rank_zero_only", False)]
    loss_needs, miner_needs = _needs_indices(loss), _needs_indices(miner)
    # objects outside the modules' state_dicts whose state a checkpoint must carry
    parts = stateful_parts(loss, "loss")
    if miner is not None and callable(getattr(miner, "state_dict", None)):
        parts["miner"] = miner
    sampler_has_state = callable(getattr(sampler, "state_dict", None))
    config = _configuration(model, loss, optimizer, scheduler, scheduler_interval, miner, sampler, steps_per_epoch,
                            eval_sets, evaluators, evaluate_every, evaluate_every_steps, evaluate_before, ks, nmi,
                            precision, callbacks)
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if precision == "bf16" else contextlib.nullcontext
    bars = None if progress and main else True  # None: on unless TQDM_DISABLE=1

    history = History()
    state = TrainState(model=model, loss=loss, optimizer=optimizer, device=device, loader=loader,
                       steps_per_epoch=steps_per_epoch, total_steps=total_steps, scheduler=scheduler, miner=miner,
                       history=history)

    def run_evaluation() -> dict[str, float]:
        if ddp:
            distributed.broadcast_module_state(model, buffers_only=True)  # evaluate rank 0's model everywhere
            out = _evaluate_splits_distributed(model, eval_sets, ks=ks, nmi=nmi, batch_size=eval_batch_size,
                                               device=device, progress=progress and main) if eval_sets else {}
            if main:
                out.update(_run_evaluators(state, evaluators))
            out = distributed.broadcast_object(out)
        else:
            out = evaluate_splits(model, eval_sets, ks=ks, nmi=nmi, batch_size=eval_batch_size, device=device,
                                  progress=progress) if eval_sets else {}
            out.update(_run_evaluators(state, evaluators))
        state.last_eval = out
        return out

    ckpt = Path(checkpoint_dir) / "last.pt" if checkpoint_dir is not None else None
    position = {"epoch": 0, "batches_done": 0, "epoch_finished": True, "loss_sum": 0.0, "epoch_start_rng": None}

    def write_checkpoint(epoch_start: Any, loss_sum: float, finished: bool) -> None:
        rng, start_rng = rng_state(), epoch_start
        if ddp:  # every rank's generators, so that each resumes with its own
            rng, start_rng = distributed.all_gather_object(rng), distributed.all_gather_object(epoch_start)
            if not main:
                return
        save_checkpoint(ckpt, {
            "format": CHECKPOINT_FORMAT, "config": config, "model": model.state_dict(), "loss": loss.state_dict(),
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "parts": {name: obj.state_dict() for name, obj in parts.items()},
            "sampler": sampler.state_dict() if sampler_has_state else None,
            "callbacks": [c.state_dict() for c in callbacks], "rng": rng,
            "step": state.step, "epoch": state.epoch, "batches_done": state.batch_in_epoch, "epoch_finished": finished,
            "loss_sum": loss_sum, "epoch_start_rng": start_rng, "stopped": state.should_stop,
            "last_eval": {k: _plain(v) for k, v in state.last_eval.items()} if state.last_eval is not None else None,
            "history": _plain_records(history.records), "step_records": _plain_records(history.step_records)})

    for callback in hooks:
        callback.on_fit_start(state)

    saved = None
    if ckpt is not None and resume and ckpt.exists():
        saved = load_checkpoint(ckpt)
        if saved.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{ckpt} was written by another version of rankdml.train (format "
                             f"{saved.get('format')}, expected {CHECKPOINT_FORMAT}); delete it to start afresh")
        differences = config_mismatch(saved["config"], config)
        if differences:
            raise ValueError(f"{ckpt} was written by a different configuration, so resuming would not continue "
                             f"that run:\n  " + "\n  ".join(differences) +
                             f"\nDelete it, pass another checkpoint_dir, or resume=False to start afresh")
        model.load_state_dict(saved["model"])
        loss.load_state_dict(saved["loss"])
        optimizer.load_state_dict(saved["optimizer"])
        if scheduler is not None and saved["scheduler"] is not None:
            scheduler.load_state_dict(saved["scheduler"])
        for name, obj in parts.items():
            obj.load_state_dict(saved["parts"][name])
        for callback, callback_state in zip(callbacks, saved["callbacks"]):
            callback.load_state_dict(callback_state)
        history.records[:] = saved["history"]
        history.step_records[:] = saved["step_records"]
        state.step, state.epoch, state.should_stop = saved["step"], saved["epoch"], saved["stopped"]
        state.last_eval = saved["last_eval"]
        position = {k: saved[k] for k in position}
        if ddp:  # this rank's own generator states
            saved["rng"] = saved["rng"][distributed.rank()]
            position["epoch_start_rng"] = (position["epoch_start_rng"][distributed.rank()]
                                           if position["epoch_start_rng"] is not None else None)
        if position["epoch_finished"]:  # a mid-epoch resume restores these after replaying the epoch's batches
            set_rng_state(saved["rng"])
            if sampler_has_state:
                sampler.load_state_dict(saved["sampler"])
    elif evaluate_before and (eval_sets or evaluators):
        history.records.append({"epoch": 0, **run_evaluation()})

    forward = model
    if ddp:
        from torch.nn.parallel import DistributedDataParallel

        # rank 0's weights everywhere (the constructor broadcasts them); the loss's own parameters likewise
        forward = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
        distributed.broadcast_module_state(loss)
        inner_sampler = getattr(loader, "sampler", None)
    first = position["epoch"] + 1 if position["epoch_finished"] else position["epoch"]
    epoch_bar = progress_bar(total=epochs, initial=first - 1, desc="epochs", disable=bars)
    epoch = first
    # an epoch interrupted after its last step is still finished (record, evaluation, callbacks) on resume
    pending = saved is not None and not position["epoch_finished"]
    while (epoch == first and pending) or (epoch <= epochs and state.step < step_limit and not state.should_stop):
        state.epoch = epoch
        resumed_here = pending and epoch == first
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch - 1)  # the batches of an epoch depend on the epoch, also after a resume
        elif ddp and hasattr(inner_sampler, "set_epoch"):  # a torch DistributedSampler inside a BatchSampler
            inner_sampler.set_epoch(epoch - 1)
        model.train()
        loss.train()
        if resumed_here:
            # the RNG state the epoch began with: the loader's iterator then draws the same seeds
            # (its workers' too) and the replayed batches are the ones the interrupted run trained on
            set_rng_state(position["epoch_start_rng"])
            epoch_start = position["epoch_start_rng"]
        else:
            state.batch_in_epoch = 0
            for callback in hooks:
                callback.on_epoch_start(state)
            epoch_start = rng_state() if ckpt is not None and checkpoint_every_steps else None
        batches = iter(progress_bar(loader, desc=f"epoch {epoch}", leave=False, disable=bars))
        total, tic = 0.0, time.perf_counter()
        if resumed_here:
            for done in range(position["batches_done"]):
                # fetched (the augmentation runs, consuming its random numbers), not trained on
                if next(batches, None) is None:
                    raise ValueError(f"the checkpoint was written after {position['batches_done']} batches of epoch "
                                     f"{epoch}, but the loader now yields only {done} in that epoch")
            state.batch_in_epoch, total = position["batches_done"], position["loss_sum"]
            set_rng_state(saved["rng"])
            if sampler_has_state:
                sampler.load_state_dict(saved["sampler"])
        for batch in batches if state.step < step_limit and not state.should_stop else ():
            embeddings, labels, batch_indices, value = _optimiser_step(batch, state, autocast, precision, loss_needs,
                                                                      miner_needs, forward, ddp)
            state.loss_value = value.item()
            total += state.loss_value
            state.step += 1
            state.batch_in_epoch += 1
            state.embeddings, state.labels, state.batch_indices = embeddings.detach(), labels, batch_indices
            if scheduler is not None and scheduler_interval == "step":
                scheduler.step()
            if evaluate_every_steps and state.step % evaluate_every_steps == 0:
                history.step_records.append({"step": state.step, "epoch": epoch, **run_evaluation()})
            for callback in hooks:
                callback.on_step_end(state)
            if ddp:
                state.should_stop = distributed.any_rank(state.should_stop)
            if ckpt is not None and checkpoint_every_steps and state.step % checkpoint_every_steps == 0:
                write_checkpoint(epoch_start, total, finished=False)
            if state.step >= step_limit or state.should_stop:
                break
        record = {"epoch": epoch, "loss": total / max(state.batch_in_epoch, 1), "seconds": time.perf_counter() - tic}
        last = epoch == epochs or state.step >= step_limit or state.should_stop
        if scheduler is not None and scheduler_interval == "epoch":
            with warnings.catch_warnings():
                if resumed_here:  # torch warns when no optimizer.step() ran in this process yet: expected here
                    warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler.step\(\)` before")
                scheduler.step()
        if (eval_sets or evaluators) and (epoch % evaluate_every == 0 or last):
            record.update(run_evaluation())
        if ddp:
            record = distributed.broadcast_object(record)  # rank 0's, seconds included: one History everywhere
        history.records.append(record)
        for callback in hooks:
            callback.on_epoch_end(state, record)
        if ddp:
            state.should_stop = distributed.any_rank(state.should_stop)
        if ckpt is not None:
            write_checkpoint(None, 0.0, finished=True)
        epoch_bar.update(1)
        epoch += 1
    epoch_bar.close()
    for callback in hooks:
        callback.on_fit_end(state)
    return history
