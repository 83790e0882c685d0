"""Where a sweep lives on disk, written so that a kill at any moment loses no finished run.

    runs/<name>/sweep.json          the sweep: chapter, grid names, every run's id and parameters
    runs/<name>/<run-id>/run.json   status ("finished" | "failed"), error, traceback, seconds, machine
    runs/<name>/<run-id>/...        parameters.json, metrics.json, the executed notebook, log.txt
    runs/<name>/.partial/           runs being written (deleted at the next start)

A run's folder is assembled in `.partial/` and renamed into place in one step, so a folder named by
a run id is always complete; a run without one is pending.
"""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping

RUN_FILE, PARAMETERS_FILE, METRICS_FILE, SWEEP_FILE = "run.json", "parameters.json", "metrics.json", "sweep.json"
PARTIAL, LOCK = ".partial", ".lock"
FINISHED, FAILED, PENDING = "finished", "failed", "pending"
_REPOSITORY = Path(__file__).resolve().parents[3]


def default_runs_dir() -> Path:
    """`runs/` of the repository when the library runs from a checkout, else `runs/` in the current folder."""
    if (_REPOSITORY / "pyproject.toml").is_file() and (_REPOSITORY / "book").is_dir():
        return _REPOSITORY / "runs"
    return Path.cwd() / "runs"


def _write_json(path: Path, value: Any) -> None:
    """Write JSON next to `path` and rename it over `path` (readers never see half a file)."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    tmp.write_text(json.dumps(value, indent=1, sort_keys=True, default=str) + "\n")
    os.replace(tmp, path)


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def write_index(folder: Path, index: Mapping[str, Any]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    _write_json(folder / SWEEP_FILE, dict(index))


def read_index(folder: Path) -> dict[str, Any] | None:
    path = folder / SWEEP_FILE
    return read_json(path) if path.is_file() else None


def read_record(folder: Path, run_id: str) -> dict[str, Any] | None:
    """The run's run.json, or None while it is pending."""
    path = folder / run_id / RUN_FILE
    return read_json(path) if path.is_file() else None


def state(folder: Path, run_id: str) -> str:
    record = read_record(folder, run_id)
    return PENDING if record is None else record["status"]


def recorded_run_ids(folder: Path) -> list[str]:
    """Ids of every run folder present (finished or failed), also of runs no longer in sweep.json."""
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith(".") and (p / RUN_FILE).is_file())


def write_run(folder: Path, run_id: str, record: Mapping[str, Any], files: Mapping[str, bytes]) -> Path:
    """Write a run's files and record into `.partial/`, then rename the folder into `<folder>/<run_id>`.

    A previous folder of the same run (a failed attempt) is moved aside first and deleted after; a
    kill between the two renames leaves the run pending, never half-written.
    """
    partial = folder / PARTIAL
    staging = partial / f"{run_id}.{uuid.uuid4().hex}"
    staging.mkdir(parents=True)
    for name, data in files.items():
        if Path(name).is_absolute() or ".." in Path(name).parts:
            raise ValueError(f"run {run_id}: refusing to write {name!r} outside its folder")
        target = staging / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    _write_json(staging / PARAMETERS_FILE, record["parameters"])
    _write_json(staging / RUN_FILE, dict(record))  # last: a folder with run.json is complete
    final = folder / run_id
    old = None
    if final.exists():
        old = partial / f"{run_id}.old.{uuid.uuid4().hex}"
        os.rename(final, old)
    os.rename(staging, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return final


@contextmanager
def locked(folder: Path) -> Iterator[None]:
    """Hold the sweep folder for one `run` at a time (the lock goes with the process, also when killed)."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / LOCK, "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RuntimeError(f"another sweep is running in {folder}; wait for it or stop it first") from None
        shutil.rmtree(folder / PARTIAL, ignore_errors=True)  # left by a killed sweep; nothing in it counts
        try:
            yield
        finally:
            shutil.rmtree(folder / PARTIAL, ignore_errors=True)
