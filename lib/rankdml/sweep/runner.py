"""One papermill execution of a chapter: `execute_chapter` (shared with tools/run_chapter.py) and `execute_run`.

`execute_run` is what a Dask worker calls for one run of a sweep. It executes the chapter in a
temporary folder of the worker's machine, in the reproducible numeric mode, under a per-run timeout,
and returns everything the run produced (files as bytes, status, error, time, machine). It never
raises, so one failed run cannot stop a sweep; the client alone writes the results (see `store`), so
workers need no shared file system.
"""
from __future__ import annotations

import os
import platform
import re
import shutil
import socket
import sys
import tempfile
import threading
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

import nbformat

from rankdml import reproducible

#: Name of the stream log (the kernel's stdout and stderr) inside a run's folder.
LOG_NAME = "log.txt"
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def stabilise(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Drop what changes between identical runs: random cell ids and papermill's timestamps."""
    nb.metadata.pop("papermill", None)
    nb.metadata.pop("widgets", None)  # progress-bar widget state: differs per run, and its JS is not offline
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"cell-{i:03d}"
        cell.metadata.pop("papermill", None)
        cell.metadata.pop("execution", None)
    return nb


def kernel_environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a run's kernel: this process's, plus the reproducible mode and no progress bars.

    MPLBACKEND is dropped because a non-inline backend removes every figure from the executed notebook.
    """
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    env.update(reproducible.environment())
    env["TQDM_DISABLE"] = "1"
    env.update(extra or {})
    return env


def _kernel_manager_class(env: Mapping[str, str], started: list, output=None):
    """A kernel manager that starts its kernel with `env`, its process's stdout/stderr into `output` (a
    file, None: inherited), and records itself in `started` (for the timeout)."""
    from jupyter_client.manager import AsyncKernelManager

    class EnvironmentKernelManager(AsyncKernelManager):
        async def start_kernel(self, **kw):
            kw["env"] = dict(env)
            if output is not None:  # the kernel's own messages and native crashes, beside the cells' output
                kw["stdout"] = kw["stderr"] = output
            started.append(self)
            return await super().start_kernel(**kw)

    return EnvironmentKernelManager


def _kill_kernel(started: list) -> None:
    """Kill the kernel and its children (data-loader workers); nbclient then raises DeadKernelError."""
    import psutil

    for km in started:
        pid = getattr(km.provisioner, "pid", None)
        if pid is None:
            continue
        try:
            parent = psutil.Process(pid)
            for proc in [*parent.children(recursive=True), parent]:
                proc.kill()
        except psutil.NoSuchProcess:
            pass


class RunTimeout(RuntimeError):
    """The run took longer than its timeout; its kernel was killed."""


def execute_chapter(nb: nbformat.NotebookNode, parameters: Mapping[str, Any] | None, *, cwd: str | Path,
                    output_path: str | Path | None = None, env: Mapping[str, str] | None = None,
                    timeout: float | None = None, log: Path | None = None) -> nbformat.NotebookNode:
    """Execute a notebook (e.g. `jupytext.read(chapter)`) with papermill in `cwd` and return it executed.

    `parameters` are injected after the `parameters` cell. `env` replaces the kernel's environment
    (None: the kernel inherits this process's). After `timeout` seconds the kernel is killed and
    `RunTimeout` raised. `log` receives the cells' stdout/stderr as they arrive and the kernel
    process's own output. On a failing cell papermill raises `PapermillExecutionError` after
    writing the notebook to `output_path` (if given).
    """
    import papermill as pm

    started: list = []
    extra: dict[str, Any] = {}
    stream = open(log, "a", encoding="utf-8") if log is not None else None  # noqa: SIM115 (closed below)
    if env is not None or timeout is not None or log is not None:
        extra["kernel_manager_class"] = _kernel_manager_class(os.environ if env is None else env, started, stream)
    done, timed_out = threading.Event(), threading.Event()
    if timeout is not None:
        def watchdog():
            if done.wait(timeout):
                return
            timed_out.set()
            while not done.is_set():  # also a kernel that was still starting when the time ran out
                _kill_kernel(started)
                done.wait(0.5)

        threading.Thread(target=watchdog, name="rankdml-run-timeout", daemon=True).start()
    try:
        return pm.execute_notebook(nb, None if output_path is None else str(output_path),
                                   parameters=dict(parameters) if parameters else None, cwd=str(cwd),
                                   kernel_name="python3", progress_bar=False, log_output=False,
                                   stdout_file=stream, stderr_file=stream, **extra)
    except Exception as err:
        if timed_out.is_set():
            raise RunTimeout(f"timed out after {timeout:g} s (the per-run timeout); its kernel was killed") from err
        raise
    finally:
        done.set()
        if stream is not None:
            stream.close()


def machine() -> dict[str, Any]:
    """Where a run executed: host, OS, CPU, Python and torch versions, GPU, Dask worker."""
    info: dict[str, Any] = {"hostname": socket.gethostname(), "platform": platform.platform(),
                            "processor": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                            "python": sys.version.split()[0]}
    try:
        import torch

        info["torch"] = torch.__version__
        info["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except Exception:  # noqa: BLE001 (a description of the machine must not fail the run)
        pass
    try:
        from distributed import get_worker

        info["dask_worker"] = get_worker().address
    except (ImportError, ValueError):
        pass
    return info


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _describe(err: BaseException) -> tuple[str, str]:
    """(one-line error, traceback text) of a failed run; a failing cell gives the kernel's own traceback."""
    from papermill.exceptions import PapermillExecutionError

    if isinstance(err, PapermillExecutionError):
        return (f"cell {err.exec_count}: {err.ename}: {err.evalue}",
                _ANSI.sub("", "\n".join(err.traceback)))
    return f"{type(err).__name__}: {err}", "".join(traceback.format_exception(err))


def execute_run(notebook_json: str, stem: str, cwd: str, parameters: Mapping[str, Any],
                timeout: float | None = None) -> dict[str, Any]:
    """Run one sweep run on this machine and return its record and files (never raises).

    notebook_json: the chapter as notebook JSON (the client's version of it); stem: the executed
    notebook's file name without `.ipynb`; cwd: the chapter's folder (must exist here too);
    parameters: injected into the chapter (`output_dir` is set here, to a temporary folder).
    Returns {"status": "finished" | "failed", "error", "traceback", "seconds", "started", "ended",
    "machine", "files": {relative path: bytes}}.
    """
    os.environ.setdefault("JUPYTER_PREFER_ENV_PATH", "1")  # the kernel of this environment, not a user's
    record: dict[str, Any] = {"status": "failed", "error": None, "traceback": None, "started": _now(),
                              "machine": machine()}
    files: dict[str, bytes] = {}
    scratch = Path(tempfile.mkdtemp(prefix="rankdml-run-"))
    output_dir, notebook_path, log = scratch / "output", scratch / f"{stem}.ipynb", scratch / LOG_NAME
    clock = time.perf_counter()
    try:
        if not Path(cwd).is_dir():
            raise FileNotFoundError(f"the chapter's folder {cwd} does not exist on {socket.gethostname()}; "
                                    f"every worker needs the repository at the same path")
        output_dir.mkdir()
        nb = nbformat.reads(notebook_json, as_version=4)
        try:
            executed = execute_chapter(nb, {**parameters, "output_dir": str(output_dir)}, cwd=cwd,
                                       output_path=notebook_path, env=kernel_environment(), timeout=timeout, log=log)
            nbformat.write(stabilise(executed), notebook_path)
        finally:
            if notebook_path.exists():  # a failed run keeps its notebook, with the error in it
                nbformat.write(stabilise(nbformat.read(notebook_path, as_version=4)), notebook_path)
        if not (output_dir / "metrics.json").is_file():
            raise FileNotFoundError("the chapter ran but wrote no metrics.json into output_dir; end it with "
                                    "rankdml.book.save_results(output_dir, parameters, metrics)")
        record["status"] = "finished"
    except Exception as err:  # noqa: BLE001 (recorded, not raised: the other runs go on)
        record["error"], record["traceback"] = _describe(err)
    finally:
        record["seconds"] = round(time.perf_counter() - clock, 3)
        record["ended"] = _now()
        for path in sorted(output_dir.rglob("*")) if output_dir.is_dir() else []:
            if path.is_file():
                files[path.relative_to(output_dir).as_posix()] = path.read_bytes()
        for path in (notebook_path, log):
            if path.is_file():
                files[path.name] = path.read_bytes()
        shutil.rmtree(scratch, ignore_errors=True)
    record["files"] = files
    return record
