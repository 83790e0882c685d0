"""The contract between `rankdml.train.fit` and stateful methods: `TrainState` and `Callback`.

Stateful methods (Magnet's cluster refresh, RepMet's representatives, Smooth-AP's temperature
schedule, SoDeep's sorter updates, PADS's policy) plug into the one training loop as `Callback`
objects. The loop calls their hooks in this order:

    on_fit_start(state)
    for each epoch:  on_epoch_start(state)
                     for each step: ... optimiser step ... on_step_end(state)
                     on_epoch_end(state, record)        # record: the epoch's dict, may be extended
    on_fit_end(state)

A callback asks the loop to stop by setting `state.should_stop = True` (checked after every step
and every epoch). Whatever a callback must carry across a resume goes into `state_dict()`, which
the loop's checkpoints save and `load_state_dict()` restores. On a resume, `on_fit_start` runs
first and the checkpoint is loaded after it, so whatever `on_fit_start` set up is replaced by the
saved state; `on_epoch_start` is not called again for an epoch resumed in its middle.

Evaluation (fit's `eval_sets`, `evaluators`) runs before the callbacks of the same step or epoch,
so they find its result in `state.last_eval` (and, at an epoch end, in `record`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch


@dataclass
class TrainState:
    """What the loop knows, passed to every hook. Fields of the last batch are set after each step.

    step: optimiser steps done so far, counting from 1 after the first step (0 before any).
    epoch: the current epoch, from 1 (0 before training).
    steps_per_epoch: len(loader) when fit starts (a PKSampler's epochs may differ by a batch or two);
    total_steps: max_steps if given, else epochs x steps_per_epoch, the expected length of the run.
    embeddings: (B, D) the last batch's embeddings, detached; labels: (B,); batch_indices: (B,)
    the dataset index of every item of the last batch (None when the loader does not yield them).
    """

    model: torch.nn.Module
    loss: torch.nn.Module
    optimizer: torch.optim.Optimizer
    device: torch.device
    loader: Any
    steps_per_epoch: int
    total_steps: int
    scheduler: Any = None
    miner: Any = None
    history: Any = None
    step: int = 0
    epoch: int = 0
    embeddings: torch.Tensor | None = None
    labels: torch.Tensor | None = None
    batch_indices: torch.Tensor | None = None
    loss_value: float | None = None
    should_stop: bool = False
    extra: dict = field(default_factory=dict)  # free room for callbacks to share values within one run
    batch_in_epoch: int = 0  # batches of the current epoch done so far (== steps_per_epoch at its end)
    last_eval: dict | None = None  # the latest evaluation {"<split>/<metric>": value}, step- or epoch-based


class Callback:
    """Base class with no-op hooks; override what you need. See the module docstring for the order."""

    def on_fit_start(self, state: TrainState) -> None:
        pass

    def on_epoch_start(self, state: TrainState) -> None:
        pass

    def on_step_end(self, state: TrainState) -> None:
        pass

    def on_epoch_end(self, state: TrainState, record: dict) -> None:
        pass

    def on_fit_end(self, state: TrainState) -> None:
        pass

    def state_dict(self) -> dict:
        """Everything needed to resume this callback exactly (tensors, numbers, RNG states)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class EpochFunction(Callback):
    """The old callback form, a plain function `f(epoch, record, model)` called after every epoch."""

    def __init__(self, function: Callable[[int, dict, torch.nn.Module], None]):
        self.function = function

    def on_epoch_end(self, state: TrainState, record: dict) -> None:
        self.function(state.epoch, record, state.model)

    def __repr__(self) -> str:  # stable between processes (no memory address): part of a run's configuration
        return f"EpochFunction({getattr(self.function, '__qualname__', type(self.function).__name__)})"


def as_callback(callback: Callback | Callable) -> Callback:
    """A `Callback` as it is; a plain function `f(epoch, record, model)` wrapped as `EpochFunction`."""
    if isinstance(callback, Callback):
        return callback
    if callable(callback):
        return EpochFunction(callback)
    raise ValueError(f"expected a rankdml.callbacks.Callback or a function f(epoch, record, model), "
                     f"got {type(callback).__name__}")


class EarlyStopping(Callback):
    """Stop training when `monitor` (a key of the epoch records, e.g. "val/recall@1") stops improving.

    Checked at every epoch that recorded `monitor`; after `patience` such epochs without an
    improvement larger than `min_delta`, `state.should_stop` is set.
    """

    def __init__(self, monitor: str, *, patience: int = 5, mode: str = "max", min_delta: float = 0.0):
        if mode not in ("max", "min"):
            raise ValueError(f"EarlyStopping: mode must be 'max' or 'min', got {mode!r}")
        if patience < 1:
            raise ValueError(f"EarlyStopping: patience must be >= 1, got {patience}")
        self.monitor, self.patience, self.mode, self.min_delta = monitor, patience, mode, min_delta
        self.best: float | None = None
        self.best_epoch = 0
        self.waited = 0

    def on_epoch_end(self, state: TrainState, record: dict) -> None:
        if self.monitor not in record:
            return
        value = float(record[self.monitor])
        if self.best is None:
            improved = True
        else:
            gain = value - self.best if self.mode == "max" else self.best - value
            improved = gain > self.min_delta
        if improved:
            self.best, self.best_epoch, self.waited = value, state.epoch, 0
        else:
            self.waited += 1
            if self.waited >= self.patience:
                state.should_stop = True

    def state_dict(self) -> dict:
        return {"best": self.best, "best_epoch": self.best_epoch, "waited": self.waited}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.best_epoch, self.waited = state["best"], state["best_epoch"], state["waited"]

    def __repr__(self) -> str:
        return (f"EarlyStopping(monitor={self.monitor!r}, patience={self.patience}, mode={self.mode!r}, "
                f"min_delta={self.min_delta})")
