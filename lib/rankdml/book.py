"""Helpers for the book's chapters only: show library code, print tables, draw retrievals, save results.

Nothing happens at import. Tables are returned as plain text so that nbval compares every digit
a chapter prints.
"""
from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch


def show_source(obj: Any):
    """Display the source of a library object as a highlighted code block (the library is the source of truth)."""
    from IPython.display import Markdown

    return Markdown(f"```python\n{inspect.getsource(obj).rstrip()}\n```")


def metrics_table(rows: Mapping[str, Mapping[str, float]], keys: Sequence[str], *, digits: int = 3,
                  percent: Sequence[str] = ()) -> str:
    """A fixed-width text table: one row per entry of `rows`, one column per key (missing -> "-").

    Keys listed in `percent` are shown x100 with one decimal less, as papers print Recall@K.
    """
    def cell(key: str, value: float | None) -> str:
        if value is None:
            return "-"
        if isinstance(value, str):
            return value
        return f"{100 * value:.{max(digits - 2, 1)}f}" if key in percent else f"{value:.{digits}f}"

    body = [[name, *(cell(k, row.get(k)) for k in keys)] for name, row in rows.items()]
    header = ["", *keys]
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    line = lambda r: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))  # noqa: E731
    return "\n".join([line(header), "  ".join("-" * w for w in widths), *map(line, body)])


def rounded(metrics: Mapping[str, float], digits: int = 4) -> dict[str, float]:
    """Metrics rounded to what is stable across machines (float sums differ in the last bits)."""
    return {k: round(float(v), digits) for k, v in metrics.items()}


def save_results(output_dir: str | Path, parameters: Mapping[str, Any], metrics: Mapping[str, Any],
                 name: str = "metrics.json", *, selection: Mapping[str, Any] | None = None) -> Path:
    """Write {"parameters": ..., "metrics": ...} as JSON into `output_dir` (for sweeps to collect).

    `metrics` are the stored run's test metrics, what the reproduction check compares. `selection`
    (optional, same row names) is what a sweep chooses on and the check does not compare: the chosen
    epoch, validation scores, a learning-rate factor; `rankdml.sweep.collect` reads it beside `metrics`.
    """
    path = Path(output_dir)
    path.mkdir(parents=True, exist_ok=True)
    target = path / name
    record = {"parameters": dict(parameters), "metrics": dict(metrics)}
    if selection is not None:
        record["selection"] = dict(selection)
    target.write_text(json.dumps(record, indent=1, sort_keys=True, default=str) + "\n")
    return target


def to_display(image: torch.Tensor | np.ndarray) -> np.ndarray:
    """A (C, H, W) uint8 tensor or (H, W, C) array -> (H, W, 3) uint8 for `imshow`."""
    array = image.numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if array.ndim == 3 and array.shape[0] in (1, 3) and array.shape[-1] not in (1, 3):
        array = array.transpose(1, 2, 0)
    if array.shape[-1] == 1:
        array = array.repeat(3, axis=-1)
    return array


def plot_retrievals(images: torch.Tensor, labels: np.ndarray, neighbours: np.ndarray, queries: Sequence[int],
                    *, title: str = "", scale: float = 1.1):
    """Each row: a query, then its nearest neighbours framed green (same class) or red (other class).

    images: (N, C, H, W) uint8; labels: (N,); neighbours: (N, k) indices, the query itself excluded.
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    k = neighbours.shape[1]
    fig, axes = plt.subplots(len(queries), k + 1, figsize=(scale * (k + 1), scale * len(queries)), squeeze=False)
    for row, q in enumerate(queries):
        for col, index in enumerate([q, *neighbours[q]]):
            ax = axes[row, col]
            ax.imshow(to_display(images[index]))
            ax.set_xticks([])
            ax.set_yticks([])
            if col == 0:
                colour, width = "black", 2
            else:
                colour, width = ("tab:green" if labels[index] == labels[q] else "tab:red"), 4
            h, w = images[index].shape[-2:]
            ax.add_patch(Rectangle((-0.5, -0.5), w, h, fill=False, edgecolor=colour, linewidth=width))
            for spine in ax.spines.values():
                spine.set_visible(False)
        axes[row, 0].set_ylabel(f"query {row + 1}", fontsize=8)
    axes[0, 0].set_title("query", fontsize=9)
    for col in range(1, k + 1):
        axes[0, col].set_title(f"#{col}", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


# --- Reproduction check: the stored metrics against a run on this machine -------------------------

#: Where the stored notebooks' metrics and the tolerances live, relative to the chapters' folder.
RESULTS_DIR = Path(__file__).resolve().parents[2] / "book" / "results"


def _results_dir(results_dir: str | Path | None) -> Path:
    if results_dir is not None:
        return Path(results_dir)
    local = Path("results")  # a chapter runs with its own folder (book/) as working directory
    return local if (local / "tolerances.json").exists() else RESULTS_DIR


def stored_metrics(chapter: str, results_dir: str | Path | None = None) -> dict[str, dict[str, float]]:
    """The metrics the stored notebook of `chapter` (e.g. "01_retrieval") printed: {row: {metric: value}}."""
    path = _results_dir(results_dir) / f"{chapter}.json"
    if not path.exists():
        raise FileNotFoundError(f"no stored metrics {path}; they are written by `make notebooks`")
    return json.loads(path.read_text())["metrics"]


def tolerances(chapter: str, results_dir: str | Path | None = None) -> dict[str, float]:
    """The allowed |now - stored| per metric of `chapter`, measured over seeds (see tolerances.json).

    A chapter whose seeds were not run yet has none: `{}` is returned, so every metric must then
    match exactly, and `check_reproduction` says so.
    """
    path = _results_dir(results_dir) / "tolerances.json"
    return json.loads(path.read_text())["chapters"].get(chapter, {})


def row_key(name: str) -> str:
    """A results row's name without the epoch it names: "classifier (epoch 19, chosen on val)" ->
    "classifier (chosen on val)", so that runs which chose another epoch still line up."""
    import re

    return re.sub(r"\s*\bepoch \d+,?\s*", " ", name).replace("( ", "(").strip()


def compare_metrics(stored: Mapping[str, Mapping[str, float]], now: Mapping[str, Mapping[str, float]],
                    tolerance: Mapping[str, float]) -> list[dict[str, Any]]:
    """One row per (row, metric) of `stored`: stored, now, difference, tolerance and a verdict.

    Rows are matched by `row_key`. A metric without a tolerance must match exactly; a row or
    metric missing from `now` fails.
    """
    rows = []
    now_by_key = {row_key(name): values for name, values in now.items()}
    for name, metrics in stored.items():
        for metric, value in metrics.items():
            got = now_by_key.get(row_key(name), {}).get(metric)
            tol = float(tolerance.get(metric, 0.0))
            diff = None if got is None else float(got) - float(value)
            ok = diff is not None and abs(diff) <= tol + 1e-12
            rows.append({"row": name, "metric": metric, "stored": float(value), "now": got, "difference": diff,
                         "tolerance": tol, "verdict": "ok" if ok else ("missing" if got is None else "DIFFERS")})
    return rows


def reproduction_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """The rows of `compare_metrics` as a fixed-width text table, with a closing count."""
    def fmt(v):
        return "-" if v is None else f"{v:+.4f}" if isinstance(v, float) and v < 0 else f"{v:.4f}"

    header = ["row", "metric", "stored", "now", "difference", "tolerance", "verdict"]
    body = [[r["row"], r["metric"], fmt(r["stored"]), fmt(r["now"]), "-" if r["difference"] is None
             else f"{r['difference']:+.4f}", f"{r['tolerance']:.4f}", r["verdict"]] for r in rows]
    widths = [max(len(x[i]) for x in [header, *body]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(x, widths)))
             for x in [header, *body]]
    failed = sum(r["verdict"] != "ok" for r in rows)
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append(f"{len(rows) - failed} of {len(rows)} metrics within tolerance" + ("" if not failed else
                 f"; {failed} outside it"))
    return "\n".join(lines)


def check_reproduction(chapter: str, metrics: Mapping[str, Mapping[str, float]], device: Any = "cpu",
                       parameters: Mapping[str, Any] | None = None,
                       results_dir: str | Path | None = None) -> list[dict[str, Any]] | None:
    """The chapter's last cell: where bit-identity is not promised, compare with the stored metrics.

    On an x86-64 CPU in the reproducible mode nbval already checks every printed digit, so nothing is
    printed and None is returned. Elsewhere (a GPU, Colab, an ARM laptop) the table of
    `compare_metrics` is printed and its rows returned, provided the run used the stored run's
    `parameters` (a run with other parameters is not a reproduction: it says so and returns None).
    """
    from rankdml import reproducible

    if reproducible.bitwise_platform(device):
        return None
    if parameters is not None:
        path = _results_dir(results_dir) / f"{chapter}.json"
        stored = json.loads(path.read_text())["parameters"] if path.exists() else {}
        changed = sorted(k for k in parameters if k in stored and json.dumps(parameters[k], default=str)
                         != json.dumps(stored[k], default=str))
        if changed:
            print(f"not a reproduction of the stored run: {', '.join(changed)} differ; nothing to compare")
            return None
    tolerance = tolerances(chapter, results_dir)
    if not tolerance:
        print(f"no tolerances measured for {chapter} yet (its seeds were not run): any difference is flagged")
    rows = compare_metrics(stored_metrics(chapter, results_dir), metrics, tolerance)
    print(reproduction_table(rows))
    return rows
