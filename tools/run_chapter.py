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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lib"))

from rankdml.reproducible import environment  # noqa: E402
from rankdml.sweep.runner import execute_chapter, stabilise  # noqa: E402



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
    os.environ.update(environment())  # the reproducible numeric mode, in force before the kernel starts
    executed = execute_chapter(nb, parameters, cwd=source.parent)
    nbformat.write(stabilise(executed), target)
    if out_dir is None:
        store_metrics(source)
    return target


def store_metrics(source: Path) -> Path:
    """Copy the metrics the stored notebook wrote to book/results/<chapter>.json (for check-reproduction)."""
    nb = jupytext.read(source)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    namespace: dict = {}
    exec(cell.source, namespace)  # the parameters cell holds plain assignments only
    written = source.parent / namespace["output_dir"] / "metrics.json"
    target = source.parent / "results" / f"{source.stem}.json"
    target.parent.mkdir(exist_ok=True)
    target.write_text(written.read_text())
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
