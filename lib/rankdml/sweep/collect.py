"""Read a sweep's folder back: `collect` (one row per run + mean ± sd over seeds) and `status`."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, NamedTuple

import yaml

from rankdml.sweep import store
from rankdml.sweep.spec import SEED, canonical_json


class SweepResults(NamedTuple):
    """`runs`: one row per run of the sweep; `summary`: one row per grid point, mean and sd over seeds."""
    runs: Any       # pandas.DataFrame
    summary: Any    # pandas.DataFrame


def sweep_folder(name_or_path: str | Path, runs_dir: str | Path | None = None) -> Path:
    """The folder of a sweep given by its name (under `runs_dir`), its folder, or its YAML file."""
    path = Path(name_or_path)
    if path.is_dir() and (path / store.SWEEP_FILE).is_file():
        return path
    if path.suffix in (".yaml", ".yml") and path.is_file():
        spec = yaml.safe_load(path.read_text())
        if not isinstance(spec, dict) or "name" not in spec:
            raise ValueError(f"{path} has no `name`; it is not a sweep file")
        name = str(spec["name"])
    else:
        name = str(name_or_path)
    root = Path(runs_dir or store.default_runs_dir())
    folder = root / name
    if not (folder / store.SWEEP_FILE).is_file():
        known = sorted(p.parent.name for p in root.glob(f"*/{store.SWEEP_FILE}")) if root.is_dir() else []
        raise ValueError(f"no sweep {name!r} in {root} (sweeps there: {known or 'none'}); run it first with "
                         f"`python -m rankdml.sweep run SWEEP.yaml`, or give --runs-dir")
    return folder


def status(name_or_path: str | Path, runs_dir: str | Path | None = None) -> dict[str, list[str]]:
    """Run ids of the sweep by state: {"finished": [...], "failed": [...], "pending": [...]}."""
    folder = sweep_folder(name_or_path, runs_dir)
    states: dict[str, list[str]] = {store.FINISHED: [], store.FAILED: [], store.PENDING: []}
    for entry in store.read_index(folder)["runs"]:
        states[store.state(folder, entry["run_id"])].append(entry["run_id"])
    return states


def flatten(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"triplet": {"recall@1": 0.5}} -> {"triplet/recall@1": 0.5}."""
    flat: dict[str, Any] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}/"))
        else:
            flat[name] = value
    return flat


def _cell(value: Any) -> Any:
    """Lists and mappings become their canonical JSON text, so they can be grouped on and written to CSV."""
    return canonical_json({"v": value})[5:-1] if isinstance(value, (list, dict)) else value


def collect(name_or_path: str | Path, runs_dir: str | Path | None = None) -> SweepResults:
    """Every run of the sweep as a DataFrame row, and the mean ± sd of every metric per grid point.

    Rows (in sweep order): run_id, status, the grid parameters, seed, the fixed parameters, every
    metric of the chapter's metrics.json (nested keys joined by "/"; its "selection" beside its
    "metrics", see `rankdml.book.save_results`), seconds, host, error. Pending
    runs have status "pending" and no metrics. The summary (`summarise`) uses finished runs only.
    """
    import pandas as pd

    folder = sweep_folder(name_or_path, runs_dir)
    index = store.read_index(folder)
    grid = list(index.get("grid", {}))
    rows, metric_names = [], []
    for entry in index["runs"]:
        run_id, parameters = entry["run_id"], entry["parameters"]
        record = store.read_record(folder, run_id)
        row: dict[str, Any] = {"run_id": run_id, "status": store.PENDING if record is None else record["status"]}
        ordered = [*grid, SEED, *(k for k in parameters if k not in grid and k != SEED)]
        row.update({k: _cell(parameters.get(k)) for k in ordered})
        metrics_path = folder / run_id / store.METRICS_FILE
        if record is not None and record["status"] == store.FINISHED and metrics_path.is_file():
            written = json.loads(metrics_path.read_text())
            values = flatten(written.get("metrics", written))
            values.update(flatten(written.get("selection", {})) if "metrics" in written else {})
            for key, value in values.items():
                column = key if key not in row else f"metrics/{key}"
                row[column] = _cell(value)
                if column not in metric_names:
                    metric_names.append(column)
        row["seconds"] = None if record is None else record.get("seconds")
        row["host"] = None if record is None else record.get("machine", {}).get("hostname")
        row["error"] = None if record is None else record.get("error")
        rows.append(row)
    runs = pd.DataFrame(rows)
    tail = ["seconds", "host", "error"]
    runs = runs[[c for c in runs.columns if c not in tail and c not in metric_names] + metric_names + tail]
    runs.attrs.update(grid=grid, metrics=metric_names, sweep=index["name"])
    return SweepResults(runs, summarise(runs, grid, metric_names))


def summarise(runs, grid: list[str], metrics: list[str]):
    """Per grid point: `seeds` (finished runs) and `<metric> mean`, `<metric> sd` (sample sd, n - 1).

    runs: a `collect` table; grid: the columns that define a grid point (none: one row over all runs).
    The sd of a single seed is NaN (there is no spread to estimate).
    """
    import pandas as pd

    done = runs[runs["status"] == store.FINISHED]
    numeric = [m for m in [*metrics, "seconds"] if m in done and pd.api.types.is_numeric_dtype(done[m])]
    keys = grid or ["_all"]
    frame = done.assign(_all="all") if not grid else done
    if frame.empty:
        return pd.DataFrame(columns=[*keys, "seeds", *(f"{m} {s}" for m in numeric for s in ("mean", "sd"))])
    grouped = frame.groupby(keys, sort=False, dropna=False)
    summary = grouped.size().rename("seeds").to_frame()
    for m in numeric:
        summary[f"{m} mean"] = grouped[m].mean()
        summary[f"{m} sd"] = grouped[m].std(ddof=1)
    summary = summary.reset_index()
    return summary.drop(columns="_all") if not grid else summary


def mean_sd(summary, metrics: list[str], digits: int = 3):
    """The summary's metrics as "mean ± sd" text (for a chapter's table), one column per metric."""
    table = summary.drop(columns=[c for c in summary.columns if c.endswith((" mean", " sd"))])
    for m in metrics:
        mean, sd = summary[f"{m} mean"], summary[f"{m} sd"]
        table[m] = [f"{a:.{digits}f} ± {b:.{digits}f}" if b == b else f"{a:.{digits}f}" for a, b in zip(mean, sd)]
    return table
