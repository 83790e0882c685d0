"""One training loop for every chapter: `fit(model, loss, loader, epochs=...)`.

The loss is any module called as `loss(embeddings, labels)` (or, with a miner,
`loss(embeddings, labels, indices=miner(embeddings, labels))`). Stateful methods plug in as
`Callback` objects (`rankdml.callbacks`) with step and epoch hooks that see one `TrainState`.
Evaluation on named splits (`evaluate_splits`) and custom evaluators, every N epochs or every N
steps, goes into a `History`. Checkpoints (`rankdml.checkpoint`) hold the whole state, so a run
resumed from any of them, also from the middle of an epoch, equals the uninterrupted run.
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

from rankdml.callbacks import Callback, EarlyStopping, TrainState, as_callback
from rankdml.checkpoint import (config_mismatch, describe, load_checkpoint, rng_state, save_checkpoint,
                                set_rng_state, stateful_parts)
from rankdml.metrics import evaluate
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


def _configuration(model, loss, optimizer, scheduler, scheduler_interval, miner, sampler, steps_per_epoch,
                   eval_sets, evaluators, evaluate_every, evaluate_every_steps, evaluate_before, ks, nmi,
                   precision, callbacks) -> dict[str, str]:
    """What must be equal for a checkpoint to continue this run (not the length of the run, nor the device)."""
    return {
        "model": describe(model), "loss": describe(loss), "optimizer": describe(optimizer),
        "scheduler": describe(scheduler), "scheduler_interval": scheduler_interval,
        "miner": _describe_callable(miner), "sampler": describe(sampler), "steps_per_epoch": str(steps_per_epoch),
        "eval_sets": repr({k: ([len(d) for d in v] if isinstance(v, tuple) else len(v)) for k, v in eval_sets.items()}),
        "evaluators": repr(list(evaluators)), "evaluate_every": str(evaluate_every),
        "evaluate_every_steps": str(evaluate_every_steps), "evaluate_before": str(evaluate_before),
        "ks": str(tuple(ks)), "nmi": str(nmi), "precision": precision,
        "callbacks": repr([describe(c) for c in callbacks]),
    }


def _optimiser_step(batch: Any, state: TrainState, autocast: Callable, precision: str, loss_needs: bool,
                    miner_needs: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """One batch: forward, (mining), loss, backward, optimiser step. Returns (embeddings, labels, indices, loss)."""
    model, loss, miner, device = state.model, state.loss, state.miner, state.device
    images, labels, batch_indices = _unpack(batch)
    if (loss_needs or miner_needs) and batch_indices is None:
        raise ValueError(f"{type(loss).__name__ if loss_needs else type(miner).__name__} needs the dataset "
                         f"index of every batch item; build the loader on rankdml.data.with_indices(dataset)")
    images, labels = images.to(device), labels.to(device)
    batch_indices = batch_indices.to(device) if batch_indices is not None else None
    with autocast():
        embeddings = model(images)
    if precision == "bf16":
        embeddings = embeddings.float()  # ranking losses (exp, sorting, small margins) in float32
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
    state.optimizer.step()
    return embeddings, labels, batch_indices, value


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
    device = resolve_device(device)
    if precision == "bf16" and device.type != "cuda":
        raise ValueError(f"precision='bf16' autocasts on CUDA only, the device is {device}; use precision='fp32'")
    model.to(device)
    loss.to(device)
    if optimizer is None:
        optimizer = torch.optim.Adam([*model.parameters(), *loss.parameters()], lr=lr, weight_decay=weight_decay)
    eval_sets, evaluators = dict(eval_sets or {}), dict(evaluators or {})
    callbacks = [as_callback(c) for c in callbacks]
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
    bars = None if progress else True  # None: on unless TQDM_DISABLE=1

    history = History()
    state = TrainState(model=model, loss=loss, optimizer=optimizer, device=device, loader=loader,
                       steps_per_epoch=steps_per_epoch, total_steps=total_steps, scheduler=scheduler, miner=miner,
                       history=history)

    def run_evaluation() -> dict[str, float]:
        out = evaluate_splits(model, eval_sets, ks=ks, nmi=nmi, batch_size=eval_batch_size, device=device,
                              progress=progress) if eval_sets else {}
        out.update(_run_evaluators(state, evaluators))
        state.last_eval = out
        return out

    ckpt = Path(checkpoint_dir) / "last.pt" if checkpoint_dir is not None else None
    position = {"epoch": 0, "batches_done": 0, "epoch_finished": True, "loss_sum": 0.0, "epoch_start_rng": None}

    def write_checkpoint(epoch_start: Any, loss_sum: float, finished: bool) -> None:
        save_checkpoint(ckpt, {
            "format": CHECKPOINT_FORMAT, "config": config, "model": model.state_dict(), "loss": loss.state_dict(),
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "parts": {name: obj.state_dict() for name, obj in parts.items()},
            "sampler": sampler.state_dict() if sampler_has_state else None,
            "callbacks": [c.state_dict() for c in callbacks], "rng": rng_state(),
            "step": state.step, "epoch": state.epoch, "batches_done": state.batch_in_epoch, "epoch_finished": finished,
            "loss_sum": loss_sum, "epoch_start_rng": epoch_start, "stopped": state.should_stop,
            "last_eval": {k: _plain(v) for k, v in state.last_eval.items()} if state.last_eval is not None else None,
            "history": _plain_records(history.records), "step_records": _plain_records(history.step_records)})

    for callback in callbacks:
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
        if position["epoch_finished"]:  # a mid-epoch resume restores these after replaying the epoch's batches
            set_rng_state(saved["rng"])
            if sampler_has_state:
                sampler.load_state_dict(saved["sampler"])
    elif evaluate_before and (eval_sets or evaluators):
        history.records.append({"epoch": 0, **run_evaluation()})

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
        model.train()
        loss.train()
        if resumed_here:
            # the RNG state the epoch began with: the loader's iterator then draws the same seeds
            # (its workers' too) and the replayed batches are the ones the interrupted run trained on
            set_rng_state(position["epoch_start_rng"])
            epoch_start = position["epoch_start_rng"]
        else:
            state.batch_in_epoch = 0
            for callback in callbacks:
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
                                                                      miner_needs)
            state.loss_value = value.item()
            total += state.loss_value
            state.step += 1
            state.batch_in_epoch += 1
            state.embeddings, state.labels, state.batch_indices = embeddings.detach(), labels, batch_indices
            if scheduler is not None and scheduler_interval == "step":
                scheduler.step()
            if evaluate_every_steps and state.step % evaluate_every_steps == 0:
                history.step_records.append({"step": state.step, "epoch": epoch, **run_evaluation()})
            for callback in callbacks:
                callback.on_step_end(state)
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
        history.records.append(record)
        for callback in callbacks:
            callback.on_epoch_end(state, record)
        if ckpt is not None:
            write_checkpoint(None, 0.0, finished=True)
        epoch_bar.update(1)
        epoch += 1
    epoch_bar.close()
    for callback in callbacks:
        callback.on_fit_end(state)
    return history
