"""Self-contained sorter checkpoints: atomic write-then-rename, `weights_only=True` loading.

Kept small and isolated so that it can be switched to the shared `rankdml.checkpoint` module
once that exists. A checkpoint is a plain dict of strings, numbers and tensors:
``{"format", "sorter", "seq_len", "kwargs", "state_dict", "meta"}``.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

FORMAT = "rankdml.sodeep.sorter/1"


def save_checkpoint(path: str | Path, payload: dict) -> Path:
    """Write `payload` to `path` atomically: a temporary file in the same folder, then `os.replace`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        torch.save(payload, tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; a checkpoint is as readable as any file
        os.replace(tmp, path)  # atomic on POSIX: a reader never sees half a file
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def read_checkpoint(path: str | Path, map_location="cpu") -> dict:
    """Read a sorter checkpoint with `torch.load(weights_only=True)` and check its format."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"no sorter checkpoint at {path}; train one with `python -m rankdml.sodeep.train`")
    payload = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path} is not a rankdml sorter checkpoint (expected format {FORMAT!r})")
    return payload
