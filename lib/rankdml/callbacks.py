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
the loop's checkpoints save and `load_state_dict()` restores.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class TrainState:
    """What the loop knows, passed to every hook. Fields of the last batch are set after each step.

    step: optimiser steps done so far, counting from 1 after the first step (0 before any).
    epoch: the current epoch, from 1 (0 before training).
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
