"""The library as a package: what the wheel ships, its metadata, the faiss routes, the pins, and the
Makefile / Colab entry points a new user meets first.

The full clean-install test (fresh venv outside the clone, one training step) is `.ci/clean_install`,
run by `make test-install` (part of `make test`); here the fast checks of the same promises.
"""
from __future__ import annotations

import hashlib
import importlib.util
import re
import shutil
import subprocess
import sys
import tomllib
import types
import zipfile
from email.parser import Parser
from pathlib import Path

import jupytext
import nbformat
import numpy as np
import pytest
import yaml

import rankdml
from rankdml import _faiss
from rankdml.metrics import retrieval_metrics

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]
FAISS_NAMES = set(_faiss.DISTRIBUTIONS)


def requirement_name(req: str) -> str:
    """'faiss-cpu>=1.9; extra == "cpu"' -> 'faiss-cpu' (PEP 503 normalised)."""
    return re.sub(r"[-_.]+", "-", re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", req).group(1)).lower()


def shipped_sources(dest: Path) -> Path:
    """Copy what a fresh clone holds (tracked + untracked, not ignored) to `dest`; an ignored data file is missed."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            check=True, capture_output=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        if (ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)
    return dest


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs a git checkout (the wheel is built from the files git would ship)")
    src = shipped_sources(tmp_path_factory.mktemp("src"))
    out = tmp_path_factory.mktemp("dist")
    # No build isolation: the test venv's setuptools (pinned >= the floor of build-system) builds it offline.
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", str(src),
                    "-w", str(out)], check=True, capture_output=True)
    (path,) = out.glob("rankdml-*.whl")
    return zipfile.ZipFile(path)


def wheel_metadata(wheel: zipfile.ZipFile):
    name = next(n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
    return Parser().parsestr(wheel.read(name).decode())


# ---------------------------------------------------------------- what the wheel ships

def test_wheel_ships_data_manifest_types_and_licences(wheel):
    names = set(wheel.namelist())
    for inside in ("rankdml/py.typed", "rankdml/data/files/__init__.py", "rankdml/data/files/emoji32.npz",
                   "rankdml/data/files/fashion28.npz", "rankdml/data/files/benchmarks.json",
                   "rankdml/data/files/EMOJI_LICENSE.md", "rankdml/data/files/FASHION_LICENSE.md",
                   "rankdml/sodeep/weights/gruc_n100.pt"):
        assert inside in names, f"the wheel lacks {inside}"
    licences = {Path(n).name for n in names if ".dist-info/licenses/" in n}
    assert {"LICENSE", "LICENSES.md", "EMOJI_LICENSE.md", "FASHION_LICENSE.md"} <= licences
    # The shipped data are the very bytes the loaders' checksums expect.
    from rankdml.data import embedded

    for filename, sha in ((embedded.EMOJI_FILE, embedded.EMOJI_SHA256),
                          (embedded.FASHION_FILE, embedded.FASHION_SHA256)):
        assert hashlib.sha256(wheel.read(f"rankdml/data/files/{filename}")).hexdigest() == sha
    # Nothing of the repository's scaffolding leaks into site-packages.
    assert not [n for n in names if n.split("/")[0] in {"tests", "book", "tools", "bench", "data", "lib"}]


def test_wheel_metadata(wheel):
    meta = wheel_metadata(wheel)
    assert meta["Version"] == rankdml.__version__
    assert meta["Requires-Python"] == ">=3.11"
    assert meta["License-Expression"] == "MIT AND Apache-2.0 AND CC-BY-4.0"
    classifiers = meta.get_all("Classifier")
    assert {f"Programming Language :: Python :: 3.{m}" for m in (11, 12, 13)} <= set(classifiers)
    assert "Typing :: Typed" in classifiers and not [c for c in classifiers if c.startswith("License ::")]
    assert meta.get_all("Project-URL") and meta["Author"]
    requires = meta.get_all("Requires-Dist")
    base = [r for r in requires if "extra ==" not in r]
    assert not FAISS_NAMES & {requirement_name(r) for r in base}, "faiss must not be a base dependency"
    for extra, expected in (("cpu", "faiss-cpu"), ("gpu", "faiss-gpu")):
        faiss_in_extra = {requirement_name(r) for r in requires if f'extra == "{extra}"' in r} & FAISS_NAMES
        assert faiss_in_extra == {expected}, f"[{extra}] must add exactly {expected}, adds {faiss_in_extra}"
    assert not [r for r in requires if "platform_system" in r or "sys_platform" in r], "no platform markers"


def test_version_has_one_source():
    assert "version" not in PROJECT and "version" in PROJECT["dynamic"]
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "rankdml.__version__"}
    assert re.fullmatch(r"\d+\.\d+\.\d+", rankdml.__version__)
    # setuptools must find it without importing torch: a literal assignment in __init__.py.
    assert re.search(r'^__version__ = "[^"]+"$', (ROOT / "lib/rankdml/__init__.py").read_text(), flags=re.M)


def test_build_requirement_supports_licence_metadata():
    (req,) = PYPROJECT["build-system"]["requires"]
    floor = tuple(int(x) for x in re.fullmatch(r"setuptools>=([\d.]+)", req).group(1).split("."))
    assert floor >= (77, 0, 3), "PEP 639 `license` expressions and `license-files` need setuptools >= 77.0.3"
    import setuptools
    assert tuple(int(x) for x in setuptools.__version__.split(".")[:2]) >= floor[:2]


# ---------------------------------------------------------------- pins, Python version, conda

def pinned() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            assert "==" in line, f"requirements.txt: {line!r} is not an exact pin"
            name, version = line.split("==")
            pins[requirement_name(name)] = version.strip()
    return pins


def test_requirements_pin_every_direct_dependency():
    pins = pinned()
    direct = {requirement_name(r) for r in PROJECT["dependencies"]}
    for extra in ("book", "test"):
        direct |= {requirement_name(r) for r in PROJECT["optional-dependencies"][extra]}
    direct.add("faiss-cpu")  # the CPU route of make setup
    assert not direct - set(pins), f"requirements.txt lacks exact pins for {sorted(direct - set(pins))}"
    assert len(FAISS_NAMES & set(pins)) == 1, "requirements.txt must pin exactly one faiss build"


def test_pins_satisfy_the_package_floors():
    from packaging.requirements import Requirement

    pins = pinned()
    for spec in PROJECT["dependencies"] + PROJECT["optional-dependencies"]["cpu"]:
        req = Requirement(spec)
        assert req.specifier.contains(pins[requirement_name(spec)]), f"{spec} excludes the pin {pins[req.name]}"


def test_python_311_everywhere():
    assert PROJECT["requires-python"] == ">=3.11"
    readme = (ROOT / "README.md").read_text()
    assert "3.11" in readme and "3.10" not in readme
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    python = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python="))
    assert tuple(int(x) for x in python.removeprefix("python=").split(".")) >= (3, 11)


def test_environment_yml_is_the_pinned_environment():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert env["name"] == "rankdml" and "pip" in env["dependencies"]
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert pip == ["-r requirements.txt", "-e ."]


# ---------------------------------------------------------------- faiss: one build, clear errors

@pytest.fixture
def faiss_world(monkeypatch):
    """Pretend a set of faiss distributions is installed and whether `import faiss` works."""
    def set_world(installed: dict[str, str], importable: bool):
        def version(name):
            if name in installed:
                return installed[name]
            raise _faiss.metadata.PackageNotFoundError(name)
        monkeypatch.setattr(_faiss.metadata, "version", version)
        if not importable:
            monkeypatch.setitem(sys.modules, "faiss", None)  # makes `import faiss` raise ImportError
        _faiss.import_faiss.cache_clear()
    yield set_world
    _faiss.import_faiss.cache_clear()


def test_real_environment_has_exactly_one_faiss():
    assert len(_faiss.installed_distributions()) == 1
    assert hasattr(_faiss.import_faiss(), "Kmeans")


def test_no_faiss_names_both_routes(faiss_world):
    faiss_world({}, importable=False)
    with pytest.raises(_faiss.FaissInstallError, match=r"pip install faiss-cpu.*pip install faiss-gpu.*nmi=False"):
        _faiss.import_faiss()


def test_two_faiss_builds_say_keep_one(faiss_world):
    faiss_world({"faiss-cpu": "1.15.1", "faiss-gpu": "1.15.1"}, importable=True)
    with pytest.raises(_faiss.FaissInstallError,
                       match=r"faiss-cpu==1\.15\.1, faiss-gpu==1\.15\.1.*pip uninstall -y faiss-cpu faiss-gpu"):
        _faiss.import_faiss()


def test_broken_faiss_build_says_reinstall_or_cpu(faiss_world):
    faiss_world({"faiss-gpu": "1.15.1"}, importable=False)
    with pytest.raises(_faiss.FaissInstallError, match=r"pip install --force-reinstall faiss-gpu.*faiss-cpu"):
        _faiss.import_faiss()


def test_broken_cpu_build_says_reinstall(faiss_world):
    faiss_world({"faiss-cpu": "1.15.1"}, importable=False)
    with pytest.raises(_faiss.FaissInstallError, match=r"pip install --force-reinstall faiss-cpu==1\.15\.1`$"):
        _faiss.import_faiss()


def test_foreign_faiss_module_is_refused(faiss_world, monkeypatch):
    faiss_world({"faiss-cpu": "1.15.1"}, importable=True)
    monkeypatch.setitem(sys.modules, "faiss", types.ModuleType("faiss"))
    with pytest.raises(_faiss.FaissInstallError, match="is not the faiss library"):
        _faiss.import_faiss()


def test_metrics_without_faiss(faiss_world):
    rng = np.random.default_rng(0)
    emb, labels = rng.normal(size=(40, 8)).astype(np.float32), np.repeat(np.arange(8), 5)
    expected = retrieval_metrics(emb, labels, ks=(1,), nmi=False)
    faiss_world({}, importable=False)
    # k-NN metrics fall back to torch; NMI needs faiss and says how to get it.
    assert retrieval_metrics(emb, labels, ks=(1,), nmi=False) == expected
    with pytest.raises(ImportError, match="pip install faiss-cpu"):
        retrieval_metrics(emb, labels, ks=(1,))


# ---------------------------------------------------------------- Makefile entry points

def make(*args: str) -> subprocess.CompletedProcess:
    if shutil.which("make") is None:
        pytest.skip("needs GNU make")
    return subprocess.run(["make", "-s", "-C", str(ROOT), *args], capture_output=True, text=True)


def test_make_alone_prints_help_with_every_target():
    result = make()
    assert result.returncode == 0, result.stderr
    listed = re.findall(r"^  (\S+)\s+\S", result.stdout, flags=re.M)
    makefile = (ROOT / "Makefile").read_text()
    targets = re.findall(r"^([a-z][a-z0-9-]*):(?!=)", makefile, flags=re.M)
    assert targets and sorted(listed) == sorted(set(targets)), f"make help lists {listed}, the Makefile has {targets}"
    assert "make html" in result.stdout and "make book" in result.stdout


def test_test_browser_needs_the_html_and_says_how_to_get_chromium():
    rule = re.search(r"^test-browser:([^#\n]*)", (ROOT / "Makefile").read_text(), flags=re.M).group(1).split()
    assert "html" in rule
    result = make("_chromium", "CHROMIUM=/nonexistent/chromium")
    assert result.returncode != 0
    assert "apt-get install -y chromium" in result.stderr and "CHROMIUM=/path" in result.stderr


def test_make_setup_refuses_old_python(tmp_path):
    fake = tmp_path / "python3.10"
    pretend = "import sys; sys.version_info = (3, 10, 12); $2"  # then the Makefile's check code
    fake.write_text(f'#!/bin/sh\nif [ "$1" = -c ]; then exec "{sys.executable}" -c "{pretend}"; fi\n')
    fake.chmod(0o755)
    result = make("setup", f"VENV={tmp_path / 'venv'}", f"PYTHON={fake}")
    assert result.returncode != 0 and "needs Python >= 3.11" in result.stderr and "3.10" in result.stderr
    assert not (tmp_path / "venv").exists()


# ---------------------------------------------------------------- Colab install cell pinned by the runner

def load_runner():
    spec = importlib.util.spec_from_file_location("run_chapter", ROOT / "tools" / "run_chapter.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_runner_records_the_executed_commit(tmp_path):
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs a git checkout")
    runner = load_runner()
    install_cell = next(c for c in jupytext.read(ROOT / "book" / "01_retrieval.md").cells if c.cell_type == "code")
    chapter = tmp_path / "99_tiny.md"
    header = (ROOT / "book" / "01_retrieval.md").read_text().split("\n---\n", 1)[0] + "\n---\n\n"  # jupytext + kernel
    chapter.write_text(header + "```{code-cell} ipython3\n:tags: [remove-cell]\n\n" + install_cell.source + "\n```\n\n"
                       "```{code-cell} ipython3\n:tags: [parameters]\n\noutput_dir = '.'\n```\n\n"
                       "```{code-cell} ipython3\nprint(6 * 7)\n```\n")
    target = runner.run_chapter(chapter, {}, tmp_path / "out")
    executed = nbformat.read(target, as_version=4)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    assert executed.metadata["rankdml"]["commit"] == head
    first = next(c for c in executed.cells if c.cell_type == "code")
    assert f'COMMIT = "{head}"' in first.source and 'COMMIT = "main"' not in first.source
    assert first.outputs == [], "the install cell must print nothing outside Colab"
    assert "42" in executed.cells[-1].outputs[0]["text"]
    assert 'COMMIT = "main"' in chapter.read_text(), "the source keeps the placeholder"


def test_runner_refuses_a_cell_without_placeholder():
    runner = load_runner()
    nb = jupytext.reads("```{code-cell} ipython3\nprint(1)\n```\n", fmt="md:myst")
    with pytest.raises(SystemExit, match="COMMIT"):
        runner.pin_install_cell(nb, "0" * 40, False)


def test_runner_refuses_to_store_a_notebook_of_an_uncommitted_library(tmp_path, monkeypatch):
    runner = load_runner()
    monkeypatch.setattr(runner, "executed_commit", lambda: ("0" * 40, True))
    chapter = tmp_path / "99_tiny.md"
    chapter.write_text((ROOT / "book" / "01_retrieval.md").read_text())
    with pytest.raises(SystemExit, match="commit the library first"):
        runner.run_chapter(chapter, {}, None)
    assert not chapter.with_suffix(".ipynb").exists()
