"""`UpdatingWrapper`: fine-tune a learned sorter on the score sequences it meets during training."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from rankdml.callbacks import Callback, TrainState
from rankdml.sodeep.ranks import exact_rank

__all__ = ["UpdatingWrapper"]


class UpdatingWrapper(nn.Module, Callback):
    """Wraps a learned sorter; records its input rows and fine-tunes it on them as a training callback.

    Use it as the loss's sorter *and* as a callback of `rankdml.train.fit`::

        sorter = UpdatingWrapper(load_sorter(path))
        fit(model, SoDeepAPLoss(sorter=sorter), loader, epochs=..., callbacks=[sorter])

    `forward(x (B, n))` returns the sorter's ranks and stores the rows of `x` (detached, on the CPU,
    at most `max_stored`, the newest kept). Every `every` steps (default: at the end of each epoch
    when None), `update_sorter()` takes `updates_per_call` Adam steps (lr `lr_sorter`) of L1 between
    the sorter's output and the exact ranks of the stored rows **along the sequence dimension** (the
    original computes them along dim 0, across the batch, so its targets for one (1, n) sequence are
    all 1), then clears the store. Between updates the sorter stays frozen and in eval mode.
    """

    def __init__(self, sorter: nn.Module, *, lr_sorter: float = 1e-5, every: int | None = None,
                 updates_per_call: int = 1, batch_size: int = 256, max_stored: int = 20_000):
        super().__init__()
        if not list(sorter.parameters()):
            raise ValueError("UpdatingWrapper needs a learned sorter with parameters; the 'exact' sorter has none")
        if every is not None and every < 1:
            raise ValueError(f"every must be None (once per epoch) or >= 1, got {every}")
        self.sorter = sorter
        self.lr_sorter, self.every, self.updates_per_call = lr_sorter, every, updates_per_call
        self.batch_size, self.max_stored = batch_size, max_stored
        self.seq_len = getattr(sorter, "seq_len", None)
        self._stored: list[torch.Tensor] = []
        self.optimizer = torch.optim.Adam(self.sorter.parameters(), lr=lr_sorter)
        self.sorter.requires_grad_(False)
        self.updates = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.sorter(x)  # validates x first
        self._stored.append(x.detach().to("cpu", torch.float32))
        while sum(t.shape[0] for t in self._stored) > self.max_stored and len(self._stored) > 1:
            self._stored.pop(0)
        return out

    @property
    def stored(self) -> int:
        return sum(t.shape[0] for t in self._stored)

    def update_sorter(self) -> float | None:
        """Fine-tune on the stored rows; returns the mean L1 of the last step (None when nothing is stored)."""
        if not self._stored:
            return None
        device = next(self.sorter.parameters()).device
        dtype = next(self.sorter.parameters()).dtype
        by_length: dict[int, list[torch.Tensor]] = {}
        for t in self._stored:  # rows of different lengths (length-free sorters) are batched separately
            by_length.setdefault(t.shape[1], []).append(t)
        self._stored = []
        self.sorter.requires_grad_(True)
        self.sorter.train()  # cuDNN RNNs only run backward in training mode
        last = None
        try:
            with torch.enable_grad():
                for _ in range(self.updates_per_call):
                    for rows in by_length.values():
                        rows = torch.cat(rows).to(device, dtype)
                        for chunk in rows.split(self.batch_size):
                            loss = F.l1_loss(self.sorter(chunk), exact_rank(chunk, dim=-1))
                            self.optimizer.zero_grad(set_to_none=True)
                            loss.backward()
                            self.optimizer.step()
                            last = loss.item()
        finally:
            self.sorter.requires_grad_(False)
            self.sorter.eval()
        self.updates += 1
        return last

    # the sorter stays in eval mode whatever the loss's train() asks
    def train(self, mode: bool = True):
        super().train(mode)
        self.sorter.eval()
        return self

    def on_step_end(self, state: TrainState) -> None:
        if self.every is not None and state.step % self.every == 0:
            self.update_sorter()

    def on_epoch_end(self, state: TrainState, record: dict) -> None:
        if self.every is None:
            value = self.update_sorter()
            if value is not None:
                record["sorter_l1"] = value

    def state_dict(self, *args, **kwargs):  # nn.Module's signature; also the Callback's resume state
        state = super().state_dict(*args, **kwargs)
        if args or kwargs:  # nested call from a parent module's state_dict
            return state
        return {"sorter": {k: v for k, v in state.items()}, "optimizer": self.optimizer.state_dict(),
                "updates": self.updates}

    def load_state_dict(self, state, strict: bool = True, assign: bool = False):
        if set(state) == {"sorter", "optimizer", "updates"}:
            super().load_state_dict(state["sorter"], strict=strict)
            self.optimizer.load_state_dict(state["optimizer"])
            self.updates = state["updates"]
            return None
        return super().load_state_dict(state, strict=strict, assign=assign)
