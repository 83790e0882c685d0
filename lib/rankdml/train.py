"""One training loop for every chapter: `fit(model, loss, loader, epochs=...)`.

The loss is any module called as `loss(embeddings, labels)` (or, with a miner,
`loss(embeddings, labels, indices=miner(embeddings, labels))`). Evaluation on named splits every
`evaluate_every` epochs goes into a `History`; a checkpoint after every epoch lets an interrupted
run resume and finish with the same numbers as an uninterrupted one.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from rankdml.metrics import evaluate
from rankdml.runtime import progress as progress_bar, resolve_device

EvalSet = Dataset | tuple[Dataset, Dataset]  # a leave-one-out split, or (query, gallery)


@dataclass
class History:
    """Per-epoch records: {"epoch", "loss", "seconds", "<split>/<metric>", ...}; epoch 0 = before training."""

    records: list[dict[str, float]] = field(default_factory=list)

    def __getitem__(self, key: str) -> list[float]:
        """The values of `key` over the epochs that have it, e.g. `history["val/recall@1"]`."""
        return [r[key] for r in self.records if key in r]

    def epochs(self, key: str) -> list[int]:
        return [int(r["epoch"]) for r in self.records if key in r]

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


def _evaluate_all(model: nn.Module, eval_sets: Mapping[str, EvalSet], ks: Sequence[int], device: torch.device,
                  batch_size: int, nmi: bool) -> dict[str, float]:
    out = {}
    for split, data in eval_sets.items():
        query, gallery = data if isinstance(data, tuple) else (data, None)
        metrics = evaluate(model, query, ks=ks, gallery=gallery, batch_size=batch_size, device=device, nmi=nmi)
        out.update({f"{split}/{name}": value for name, value in metrics.items()})
    return out


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)  # atomic: an interrupted save never leaves a half-written checkpoint


def fit(model: nn.Module, loss: nn.Module, loader: DataLoader, *, epochs: int,
        optimizer: torch.optim.Optimizer | None = None, lr: float = 1e-3, weight_decay: float = 0.0,
        scheduler: Any = None, miner: Callable | None = None,
        eval_sets: Mapping[str, EvalSet] | None = None, evaluate_every: int = 1, evaluate_before: bool = True,
        ks: Sequence[int] = (1, 2, 4, 8), nmi: bool = True, eval_batch_size: int = 256,
        device: str | torch.device = "auto", checkpoint_dir: str | Path | None = None, resume: bool = True,
        callbacks: Sequence[Callable[[int, dict, nn.Module], None]] = (), progress: bool = True) -> History:
    """Train `model` with `loss` on the batches of `loader` for `epochs` epochs.

    Args:
        model: maps images (B, C, H, W) to embeddings (B, D).
        loss: `loss(embeddings (B, D), labels (B,)) -> scalar`; its own parameters (a learnable
            margin, class proxies) are trained too.
        loader: yields (images, labels); usually `DataLoader(ds, batch_sampler=PKSampler(...))`.
        optimizer: default Adam(lr, weight_decay) over the parameters of model and loss.
        scheduler: stepped once per epoch (`scheduler.step()`).
        miner: optional `miner(embeddings, labels) -> indices`, passed to the loss as `indices=`.
        eval_sets: {"val": dataset, "test": dataset, "inshop": (query, gallery)}; each is
            evaluated every `evaluate_every` epochs (and at epoch 0 if `evaluate_before`).
        checkpoint_dir: if given, `last.pt` is written there after every epoch and, with
            `resume=True`, training continues from it.
        callbacks: called as `callback(epoch, record, model)` after every epoch.

    Returns: the `History`, one record per epoch (epoch 0 holds the metrics before training).
    """
    if epochs < 0 or evaluate_every < 1:
        raise ValueError(f"need epochs >= 0 and evaluate_every >= 1, got {epochs} and {evaluate_every}")
    if len(loader) == 0:
        raise ValueError("the training loader yields no batch; check the batch size / sampler against the data")
    device = resolve_device(device)
    model.to(device)
    loss.to(device)
    if optimizer is None:
        optimizer = torch.optim.Adam([*model.parameters(), *loss.parameters()], lr=lr, weight_decay=weight_decay)
    eval_sets = dict(eval_sets or {})
    history, start = History(), 1
    ckpt = Path(checkpoint_dir) / "last.pt" if checkpoint_dir is not None else None
    if ckpt is not None:
        ckpt.parent.mkdir(parents=True, exist_ok=True)
        if resume and ckpt.exists():
            # Loaded on the CPU: RNG states must stay CPU ByteTensors; load_state_dict moves the rest.
            state = torch.load(ckpt, map_location="cpu", weights_only=False)
            model.load_state_dict(state["model"])
            loss.load_state_dict(state["loss"])
            optimizer.load_state_dict(state["optimizer"])
            if scheduler is not None and state["scheduler"] is not None:
                scheduler.load_state_dict(state["scheduler"])
            torch.set_rng_state(state["torch_rng"])
            if state.get("cuda_rng") is not None and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(state["cuda_rng"])
            np.random.set_state(state["numpy_rng"])
            history, start = History(state["history"]), state["epoch"] + 1

    if start == 1 and evaluate_before and eval_sets:
        history.records.append({"epoch": 0, **_evaluate_all(model, eval_sets, ks, device, eval_batch_size, nmi)})

    sampler = getattr(loader, "batch_sampler", None)
    bars = None if progress else True  # None: on unless TQDM_DISABLE=1
    for epoch in progress_bar(range(start, epochs + 1), desc="epochs", initial=start - 1, total=epochs, disable=bars):
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch - 1)  # the batches of an epoch depend on the epoch, also after a resume
        model.train()
        loss.train()
        total, batches, tic = 0.0, 0, time.perf_counter()
        for images, labels in progress_bar(loader, desc=f"epoch {epoch}", leave=False, disable=bars):
            images, labels = images.to(device), labels.to(device)
            embeddings = model(images)
            value = loss(embeddings, labels) if miner is None else loss(embeddings, labels,
                                                                       indices=miner(embeddings, labels))
            if not torch.isfinite(value):
                raise FloatingPointError(f"the loss became {value.item()} at epoch {epoch}, batch {batches}; "
                                         f"lower the learning rate or check the loss's inputs")
            optimizer.zero_grad(set_to_none=True)
            value.backward()
            optimizer.step()
            total += value.item()
            batches += 1
        record = {"epoch": epoch, "loss": total / batches, "seconds": time.perf_counter() - tic}
        if scheduler is not None:
            scheduler.step()
        if eval_sets and (epoch % evaluate_every == 0 or epoch == epochs):
            record.update(_evaluate_all(model, eval_sets, ks, device, eval_batch_size, nmi))
        history.records.append(record)
        for callback in callbacks:
            callback(epoch, record, model)
        if ckpt is not None:
            _save_checkpoint(ckpt, {
                "epoch": epoch, "model": model.state_dict(), "loss": loss.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict() if scheduler is not None else None,
                "torch_rng": torch.get_rng_state(), "numpy_rng": np.random.get_state(),
                "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
                "history": history.records})
    return history
