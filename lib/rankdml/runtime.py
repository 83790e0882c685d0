"""Reproducibility and device choice: `seed_everything(seed)` and `resolve_device("auto")`."""
from __future__ import annotations

import os
import random

import numpy as np
import torch

#: Thread count fixed by `seed_everything`: float sums depend on how work is split between threads.
DEFAULT_THREADS = 2


def seed_everything(seed: int, *, threads: int | None = DEFAULT_THREADS, deterministic: bool = True,
                    reproducible: bool = True) -> torch.Generator:
    """Seed Python, NumPy and torch, make torch deterministic and fix the CPU thread count.

    Printed numbers are identical between runs on one machine only when the thread count is fixed,
    because float reductions are split differently over a different number of threads. With
    `reproducible=True` (the default) it also turns on the reproducible numeric mode
    (`rankdml.reproducible`), so CPU results are the same on every x86-64 CPU with AVX2; it costs
    some speed on the CPU (see the README) and changes nothing on a GPU. `reproducible=False` keeps
    the fastest CPU kernels (results then depend on the CPU generation).
    Returns a seeded `torch.Generator` for data loaders and samplers.
    """
    if reproducible:
        from rankdml import reproducible as mode

        mode.enable(threads or mode.THREADS)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if threads is not None:
        torch.set_num_threads(threads)
    if deterministic:
        # cuBLAS needs a fixed workspace to be deterministic (must be set before the first CUDA call).
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    return torch.Generator().manual_seed(seed)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """`"auto"` gives CUDA when a GPU is visible and the CPU otherwise; anything else is passed to torch."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as err:
        raise ValueError(f"unknown device {device!r}; use 'auto', 'cpu' or 'cuda[:N]'") from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} was asked for but CUDA is not available here; use device='auto'")
    return dev


def progress(iterable=None, **kwargs):
    """A tqdm progress bar (a widget in notebooks) that `TQDM_DISABLE=1` turns off everywhere.

    tqdm's notebook bar ignores that variable, so it is read here: the book's stored notebooks are
    executed with it set, and must hold no bars (they differ between runs).
    """
    from tqdm.auto import tqdm

    if kwargs.get("disable") is None:
        kwargs["disable"] = os.environ.get("TQDM_DISABLE", "").lower() in ("1", "true", "yes")
    return tqdm(iterable, **kwargs)
