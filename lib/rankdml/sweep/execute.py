"""Run a sweep's pending and failed runs on Dask: a `LocalCluster` here, or the user's scheduler.

Each run is one Dask task (`runner.execute_run`) that executes the chapter in a kernel of its own; the
client writes each result as it arrives (`store.write_run`), so killing the sweep loses only the runs
in flight. Local workers have one thread each (`threads_per_worker=1`, `processes=True`): one run per
worker at a time, and each kernel pinned to the reproducible mode's thread count.
"""
from __future__ import annotations

import hashlib
import sys
import uuid
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import jupytext
import nbformat

from rankdml.runtime import progress as progress_bar
from rankdml.sweep import store
from rankdml.sweep.runner import execute_run
from rankdml.sweep.spec import Sweep, load_sweep


@contextmanager
def dask_client(*, scheduler: str | None = None, workers: int = 2) -> Iterator[Any]:
    """A `distributed.Client`: of the scheduler at `scheduler` (e.g. "tcp://host:8786"), else of a new
    `LocalCluster` with `workers` single-threaded worker processes; closed on exit."""
    from distributed import Client, LocalCluster

    if scheduler is not None:
        client = Client(scheduler, timeout="60s")
        crowded = {w: n for w, n in client.nthreads().items() if n > 1}
        if crowded:
            warnings.warn(f"{len(crowded)} Dask workers have several threads, so they run several chapters at "
                          f"once and the CPUs are shared between them; start workers with `--nthreads 1` for "
                          f"timings comparable between runs", stacklevel=3)
        try:
            yield client
        finally:
            client.close()
        return
    if workers < 1:
        raise ValueError(f"workers: expected at least 1 worker process, got {workers}")
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        yield client


def _chapter_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run_sweep(sweep: Sweep | str | Path, *, runs_dir: str | Path | None = None, workers: int = 2,
              scheduler: str | None = None, client: Any = None, timeout: float | None = None,
              progress: bool = True) -> dict[str, int]:
    """Execute every run of `sweep` (a `Sweep` or a YAML path) that has not finished, and record each.

    Finished runs are skipped, failed and pending ones (re)run. Results go to `<runs_dir>/<name>/`
    (default `runs/` of the repository). Give `client` to use an existing Dask client, `scheduler` to
    connect to one, or neither for a `LocalCluster` of `workers` processes. `timeout` (seconds per
    run) overrides the sweep file's. Returns counts: total, skipped (already finished), executed,
    finished, failed (of those executed).
    """
    if not isinstance(sweep, Sweep):
        sweep = load_sweep(sweep)
    folder = Path(runs_dir or store.default_runs_dir()) / sweep.name
    timeout = sweep.timeout if timeout is None else timeout
    if timeout is not None and timeout <= 0:
        raise ValueError(f"timeout: expected a positive number of seconds per run, got {timeout!r}")
    runs = sweep.runs()
    notebook_json = nbformat.writes(jupytext.read(sweep.chapter))
    digest = _chapter_digest(sweep.chapter)
    counts = {"total": len(runs), "skipped": 0, "executed": 0, "finished": 0, "failed": 0}
    previous = store.read_index(folder)
    if previous is not None and Path(previous["chapter"]).name != sweep.chapter.name:
        raise ValueError(f"{folder} holds runs of {Path(previous['chapter']).name}, not {sweep.chapter.name}: give "
                         f"this sweep another name, or another --runs-dir")
    with store.locked(folder):
        store.write_index(folder, {"name": sweep.name, "chapter": str(sweep.chapter), "chapter_sha256": digest,
                                   "parameters": sweep.parameters, "grid": sweep.grid, "seeds": list(sweep.seeds),
                                   "runs": [{"run_id": r.run_id, "parameters": r.parameters} for r in runs]})
        todo = [r for r in runs if store.state(folder, r.run_id) != store.FINISHED]
        counts["skipped"] = len(runs) - len(todo)
        if not todo:
            return counts
        with (_borrowed(client) if client is not None else dask_client(scheduler=scheduler, workers=workers)) as dask:
            _execute(dask, sweep, todo, folder, notebook_json, digest, timeout, progress, counts)
    return counts


@contextmanager
def _borrowed(client: Any) -> Iterator[Any]:
    yield client


def _execute(client: Any, sweep: Sweep, todo: list, folder: Path, notebook_json: str, digest: str,
             timeout: float | None, progress: bool, counts: dict[str, int]) -> None:
    from distributed import as_completed

    batch = uuid.uuid4().hex[:8]  # task keys unique per call: a re-run must not meet an old result
    futures = {client.submit(execute_run, notebook_json, sweep.chapter.stem, str(sweep.chapter.parent),
                             run.parameters, timeout, key=f"rankdml-run-{run.run_id}-{batch}", pure=False): run
               for run in todo}
    bar = progress_bar(total=len(todo), desc=f"sweep {sweep.name}", unit="run", disable=None if progress else True,
                       file=sys.stderr)
    try:
        for future in as_completed(list(futures)):
            run = futures.pop(future)
            try:
                result = future.result()
            except Exception as err:  # noqa: BLE001 (the worker itself died: the run failed, the others go on)
                import traceback

                result = {"status": store.FAILED, "error": f"the Dask worker failed: {type(err).__name__}: {err}",
                          "traceback": "".join(traceback.format_exception(err)), "seconds": None, "files": {}}
            files = result.pop("files")
            record = {**result, "run_id": run.run_id, "sweep": sweep.name, "chapter": str(sweep.chapter),
                      "chapter_sha256": digest, "parameters": run.parameters, "grid_point": run.grid_point,
                      "seed": run.seed, "timeout": timeout}
            store.write_run(folder, run.run_id, record, files)
            counts["executed"] += 1
            counts[store.FINISHED if record["status"] == store.FINISHED else store.FAILED] += 1
            if record["status"] != store.FINISHED:
                bar.write(f"failed: {run.run_id}: {record['error']}", file=sys.stderr)
            bar.set_postfix(failed=counts["failed"], refresh=False)
            bar.update(1)
    finally:
        if futures:
            client.cancel(list(futures))
        bar.close()
