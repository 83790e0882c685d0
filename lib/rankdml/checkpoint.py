"""Checkpoints for every training loop of the library: atomic writes, safe loads, RNG states as tensors.

A checkpoint is a plain dict of tensors, numbers, strings, lists, tuples and dicts, written with
`save_checkpoint` (to a temporary file, then renamed, so an interruption never leaves half a file)
and read with `load_checkpoint`, which uses `torch.load(weights_only=True)`: loading a checkpoint or
a weight file from elsewhere cannot run code. The random number generators are stored as tensors
and ints (`rng_state`), so no pickled object (NumPy's state tuple, Python's `random` state) is
needed and nothing has to be allow-listed.

`config_mismatch(saved, current)` compares the descriptions of two runs (`describe` builds them),
so a loop can refuse to resume a checkpoint written by a different configuration.
"""
from __future__ import annotations

import os
import pickle
import random
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

__all__ = ["save_checkpoint", "load_checkpoint", "rng_state", "set_rng_state", "describe", "config_mismatch",
           "stateful_parts"]


def save_checkpoint(path: str | Path, state: Mapping[str, Any]) -> Path:
    """Write `state` to `path` atomically (a temporary file in the same folder, then `os.replace`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(dict(state), tmp)
    os.replace(tmp, path)  # atomic on POSIX and Windows: readers see the old or the new file, never half of one
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint with `torch.load(weights_only=True)`; only tensors and plain containers load.

    Loaded on the CPU by default: RNG states must be CPU ByteTensors, and `load_state_dict` of a
    model or optimizer moves the rest to where its parameters are.
    """
    path = Path(path)
    if not path.exists():
        raise ValueError(f"no checkpoint at {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise ValueError(f"{path} holds objects other than tensors, numbers, strings and containers, which "
                         f"weights_only loading refuses (they could run code). Store such state as tensors or "
                         f"plain values in state_dict(), or allow-list a trusted type with "
                         f"torch.serialization.add_safe_globals. Detail: {err}") from err


# --------------------------------------------------------------------------------------------------
# random number generators
# --------------------------------------------------------------------------------------------------

def rng_state() -> dict[str, Any]:
    """The torch (CPU and every CUDA device), NumPy (legacy global) and Python `random` states, as tensors/ints."""
    version, py_state, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"kind": str(kind), "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": {"version": int(version), "state": torch.tensor(py_state, dtype=torch.int64),
                   "gauss_next": gauss},
    }
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore the generators saved by `rng_state`. CUDA states are restored when CUDA is available."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        if len(state["cuda"]) != torch.cuda.device_count():
            raise ValueError(f"the checkpoint holds the RNG states of {len(state['cuda'])} CUDA devices, this "
                             f"machine has {torch.cuda.device_count()}; resume with the same visible devices")
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["state"].tolist()), p["gauss_next"]))


# --------------------------------------------------------------------------------------------------
# what a run is made of
# --------------------------------------------------------------------------------------------------

def describe(obj: Any) -> str:
    """A short, stable description of a run's component: a module's repr, else its class and simple attributes.

    Used to detect a changed configuration; it leaves out what changes while training (a sampler's
    epoch, a generator's state).
    """
    if obj is None:
        return "None"
    if isinstance(obj, torch.nn.Module):
        return repr(obj)
    if type(obj).__repr__ is not object.__repr__:
        return repr(obj)
    simple = {k: v for k, v in sorted(vars(obj).items()) if not k.startswith("_") and k != "epoch"
              and isinstance(v, (bool, int, float, str, type(None)))} if hasattr(obj, "__dict__") else {}
    return f"{type(obj).__name__}({', '.join(f'{k}={v!r}' for k, v in simple.items())})"


def config_mismatch(saved: Mapping[str, str], current: Mapping[str, str]) -> list[str]:
    """The lines 'key: checkpoint has X, this run has Y' for every entry that differs (empty when equal)."""
    lines = []
    for key in sorted(set(saved) | set(current)):
        a, b = saved.get(key, "<absent>"), current.get(key, "<absent>")
        if a != b:
            short = lambda s: s if len(s) <= 300 else s[:297] + "..."  # noqa: E731  (model reprs are long)
            lines.append(f"{key}: checkpoint has {short(str(a))}, this run has {short(str(b))}")
    return lines


def stateful_parts(module: torch.nn.Module, prefix: str) -> dict[str, Any]:
    """Non-module objects held by `module` or its sub-modules that carry a `state_dict` (e.g. a loss's miner).

    `module.state_dict()` holds parameters and buffers only; a miner kept as an attribute (like
    `MarginLoss(sampler=DistanceWeightedSampler(...))`) has its own generator, which a checkpoint
    must save too. Returns {"<prefix>.<submodule>.<attribute>": object}.
    """
    found = {}
    for name, sub in module.named_modules():
        for attr, value in vars(sub).items():
            if isinstance(value, (torch.nn.Module, torch.Tensor)) or attr.startswith("__"):
                continue
            if callable(getattr(value, "state_dict", None)) and callable(getattr(value, "load_state_dict", None)):
                found[".".join(p for p in (prefix, name, attr) if p)] = value
    return found
