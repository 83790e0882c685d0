"""Execute a chapter's jupytext source with papermill and write a byte-stable executed notebook.

    python tools/run_chapter.py book/01_retrieval.md                         # -> book/01_retrieval.ipynb
    python tools/run_chapter.py book/01_retrieval.md -p epochs 20 --out-dir outputs
                                                # -> outputs/01_retrieval/01_retrieval.ipynb + metrics.json

Without parameters the stored notebook next to the source is (re)written. With --out-dir the run
goes into its own folder (the chapter's `output_dir` parameter points there too) and the stored
notebook is left alone. Values of -p are parsed as YAML (`-p epochs 20` gives an int).

The commit the chapter is executed at is recorded: in the notebook's metadata (`rankdml.commit`)
and in its Colab install cell, whose placeholder `COMMIT = "main"` (kept in the .md) becomes
`COMMIT = "<sha>"`, so Colab installs exactly the library that produced the stored outputs. The
stored notebook is therefore only written from a committed library (lib/, pyproject.toml); pass
--allow-dirty to run anyway (the notebook is then marked `rankdml.library_modified`).
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

import jupytext
import nbformat
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lib"))

from rankdml.reproducible import environment  # noqa: E402
from rankdml.sweep.runner import execute_chapter, stabilise  # noqa: E402

#: The line of the Colab install cell (the first code cell) that names the commit to install.
#: The .md keeps the placeholder; executed notebooks hold the 40-hex commit. tests/test_book_consistency.py
#: allows exactly this difference between a chapter's .md and its stored .ipynb.
COMMIT_LINE = re.compile(r'^(?P<indent>[ \t]*)COMMIT = "(?P<commit>[^"]*)"(?P<comment>[ \t]*#.*)?$', re.M)
PLACEHOLDER = "main"
#: What the install cell installs: a change here without a commit would not reach Colab.
LIBRARY_PATHS = ("lib", "pyproject.toml")


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, check=True, capture_output=True, text=True).stdout.strip()


def executed_commit() -> tuple[str | None, bool]:
    """(HEAD commit or None outside a git checkout, whether the library differs from it)."""
    try:
        commit = _git("rev-parse", "--verify", "HEAD")
        modified = bool(_git("status", "--porcelain", "--", *LIBRARY_PATHS))
    except (OSError, subprocess.CalledProcessError):
        return None, True
    return commit, modified


def pin_install_cell(nb: nbformat.NotebookNode, commit: str, library_modified: bool) -> nbformat.NotebookNode:
    """Write `commit` into the Colab install cell (the first code cell) and the notebook's metadata."""
    cell = next(c for c in nb.cells if c.cell_type == "code")
    matches = COMMIT_LINE.findall(cell.source)
    if len(matches) != 1:
        raise SystemExit(f"the first code cell (Colab install cell) must hold exactly one line "
                         f'COMMIT = "{PLACEHOLDER}", found {len(matches)}')
    cell.source = COMMIT_LINE.sub(lambda m: f'{m["indent"]}COMMIT = "{commit}"{m["comment"] or ""}', cell.source)
    nb.metadata["rankdml"] = {"commit": commit, **({"library_modified": True} if library_modified else {})}
    return nb


def run_chapter(source: Path, parameters: dict, out_dir: Path | None, allow_dirty: bool = False) -> Path:
    nb = jupytext.read(source)
    commit, modified = executed_commit()
    if modified:
        why = ("this is not a git checkout" if commit is None else
               f"{' or '.join(LIBRARY_PATHS)} differ from the commit {commit[:12]} "
               f"(`git status -- {' '.join(LIBRARY_PATHS)}`)")
        if out_dir is None and not allow_dirty:
            raise SystemExit(f"{why}: commit the library first, so that the stored notebook's Colab cell installs "
                             f"the code that produced its outputs (or pass --allow-dirty)")
        print(f"warning: {why}; the notebook's Colab cell will not install exactly this library", file=sys.stderr)
    nb = pin_install_cell(nb, commit or PLACEHOLDER, modified)
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
    parser.add_argument("--allow-dirty", action="store_true",
                        help="write the stored notebook even though lib/ or pyproject.toml has uncommitted changes")
    args = parser.parse_args(argv)
    if not args.source.exists():
        raise SystemExit(f"no chapter source {args.source}")
    parameters = {name: yaml.safe_load(value) for name, value in args.parameter}
    target = run_chapter(args.source, parameters, args.out_dir, args.allow_dirty)
    print(f"wrote {target.relative_to(ROOT) if target.is_relative_to(ROOT) else target}", file=sys.stderr)


if __name__ == "__main__":
    main()
