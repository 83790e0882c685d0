"""Training a sorter on synthetic sequences (the original recipe) and loading it back.

Recipe (reference section 2.4): L1 between predicted and exact ranks, Adam (lr 1e-3), the learning
rate halved every 70 epochs, batch 256, fresh mixture sequences at every step, the best
checkpoint by validation L1 kept. Differences from the original, on purpose: the validation set
is drawn once from its own seed (the original's changed every epoch), the scheduler is stepped
after the epoch's optimiser steps, the device is not hard-coded, and an "epoch" is a number of
steps (`steps_per_epoch`, default 1406 = 90 % of 400,000 sequences / 256).
"""
from __future__ import annotations

import time
from pathlib import Path

import torch

from rankdml.runtime import progress, resolve_device
from rankdml.sodeep.checkpoint import FORMAT, read_checkpoint, save_checkpoint
from rankdml.sodeep.sorters import SORTERS, Sorter, make_sorter
from rankdml.sodeep.synthetic import FAMILIES, make_generator, sample_sequences

__all__ = ["train_sorter", "load_sorter", "save_sorter", "evaluate_sorter"]


def save_sorter(path: str | Path, sorter: Sorter, name: str, kwargs: dict | None = None, meta: dict | None = None) -> Path:
    """Save `sorter` with its architecture name, length and constructor kwargs (atomically)."""
    payload = {"format": FORMAT, "sorter": name, "seq_len": sorter.seq_len, "kwargs": dict(kwargs or {}),
               "state_dict": {k: v.detach().cpu() for k, v in sorter.state_dict().items()}, "meta": dict(meta or {})}
    return save_checkpoint(path, payload)


def load_sorter(path: str | Path, device: str | torch.device = "cpu") -> Sorter:
    """Rebuild the sorter saved at `path` (architecture and length from the file), in eval mode, frozen."""
    payload = read_checkpoint(path)
    sorter = make_sorter(payload["sorter"], payload["seq_len"], **payload["kwargs"])
    sorter.load_state_dict(payload["state_dict"])
    sorter.meta = payload["meta"]
    sorter.requires_grad_(False)
    return sorter.to(resolve_device(device)).eval()


@torch.no_grad()
def evaluate_sorter(sorter: Sorter, seq_len: int, *, families=("mixture",) + FAMILIES, batches: int = 4,
                    batch_size: int = 256, seed: int = 12345, device=None) -> dict:
    """Mean |sorter(x) - exact ranks| on `batches` x `batch_size` held-out sequences of each family.

    Seeded (`seed` + the family's position) and drawn apart from `train_sorter`'s streams.
    """
    params = list(sorter.parameters())
    device = params[0].device if params else torch.device(device or "cpu")
    was_training = sorter.training
    sorter.eval()
    out = {}
    for index, family in enumerate(families):
        g = make_generator(seed + index, device)  # a different draw per family, even for families of one law
        err = [(sorter(x) - r).abs().mean() for x, r in
               (sample_sequences(batch_size, seq_len, family, generator=g, device=device) for _ in range(batches))]
        out[family] = torch.stack(err).mean().item()
    sorter.train(was_training)
    return out


def train_sorter(name: str, seq_len: int, *, epochs: int = 400, steps_per_epoch: int = 1406, batch_size: int = 256,
                 lr: float = 1e-3, decay_every: int = 70, gamma: float = 0.5, family: str = "mixture",
                 val_batches: int = 16, seed: int = 0, device: str | torch.device = "auto",
                 checkpoint: str | Path | None = None, show_progress: bool = True, **sorter_kwargs):
    """Train the sorter `name` for sequences of length `seq_len` with the original recipe.

    Returns `(sorter, history)`: the best sorter by validation L1 (eval mode) and one record per
    epoch ``{"epoch", "train_l1", "val_l1", "lr", "seconds"}``. With `checkpoint`, the best sorter
    is written there (atomically) whenever the validation L1 improves; reload it with `load_sorter`.
    The defaults are the original's 400 epochs (hours on a GPU); pass small `epochs`/`steps_per_epoch`
    for a demonstration.
    """
    if name not in SORTERS or name == "exact":
        raise ValueError(f"cannot train sorter {name!r}; choose one of: {', '.join(n for n in SORTERS if n != 'exact')}")
    if min(epochs, steps_per_epoch, batch_size, val_batches, decay_every) < 1:
        raise ValueError("epochs, steps_per_epoch, batch_size, val_batches and decay_every must all be >= 1")
    device = resolve_device(device)
    with torch.random.fork_rng(devices=[]):  # seed the initialisation without touching the caller's RNG
        torch.manual_seed(seed)
        sorter = make_sorter(name, seq_len, **sorter_kwargs).to(device)
    optimizer = torch.optim.Adam(sorter.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=decay_every, gamma=gamma)
    train_gen = make_generator(seed, device)
    val_gen = make_generator(seed + 1_000_003, device)  # a separate stream: the validation set never overlaps
    val_set = [sample_sequences(batch_size, seq_len, family, generator=val_gen, device=device) for _ in range(val_batches)]
    recipe = {"steps_per_epoch": steps_per_epoch, "batch_size": batch_size, "lr": lr, "decay_every": decay_every,
              "gamma": gamma, "val_batches": val_batches, "device": str(device)}
    history, best, best_state = [], float("inf"), None
    bar = progress(range(1, epochs + 1), desc=f"train {name} (n={seq_len})", disable=None if show_progress else True)
    for epoch in bar:
        start, total = time.perf_counter(), 0.0
        sorter.train()
        for _ in range(steps_per_epoch):
            x, target = sample_sequences(batch_size, seq_len, family, generator=train_gen, device=device)
            loss = (sorter(x) - target).abs().mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item()
        lr_now = optimizer.param_groups[0]["lr"]
        scheduler.step()
        sorter.eval()
        with torch.no_grad():
            val = torch.stack([(sorter(x) - r).abs().mean() for x, r in val_set]).mean().item()
        record = {"epoch": epoch, "train_l1": total / steps_per_epoch, "val_l1": val, "lr": lr_now,
                  "seconds": time.perf_counter() - start}
        history.append(record)
        bar.set_postfix(train_l1=f"{record['train_l1']:.4f}", val_l1=f"{val:.4f}")
        if val < best:
            best = val
            best_state = {k: v.detach().clone() for k, v in sorter.state_dict().items()}
            if checkpoint is not None:
                save_sorter(checkpoint, sorter, name, sorter_kwargs,
                            meta={"epoch": epoch, "val_l1": val, "seed": seed, "family": family, "history": list(history),
                                  "recipe": recipe})
    sorter.load_state_dict(best_state)
    return sorter.eval(), history
