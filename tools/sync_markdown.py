"""Copy a chapter's markdown (prose) cells from its source into its stored notebook, outputs untouched.

    python tools/sync_markdown.py book/02_pairs_triplets.md [...]

For a change of prose only: the stored notebook's code cells, outputs and metadata stay exactly as
executed. Refused when the code cells differ (then the chapter must be re-executed, e.g. with
tools/run_chapter.py) or when the cell structure differs.
"""
from __future__ import annotations

import sys
from pathlib import Path

import jupytext
import nbformat


def sync(source: Path) -> int:
    stored_path = source.with_suffix(".ipynb")
    expected, stored = jupytext.read(source), nbformat.read(stored_path, as_version=4)
    kinds = lambda nb: [c.cell_type for c in nb.cells if "injected-parameters" not in c.metadata.get("tags", [])]  # noqa: E731
    if kinds(expected) != kinds(stored):
        raise SystemExit(f"{source.name}: the cells differ in number or kind from {stored_path.name}; re-execute it")
    cells = [c for c in stored.cells if "injected-parameters" not in c.metadata.get("tags", [])]
    changed = 0
    for new, old in zip(expected.cells, cells):
        if new.cell_type == "code":
            if new.source.strip() != old.source.strip() and "COMMIT = " not in old.source:
                raise SystemExit(f"{source.name}: a code cell changed; re-execute the chapter:\n{new.source[:200]}")
        elif new.source != old.source:
            old.source, changed = new.source, changed + 1
    nbformat.write(stored, stored_path)
    print(f"{stored_path.name}: {changed} markdown cells updated")
    return changed


if __name__ == "__main__":
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    for arg in sys.argv[1:]:
        sync(Path(arg))
