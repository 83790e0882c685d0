"""The chapters' sources, stored notebooks and configuration agree with one another.

- every `book/NN_name.md` has an executed `book/NN_name.ipynb` whose code is the source's code
  (otherwise its outputs are stale), but for one allowed difference: the Colab install cell's
  `COMMIT = "main"` placeholder holds, in the stored notebook, the commit it was executed at
  (written by tools/run_chapter.py, also kept in the notebook's metadata);
- every stored notebook holds outputs (nbval alone would pass a notebook that was never run);
- the Colab badge and the Colab install cell of every chapter point to the repository of `_config.yml`;
- every chapter has a papermill `parameters` cell with the common parameters and saves its results.
"""
from __future__ import annotations

import importlib.util
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
_spec = importlib.util.spec_from_file_location("run_chapter", ROOT / "tools" / "run_chapter.py")
run_chapter = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(run_chapter)
COMMON_PARAMETERS = {"dataset", "epochs", "num_classes_per_batch", "samples_per_class", "embedding_dim", "seed",
                     "device", "output_dir"}


def code_cells(nb) -> list[str]:
    return [c.source.strip() for c in nb.cells
            if c.cell_type == "code" and "injected-parameters" not in c.metadata.get("tags", [])]


def executed_commit_of(nb) -> str | None:
    return nb.metadata.get("rankdml", {}).get("commit")


def test_there_are_chapters():
    assert CHAPTERS, "no chapter sources book/NN_name.md found"


@pytest.mark.parametrize("source", CHAPTERS, ids=lambda p: p.stem)
def test_stored_notebook_matches_source(source):
    stored = source.with_suffix(".ipynb")
    assert stored.exists(), f"{stored.name} is missing: run `make notebooks` (or tools/run_chapter.py {source.name})"
    executed = nbformat.read(stored, as_version=4)
    commit = executed_commit_of(executed)
    # The one allowed difference: the install cell names the executed commit instead of the placeholder.
    expected = jupytext.read(source)
    if commit is not None:
        run_chapter.pin_install_cell(expected, commit, library_modified=False)
    ours, theirs = code_cells(expected), code_cells(executed)
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
def test_install_cell_pins_the_executed_commit(source):
    first = next(c for c in jupytext.read(source).cells if c.cell_type == "code").source
    lines = run_chapter.COMMIT_LINE.findall(first)
    assert [m[1] for m in lines] == [run_chapter.PLACEHOLDER], \
        f'{source.name}: the install cell needs exactly one line COMMIT = "{run_chapter.PLACEHOLDER}" (the placeholder)'
    assert "@{COMMIT}" in first and "%pip install" in first, f"{source.name}: the install cell must install @{{COMMIT}}"
    executed = nbformat.read(source.with_suffix(".ipynb"), as_version=4)
    commit = executed_commit_of(executed)
    assert commit is not None and re.fullmatch(r"[0-9a-f]{40}", commit), \
        f"{source.stem}.ipynb records no executed commit (metadata rankdml.commit): " \
        f"re-execute it with tools/run_chapter.py"
    assert not executed.metadata["rankdml"].get("library_modified"), \
        f"{source.stem}.ipynb was executed with uncommitted library changes: commit them and re-execute it"
    stored_first = next(c for c in executed.cells if c.cell_type == "code")
    assert f'COMMIT = "{commit}"' in stored_first.source and not stored_first.outputs, \
        f"{source.stem}.ipynb: its install cell must pin {commit} and print nothing"


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
