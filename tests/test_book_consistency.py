"""The chapters' sources, stored notebooks and configuration agree with one another.

- every `book/NN_name.md` has an executed `book/NN_name.ipynb` whose code is the source's code
  (otherwise its outputs are stale);
- every stored notebook holds outputs (nbval alone would pass a notebook that was never run);
- the Colab badge and the Colab install cell of every chapter point to the repository of `_config.yml`;
- every chapter has a papermill `parameters` cell with the common parameters and saves its results.
"""
from __future__ import annotations

import re
from pathlib import Path

import jupytext
import nbformat
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "book").glob("[0-9][0-9]_*.md"))
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())
REPO_URL = CONFIG["repository"]["url"].rstrip("/")
BRANCH = CONFIG["repository"].get("branch", "main")
COMMON_PARAMETERS = {"dataset", "epochs", "num_classes_per_batch", "samples_per_class", "embedding_dim", "seed",
                     "device", "output_dir"}


def code_cells(nb) -> list[str]:
    return [c.source.strip() for c in nb.cells
            if c.cell_type == "code" and "injected-parameters" not in c.metadata.get("tags", [])]


def test_there_are_chapters():
    assert CHAPTERS, "no chapter sources book/NN_name.md found"


@pytest.mark.parametrize("source", CHAPTERS, ids=lambda p: p.stem)
def test_stored_notebook_matches_source(source):
    stored = source.with_suffix(".ipynb")
    assert stored.exists(), f"{stored.name} is missing: run `make notebooks` (or tools/run_chapter.py {source.name})"
    ours, theirs = code_cells(jupytext.read(source)), code_cells(nbformat.read(stored, as_version=4))
    assert ours == theirs, f"{stored.name} is stale: its code differs from {source.name}; re-execute the chapter"
    md_source = [c.source.strip() for c in jupytext.read(source).cells if c.cell_type == "markdown"]
    md_stored = [c.source.strip() for c in nbformat.read(stored, as_version=4).cells if c.cell_type == "markdown"]
    assert md_source == md_stored, f"{stored.name}'s text differs from {source.name}; re-execute the chapter"


@pytest.mark.parametrize("source", CHAPTERS, ids=lambda p: p.stem)
def test_stored_notebook_has_outputs(source):
    nb = nbformat.read(source.with_suffix(".ipynb"), as_version=4)
    cells = [c for c in nb.cells if c.cell_type == "code"]
    not_run = [i for i, c in enumerate(cells) if c.execution_count is None]
    assert not not_run, f"code cells {not_run} of {source.stem}.ipynb were never executed"
    assert sum(len(c.outputs) for c in cells) > 0, f"{source.stem}.ipynb holds no outputs"
    images = sum("image/png" in o.get("data", {}) for c in cells for o in c.outputs)
    assert images > 0, f"{source.stem}.ipynb holds no figure"
    errors = [o for c in cells for o in c.outputs if o.output_type == "error"]
    assert not errors, f"{source.stem}.ipynb stored an error: {errors[0].get('ename')}"


@pytest.mark.parametrize("source", CHAPTERS, ids=lambda p: p.stem)
def test_colab_badge_and_install_cell_point_to_the_repository(source):
    text = source.read_text()
    owner_repo = REPO_URL.removeprefix("https://github.com/")
    badge = f"https://colab.research.google.com/github/{owner_repo}/blob/{BRANCH}/book/{source.stem}.ipynb"
    links = re.findall(r"https://colab\.research\.google\.com/github/[^\s)\"']+", text)
    assert links == [badge], f"{source.name}: Colab badge should be exactly {badge}, found {links}"
    first = jupytext.read(source).cells
    first_code = next(c for c in first if c.cell_type == "code")
    assert "remove-cell" in first_code.metadata.get("tags", []), "the Colab set-up cell must be tagged remove-cell"
    assert "google.colab" in first_code.source, "the first code cell must install the library on Colab only"
    urls = re.findall(r"https://github\.com/[^\s\"']+", first_code.source)
    assert urls and all(u.rstrip("/").removesuffix(".git") == REPO_URL for u in urls), \
        f"{source.name}: the install cell must clone {REPO_URL}, found {urls}"


@pytest.mark.parametrize("source", CHAPTERS, ids=lambda p: p.stem)
def test_parameters_cell_and_results(source):
    nb = jupytext.read(source)
    params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1, f"{source.name} needs exactly one cell tagged `parameters`"
    names = set(re.findall(r"^(\w+)\s*[:=]", params[0].source, flags=re.M))
    assert COMMON_PARAMETERS <= names, f"{source.name}: parameters cell lacks {COMMON_PARAMETERS - names}"
    assert re.search(r'device\s*(:[^=]*)?=\s*"auto"', params[0].source), "the default device must be \"auto\""
    last_code = [c for c in nb.cells if c.cell_type == "code"][-1]
    assert "save_results(" in last_code.source, f"{source.name} must end by writing its results with save_results"


def test_toc_lists_every_chapter():
    toc = (ROOT / "_toc.yml").read_text()
    for source in CHAPTERS:
        assert f"book/{source.stem}" in toc, f"{source.stem} is not in _toc.yml"
