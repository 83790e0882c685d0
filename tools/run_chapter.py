"""Execute a chapter's jupytext source with papermill and write a byte-stable executed notebook.

    python tools/run_chapter.py book/01_retrieval.md                         # -> book/01_retrieval.ipynb
    python tools/run_chapter.py book/01_retrieval.md -p epochs 20 --out-dir outputs
                                                # -> outputs/01_retrieval/01_retrieval.ipynb + metrics.json

Without parameters the stored notebook next to the source is (re)written. With --out-dir the run
goes into its own folder (the chapter's `output_dir` parameter points there too) and the stored
notebook is left alone. Values of -p are parsed as YAML (`-p epochs 20` gives an int).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import jupytext
import nbformat
import yaml

from rankdml.sweep.runner import execute_chapter

ROOT = Path(__file__).resolve().parents[1]


def stabilise(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Drop what changes between identical runs: random cell ids and papermill's timestamps."""
    nb.metadata.pop("papermill", None)
    nb.metadata.pop("widgets", None)  # progress-bar widget state: differs per run, and its JS is not offline
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"cell-{i:03d}"
        cell.metadata.pop("papermill", None)
        cell.metadata.pop("execution", None)
    return nb


def run_chapter(source: Path, parameters: dict, out_dir: Path | None) -> Path:
    nb = jupytext.read(source)
    if out_dir is None:
        if parameters:
            raise SystemExit("parameters change the results: give --out-dir so the stored notebook stays as it is")
        target = source.with_suffix(".ipynb")
    else:
        run_dir = out_dir / source.stem
        run_dir.mkdir(parents=True, exist_ok=True)
        parameters = {"output_dir": str(run_dir.resolve()), **parameters}
        target = run_dir / f"{source.stem}.ipynb"
    os.environ.setdefault("TQDM_DISABLE", "1")
    executed = execute_chapter(nb, parameters, cwd=source.parent)
    nbformat.write(stabilise(executed), target)
    return target


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path, help="book/NN_name.md")
    parser.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"))
    parser.add_argument("--out-dir", type=Path, default=None, help="write the run here instead of book/")
    args = parser.parse_args(argv)
    if not args.source.exists():
        raise SystemExit(f"no chapter source {args.source}")
    parameters = {name: yaml.safe_load(value) for name, value in args.parameter}
    target = run_chapter(args.source, parameters, args.out_dir)
    print(f"wrote {target.relative_to(ROOT) if target.is_relative_to(ROOT) else target}", file=sys.stderr)


if __name__ == "__main__":
    main()
