"""A sweep file: which chapter, its fixed parameters, a grid and seeds; expanded into runs with stable ids.

    name: ch2-seeds
    chapter: book/02_pairs_triplets.md      # looked up from the sweep file's folder upwards
    parameters: {epochs: 20}                # fixed for every run
    grid: {lr: [1.0e-3, 3.0e-4]}            # Cartesian product over these lists
    seeds: [0, 1, 2]                        # or a count: `seeds: 3` means 0, 1, 2
    timeout: 3600                           # optional, seconds per run

Every combination (grid point x seed) is one `Run`. Its id is a readable slug of the grid values and the
seed followed by a hash of the canonical JSON of all its parameters, so the same combination always
lands in the same folder and any change of a parameter gives a new one. Everything is checked against
the chapter's papermill `parameters` cell before anything runs.
"""
from __future__ import annotations

import ast
import hashlib
import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import jupytext
import yaml

#: Parameters the sweep sets itself: `seed` from `seeds`, `output_dir` to the run's folder.
SEED, OUTPUT_DIR = "seed", "output_dir"
_KEYS = {"name", "chapter", "parameters", "grid", "seeds", "timeout", "description"}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_HASH_CHARS = 10
_SLUG_CHARS = 48


@dataclass(frozen=True)
class Run:
    """One execution of the chapter: `parameters` (fixed + grid point + seed) as injected by papermill."""
    run_id: str
    parameters: dict[str, Any]
    grid_point: dict[str, Any]
    seed: int


@dataclass(frozen=True)
class Sweep:
    """A validated sweep file; `runs()` gives its runs in grid order, seeds innermost."""
    name: str
    chapter: Path
    parameters: dict[str, Any] = field(default_factory=dict)
    grid: dict[str, list] = field(default_factory=dict)
    seeds: tuple[int, ...] = (0,)
    timeout: float | None = None
    description: str = ""

    def runs(self) -> list[Run]:
        runs = []
        for values in itertools.product(*self.grid.values()):
            point = dict(zip(self.grid, values))
            for seed in self.seeds:
                parameters = {**self.parameters, **point, SEED: seed}
                runs.append(Run(run_id(parameters, slug_of={**point, SEED: seed}), parameters, point, seed))
        return runs


def canonical_json(parameters: Mapping[str, Any]) -> str:
    """Key-sorted, whitespace-free JSON: the form hashed into run ids (raises on NaN, which has no JSON form)."""
    return json.dumps(dict(parameters), sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def run_id(parameters: Mapping[str, Any], slug_of: Mapping[str, Any] | None = None) -> str:
    """`<slug>-<hash>`: the slug shows `slug_of` (by default every parameter) for people, the hash decides.

    The hash is the first 10 hex digits of SHA-256 over `canonical_json(parameters)`; the slug keeps
    letters, digits and `.=-` and is cut to 48 characters, so it never makes two ids equal or unequal.
    """
    digest = hashlib.sha256(canonical_json(parameters).encode()).hexdigest()[:_HASH_CHARS]
    shown = parameters if slug_of is None else slug_of
    text = "_".join(f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in shown.items())
    slug = re.sub(r"[^A-Za-z0-9.=-]+", "_", text).strip("_")[:_SLUG_CHARS].rstrip("_")
    return f"{slug}-{digest}" if slug else digest


def chapter_parameters(chapter: str | Path) -> dict[str, Any]:
    """Names and default values of the chapter's papermill `parameters` cell (the cell tagged `parameters`).

    Defaults that are not Python literals are returned as `...`. Reads jupytext sources (`.md`) and `.ipynb`.
    """
    nb = jupytext.read(chapter)
    cells = [c for c in nb.cells if c.cell_type == "code" and "parameters" in c.metadata.get("tags", [])]
    if len(cells) != 1:
        raise ValueError(f"{chapter}: expected one code cell tagged `parameters` (papermill's), found {len(cells)}")
    try:
        tree = ast.parse(cells[0].source)
    except SyntaxError as err:
        raise ValueError(f"{chapter}: its parameters cell is not plain Python ({err})") from err
    found: dict[str, Any] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        else:
            continue
        try:
            default = ast.literal_eval(value)
        except ValueError:
            default = ...
        for target in targets:
            if isinstance(target, ast.Name):
                found[target.id] = default
    return found


def _find_chapter(chapter: str, base: Path) -> Path:
    path = Path(chapter).expanduser()
    if path.is_absolute():
        candidates = [path]
    else:
        candidates = [folder / path for folder in [base, *base.parents]]
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    raise ValueError(f"chapter {chapter!r} not found (looked in {base} and its parent folders); "
                     f"give its path relative to the sweep file or to the repository")


def _check_value(name: str, value: Any, default: Any, where: str) -> None:
    numeric = (int, float)
    if isinstance(default, numeric) and not isinstance(default, bool) and isinstance(value, str):
        hint = " (YAML reads 1e-3 as text: write 1.0e-3)" if re.fullmatch(r"[-+]?\d+(\.\d*)?[eE][-+]?\d+", value) else ""
        raise ValueError(f"{where}{name}: the chapter's default is a number ({default!r}), the sweep gives the "
                         f"text {value!r}{hint}")
    try:
        canonical_json({name: value})
    except (TypeError, ValueError) as err:
        raise ValueError(f"{where}{name}: {value!r} is not a JSON value (numbers, text, booleans, null, "
                         f"lists and mappings of them)") from err


def make_sweep(spec: Mapping[str, Any], *, base: str | Path = ".") -> Sweep:
    """Validate a sweep mapping (as read from YAML) against its chapter; relative paths start at `base`."""
    if not isinstance(spec, Mapping):
        raise ValueError(f"a sweep file holds a mapping with keys {sorted(_KEYS)}, got {type(spec).__name__}")
    unknown = set(spec) - _KEYS
    if unknown:
        raise ValueError(f"unknown keys {sorted(unknown)} in the sweep file; the keys are {sorted(_KEYS)}")
    for key in ("name", "chapter", "seeds"):
        if key not in spec:
            raise ValueError(f"the sweep file needs `{key}` (keys: name, chapter, parameters, grid, seeds, timeout)")
    name = str(spec["name"])
    if not _NAME.match(name):
        raise ValueError(f"sweep name {name!r}: use letters, digits, '.', '_' and '-' (it names a folder)")
    chapter = _find_chapter(str(spec["chapter"]), Path(base).resolve())
    known = chapter_parameters(chapter)
    for needed in (SEED, OUTPUT_DIR):
        if needed not in known:
            raise ValueError(f"{chapter.name}: its parameters cell has no `{needed}`; a sweep sets the seed and the "
                             f"output folder of every run")

    parameters, grid = spec.get("parameters") or {}, spec.get("grid") or {}
    for what, mapping in (("parameters", parameters), ("grid", grid)):
        if not isinstance(mapping, Mapping):
            raise ValueError(f"`{what}` is a mapping name -> value, got {type(mapping).__name__}")
    parameters, grid = dict(parameters), dict(grid)
    for what, mapping in (("parameters", parameters), ("grid", grid)):
        bad = sorted(set(mapping) - set(known))
        if bad:
            raise ValueError(f"unknown parameters {bad} in `{what}`: {chapter.name}'s parameters cell has "
                             f"{sorted(known)}")
        if OUTPUT_DIR in mapping:
            raise ValueError(f"`{what}` sets output_dir; the sweep writes each run into its own folder "
                             f"(choose where with --runs-dir)")
        if SEED in mapping:
            raise ValueError(f"`{what}` sets seed; list the seeds under `seeds:` instead")
    both = sorted(set(parameters) & set(grid))
    if both:
        raise ValueError(f"{both} are both fixed (`parameters`) and varied (`grid`); keep each in one place")
    for key, value in parameters.items():
        _check_value(key, value, known[key], "parameters: ")
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ValueError(f"grid: {key} needs a non-empty list of values, got {values!r}")
        for value in values:
            _check_value(key, value, known[key], "grid: ")
        if len({canonical_json({"v": v}) for v in values}) != len(values):
            raise ValueError(f"grid: {key} lists a value twice ({values!r}); each grid point must be distinct")

    seeds = spec["seeds"]
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        if seeds < 1:
            raise ValueError(f"seeds: a count must be at least 1, got {seeds}")
        seeds = list(range(seeds))
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise ValueError(f"seeds: expected a non-empty list of integers or a count, got {spec['seeds']!r}")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds: {seeds} lists a seed twice")

    timeout = spec.get("timeout")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0):
        raise ValueError(f"timeout: expected a positive number of seconds per run, got {timeout!r}")
    return Sweep(name, chapter, parameters, grid, tuple(seeds), None if timeout is None else float(timeout),
                 str(spec.get("description") or ""))


def load_sweep(path: str | Path) -> Sweep:
    """Read and validate a sweep YAML file (see the module docstring for its keys)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"no sweep file {path}")
    try:
        spec = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ValueError(f"{path} is not valid YAML: {err}") from err
    return make_sweep(spec, base=path.parent)
