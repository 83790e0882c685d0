"""Embedded offline data sets, shipped inside the package (``rankdml/data/files/*.npz``).

- ``emoji``: the same emoji drawn by several independent design teams (Google Noto, Twemoji, Microsoft
  Fluent flat, EmojiOne, Firefox OS), 32x32 RGB. A class is one emoji, its images are the designs of
  the teams that drew it (3 to 5). Class-disjoint protocol, as for Stanford Online Products: half
  of the classes train, the other half test. Two ways to cut them (``protocol=``): "alphabetical"
  (the first half of the classes sorted by name trains; the default for now, and what chapters
  1-6 were executed with) and "family" (whole families of variants, see `emoji_family`, on one
  side only, chosen by a seeded shuffle; the alphabetical cut puts most man/woman/person variants
  and mirrored "facing-right" emoji in the test half, next to their siblings).
- ``fashion``: a fixed Fashion-MNIST subset, 28x28 grey, the same 10 classes in every split.

Both files are built once by data/build_emoji.py and data/build_fashion.py (in the repository), which
write them into the package; they are package data, read with `importlib.resources`, so any install
(wheel, sdist, git URL, editable) loads them offline from any working directory. Their licences ship
next to them (``EMOJI_LICENSE.md``, ``FASHION_LICENSE.md``). Loading needs numpy only. The loader checks
the file's SHA-256 against the constants below, so results in the book are always computed on exactly
the published arrays.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.resources
import os
from pathlib import Path
from typing import Iterator, Mapping

import numpy as np

from rankdml.data.base import ArrayDataset, Transform, contiguous_labels
from rankdml.data.splits import SPLITS, check_split, family_split_classes, split_classes

EMOJI_FILE, EMOJI_SHA256 = "emoji32.npz", "502106c932db1e1de860369dbe76a6bbcd9af4d1f9cfee13bb27e9c5c7893664"
FASHION_FILE, FASHION_SHA256 = "fashion28.npz", "4509f28673ceeb58bf1296894a67c47c264367f65f286b600a73ca57650c3817"
#: Builder script of each file (in the repository, not in the package), named in the error messages.
_BUILDERS = {EMOJI_FILE: "data/build_emoji.py", FASHION_FILE: "data/build_fashion.py"}
#: Training images per class of the fashion subset that go to "train"; the rest of the official
#: training part (100 per class) is "val".
FASHION_TRAIN_PER_CLASS = 500

#: The package that holds the embedded files as package data.
PACKAGE_FILES = importlib.resources.files("rankdml.data.files")


@contextlib.contextmanager
def _located(filename: str, root: str | os.PathLike | None) -> Iterator[tuple[str, Path]]:
    """(description, path) of `filename`: in the `root` folder if given, else the package's copy.

    $RANKDML_DATA is deliberately not consulted: it names the folder of the large benchmarks, and the
    embedded files always come with the package. `as_file` gives a real file even if the package is
    imported from a zip archive.
    """
    if root is not None:
        yield "root argument", Path(root) / filename
    else:
        with importlib.resources.as_file(PACKAGE_FILES / filename) as path:
            yield "files of the installed rankdml package", Path(path)


def _verify(path: Path, where: str, filename: str, expected_sha256: str) -> None:
    """Clear errors when the file is missing or its bytes differ from the published build."""
    if not path.is_file():
        fix = (f"Pass root=<folder containing {filename}>, or build it with `python {_BUILDERS[filename]}`"
               if where == "root argument" else
               "The installation is incomplete: reinstall rankdml (`pip install --force-reinstall rankdml`); "
               "in a checkout, `git checkout -- lib/rankdml/data/files`")
        raise FileNotFoundError(f"{filename} not found: looked in {path} ({where}). {fix}.")
    actual = hashlib.sha256(path.read_bytes()).hexdigest()
    if actual != expected_sha256:
        raise ValueError(
            f"{path}: SHA-256 checksum mismatch (got {actual}, expected {expected_sha256}). The file is "
            f"corrupt or from another build; restore it (reinstall rankdml, or in a checkout "
            f"`git checkout -- lib/rankdml/data/files/{filename}`) or rebuild it with "
            f"`python {_BUILDERS[filename]}` (and update the checksum in rankdml/data/embedded.py).")


@functools.lru_cache(maxsize=None)
def _read_npz(path: Path) -> Mapping[str, np.ndarray]:
    """All arrays of one npz, decompressed once per process (the four splits share them)."""
    with np.load(path, allow_pickle=False) as npz:
        arrays = {key: npz[key] for key in npz.files}
    for value in arrays.values():
        value.flags.writeable = False  # shared between callers: nobody may edit the cached copy
    return arrays


def _load(filename: str, expected_sha256: str, root: str | os.PathLike | None) -> Mapping[str, np.ndarray]:
    with _located(filename, root) as (where, path):
        _verify(path, where, filename, expected_sha256)
        return _read_npz(path.resolve())


#: Words that make a person emoji a variant of another (man-cook, woman-cook, cook).
_PERSON_WORDS = frozenset({"man", "woman", "person", "men", "women", "people", "boy", "girl", "child", "adult"})
#: Variants whose names share no word with their family.
_FAMILY_ALIASES = {"merman": "merperson", "mermaid": "merperson", "prince": "person-with-crown",
                   "princess": "person-with-crown", "santa-claus": "mx-claus", "mrs-claus": "mx-claus"}
EMOJI_PROTOCOLS = ("alphabetical", "family")
#: The emoji split used when none is named (the stored chapters were executed with it).
DEFAULT_EMOJI_PROTOCOL = "alphabetical"


def emoji_family(name: str, all_names: frozenset | set = frozenset()) -> str:
    """The family of an emoji class: what is left of its name without gender, age and mirroring.

    "man-running-facing-right", "woman-running" and "person-running" -> "running"; "old-man",
    "girl", "person" -> "person"; "kiss-man-man" -> "kiss"; "merman" -> "merperson"; "dog-face" ->
    "dog" when "dog" is one of `all_names` (the animal and its face). Everything else is its own family.
    """
    import re

    base = re.sub(r"-facing-(right|left)$", "", name)
    base = _FAMILY_ALIASES.get(base, base)
    tokens = base.split("-")
    if any(t in _PERSON_WORDS for t in tokens):
        base = "-".join(t for t in tokens if t not in _PERSON_WORDS | {"and", "old", "older"}) or "person"
    elif base.endswith("-face") and base[:-5] in all_names:
        base = base[:-5]
    return base


def emoji_split_classes(all_names: list, split: str, protocol: str = DEFAULT_EMOJI_PROTOCOL) -> list:
    """The class names of `split` under `protocol` ("alphabetical" or "family"), in name order."""
    if protocol not in EMOJI_PROTOCOLS:
        raise ValueError(f"unknown emoji protocol {protocol!r}; expected one of {', '.join(EMOJI_PROTOCOLS)}")
    if protocol == "alphabetical":
        return split_classes(all_names, len(all_names) // 2, split)
    names = frozenset(all_names)
    return family_split_classes(all_names, [emoji_family(n, names) for n in all_names], split)


def emoji_split_composition(protocol: str = DEFAULT_EMOJI_PROTOCOL,
                            root: str | os.PathLike | None = None) -> dict[str, dict[str, int]]:
    """How `protocol` cuts the emoji classes: {"train" | "val" | "test": counts} for each split.

    Counts: "classes", "images", "families" (`emoji_family`), "variant classes" (classes that are a
    gender/person/age or mirrored variant, i.e. whose family is not their own name), "with a sibling
    here" (classes whose family has another class in the same split: the near-duplicates a query
    can confuse with its own emoji) and "families cut" (families of the split that also have classes
    in another split; 0 everywhere under "family").
    """
    data = _load(EMOJI_FILE, EMOJI_SHA256, root)
    all_names = data["class_names"].tolist()
    family = {n: emoji_family(n, frozenset(all_names)) for n in all_names}
    images = dict(zip(all_names, np.bincount(data["labels"], minlength=len(all_names)).tolist()))
    splits = {s: emoji_split_classes(all_names, s, protocol) for s in ("train", "val", "test")}
    out = {}
    for split, names in splits.items():
        families = [family[n] for n in names]
        elsewhere = {family[n] for other, rest in splits.items() if other != split for n in rest}
        out[split] = {"classes": len(names), "images": sum(images[n] for n in names),
                      "families": len(set(families)),
                      "variant classes": sum(family[n] != n for n in names),
                      "with a sibling here": sum(families.count(family[n]) > 1 for n in names),
                      "families cut": len(set(families) & elsewhere)}
    return out


def load_emoji(split: str, root: str | os.PathLike | None = None,
               transform: Transform | None = None, protocol: str = DEFAULT_EMOJI_PROTOCOL) -> ArrayDataset:
    """Split `split` of the emoji data set (class-disjoint: "train", "val", "trainval" or "test").

    `protocol`: how the classes are cut in two, "alphabetical" or "family" (module docstring).
    Items are (transform(uint8 tensor (3, 32, 32)), label) with labels 0..C_split-1. The data set also
    carries `styles` (N,) int64, the index of the design team of each image, and `style_names` (S,).
    """
    check_split("emoji", split, SPLITS)
    data = _load(EMOJI_FILE, EMOJI_SHA256, root)
    all_names = data["class_names"].tolist()
    names = emoji_split_classes(all_names, split, protocol)
    wanted = np.isin(data["class_names"][data["labels"]], names)
    labels, class_names = contiguous_labels(data["class_names"][data["labels"][wanted]])
    dataset = ArrayDataset(data["images"][wanted], labels, class_names, transform, name="emoji", split=split)
    dataset.styles = data["styles"][wanted].astype(np.int64)
    dataset.style_names = data["style_names"].tolist()
    return dataset


def load_fashion(split: str, root: str | os.PathLike | None = None,
                 transform: Transform | None = None) -> ArrayDataset:
    """Split `split` of the Fashion-MNIST subset; the same 10 classes (labels 0..9) in every split.

    "train": first 500 per class of the official-train part; "val": the other 100 per class;
    "trainval": all 600 per class; "test": the 300 per class from the official test file.
    Items are (transform(uint8 tensor (1, 28, 28)), label).
    """
    check_split("fashion", split, SPLITS)
    data = _load(FASHION_FILE, FASHION_SHA256, root)
    labels = data["labels"]
    from_train = data["official_split"] == "train"
    if split == "test":
        wanted = ~from_train
    else:
        # Rank of each official-train image within its class, in file order (the build kept file order).
        rank = np.zeros(len(labels), dtype=np.int64)
        for c in np.unique(labels):
            members = np.flatnonzero(from_train & (labels == c))
            rank[members] = np.arange(len(members))
        wanted = from_train.copy()
        if split == "train":
            wanted &= rank < FASHION_TRAIN_PER_CLASS
        elif split == "val":
            wanted &= rank >= FASHION_TRAIN_PER_CLASS
    return ArrayDataset(data["images"][wanted], labels[wanted], data["class_names"].tolist(), transform,
                        name="fashion", split=split)
