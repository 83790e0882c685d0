"""Loaders for the four real DML benchmarks, read from their published folder layouts.

Every loader is ``load_X(split, root=None, transform=None) -> FileDataset`` and follows the
class-disjoint ("zero-shot") protocol of Song et al. (2016):

- ``cub200`` (CUB-200-2011): classes 1-100 train (5,864 images), 101-200 test (5,924);
  ``<root>/CUB_200_2011/{images.txt, image_class_labels.txt, classes.txt, images/}``.
- ``cars196`` (Stanford Cars): class ids 1-98 train (8,054), 99-196 test (8,131);
  ``<root>/{cars_annos.mat, car_ims/}``.
- ``sop`` (Stanford Online Products): ``Ebay_train.txt`` train (11,318 classes, 59,551 images),
  ``Ebay_test.txt`` test (11,316, 60,502); ``<root>/Stanford_Online_Products/``.
- ``inshop`` (DeepFashion In-Shop): "train" items (3,997, 25,882 images) for training, query
  (14,218) vs gallery (12,612) for test; ``<root>/InShop/{Eval/list_eval_partition.txt, img/}``.

"val" is a seeded 20 % of the training classes and "train" the rest (`rankdml.data.splits`).
Labels are contiguous 0..C-1 within each split; `class_names` keeps the original class names/ids.

`root` is the folder that *contains* the data set folder (``<root>/CUB_200_2011``); the data set
folder itself is accepted too. Without `root`: ``$RANKDML_DATA/<name>``, else
``~/.cache/rankdml/<name>``. `rankdml.data.download(name, root)` fetches and unpacks the files
(addresses, checksums and terms in ``rankdml/data/files/benchmarks.json``).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from rankdml.data.base import FileDataset, Transform, contiguous_labels
from rankdml.data.splits import SPLITS, check_split, split_classes

#: Environment variable naming the folder that holds one sub-folder per data set.
ENV_VAR = "RANKDML_DATA"

#: In-Shop's splits: the training-class splits plus the standard query/gallery protocol.
#: "test" = query + gallery, for leave-one-out retrieval (as in tf_retrieval_baseline); the
#: literature reports query-vs-gallery numbers, which are not comparable to leave-one-out ones.
INSHOP_SPLITS = ("train", "val", "trainval", "query", "gallery", "test")


@dataclass(frozen=True)
class BenchmarkSpec:
    """Where a benchmark's files live, relative to `root`."""

    name: str  # registry name, e.g. "cub200"
    title: str  # human name, e.g. "CUB-200-2011"
    folders: tuple[str, ...]  # candidate data set folders under root, canonical first ("" = root itself)
    required: tuple[str, ...]  # files/folders that must exist in the data set folder
    layout: tuple[str, ...]  # the expected layout after extraction, for messages and rankdml/data/files/benchmarks.json


SPECS: dict[str, BenchmarkSpec] = {
    "cub200": BenchmarkSpec(
        "cub200", "CUB-200-2011", ("CUB_200_2011", ""),
        ("images.txt", "image_class_labels.txt", "classes.txt", "images"),
        ("<root>/CUB_200_2011/images.txt  (<image_id> <class folder>/<file>.jpg)",
         "<root>/CUB_200_2011/image_class_labels.txt  (<image_id> <class_id>)",
         "<root>/CUB_200_2011/classes.txt  (<class_id> <class name>)",
         "<root>/CUB_200_2011/images/001.Black_footed_Albatross/Black_Footed_Albatross_0046_18.jpg ...")),
    "cars196": BenchmarkSpec(
        "cars196", "Cars196 (Stanford Cars)", ("",),
        ("cars_annos.mat", "car_ims"),
        ("<root>/cars_annos.mat  (struct array 'annotations': relative_im_path, bbox_x1, bbox_y1, bbox_x2, "
         "bbox_y2, class 1..196, test; cell array 'class_names')",
         "<root>/car_ims/000001.jpg ... <root>/car_ims/016185.jpg")),
    "sop": BenchmarkSpec(
        "sop", "Stanford Online Products", ("Stanford_Online_Products", ""),
        ("Ebay_train.txt", "Ebay_test.txt"),
        ("<root>/Stanford_Online_Products/Ebay_train.txt  (header 'image_id class_id super_class_id path')",
         "<root>/Stanford_Online_Products/Ebay_test.txt  (same header)",
         "<root>/Stanford_Online_Products/bicycle_final/111085122871_0.JPG ... (12 <super class>_final folders)")),
    "inshop": BenchmarkSpec(
        "inshop", "In-Shop Clothes Retrieval (DeepFashion)", ("InShop", "", "In-shop Clothes Retrieval Benchmark"),
        ("Eval/list_eval_partition.txt", "img"),
        ("<root>/InShop/Eval/list_eval_partition.txt  (line 1: image count; line 2: 'image_name item_id "
         "evaluation_status'; then space-padded rows with status train/query/gallery)",
         "<root>/InShop/img/WOMEN/Dresses/id_00000002/02_1_front.jpg ...  (unzipped img.zip)")),
}


# ----------------------------------------------------------------------------------------------
# Shared: find the data set folder
# ----------------------------------------------------------------------------------------------

def default_root(name: str) -> Path:
    """``$RANKDML_DATA/<name>`` if the variable is set, else ``~/.cache/rankdml/<name>``."""
    base = os.environ.get(ENV_VAR)
    return (Path(base) if base else Path.home() / ".cache" / "rankdml") / name


def resolve_root(name: str, root: str | Path | None) -> Path:
    """The `root` argument (user-expanded), or the default root of data set `name`."""
    return Path(root).expanduser() if root is not None else default_root(name)


def _missing(folder: Path, spec: BenchmarkSpec) -> list[str]:
    return [rel for rel in spec.required if not (folder / rel).exists()]


def find_folder(name: str, root: str | Path | None = None) -> Path:
    """The folder of data set `name` under `root` holding all its list files (FileNotFoundError if none)."""
    spec = SPECS[name]
    base = resolve_root(name, root)
    candidates = [base / sub if sub else base for sub in spec.folders]
    for folder in candidates:
        if not _missing(folder, spec):
            return folder
    # Report the candidate that got furthest (a half-extracted folder beats the canonical guess).
    best = min(candidates, key=lambda f: len(_missing(f, spec)))
    missing = ", ".join(str(best / rel) for rel in _missing(best, spec))
    looked = " or ".join(str(f) for f in candidates)
    layout = "\n  ".join(line.replace("<root>", str(base)) for line in spec.layout)
    raise FileNotFoundError(
        f"The {spec.title} data set was not found: looked for it in {looked}, but these are missing: "
        f"{missing}. The expected layout is:\n  {layout}\n"
        f"Run rankdml.data.download({name!r}, {str(base)!r}) or put the files there yourself "
        f"(download addresses, checksums and terms are in rankdml/data/files/benchmarks.json). Without a `root` "
        f"argument the data is looked for in ${ENV_VAR}/{name}, else ~/.cache/rankdml/{name}.")


# ----------------------------------------------------------------------------------------------
# Shared: pick the classes of a split and build the data set
# ----------------------------------------------------------------------------------------------

def _build(name: str, split: str, paths: Sequence[Path], raw_labels: Sequence, classes: list,
           num_train: int, names: dict, transform: Transform | None) -> FileDataset:
    """Keep the images whose class is in `split` (classes[:num_train] train, the rest test).

    `raw_labels` (N,) are original class ids; `names` maps an id to its class name. Labels become
    contiguous 0..C-1 in sorted id order.
    """
    keep_classes = set(split_classes(classes, num_train, split))
    raw = np.asarray(raw_labels)
    mask = np.fromiter((c in keep_classes for c in raw.tolist()), dtype=bool, count=len(raw))
    labels, ids = contiguous_labels(raw[mask])
    kept_paths = [p for p, keep in zip(paths, mask) if keep]
    return FileDataset(kept_paths, labels, [str(names[c]) for c in ids], transform, name=name, split=split)


def _read_rows(path: Path, skip: int = 0) -> list[list[str]]:
    """Whitespace-separated rows of a text list, without the first `skip` lines and blank lines."""
    lines = path.read_text(encoding="utf-8").splitlines()[skip:]
    return [line.split() for line in lines if line.strip()]


# ----------------------------------------------------------------------------------------------
# The four loaders
# ----------------------------------------------------------------------------------------------

def load_cub200(split: str, root: str | Path | None = None, transform: Transform | None = None) -> FileDataset:
    """CUB-200-2011: classes 1-100 train, 101-200 test (11,788 images of 200 bird species).

    Reads ``images.txt`` (id, relative path), ``image_class_labels.txt`` (id, class id 1..200) and
    ``classes.txt`` (class id, folder name such as ``001.Black_footed_Albatross``).
    """
    check_split("cub200", split, SPLITS)
    folder = find_folder("cub200", root)
    rel_path = {row[0]: row[1] for row in _read_rows(folder / "images.txt")}
    names = {int(row[0]): row[1] for row in _read_rows(folder / "classes.txt")}
    image_class = _read_rows(folder / "image_class_labels.txt")
    paths = [folder / "images" / rel_path[image_id] for image_id, _ in image_class]
    raw = [int(class_id) for _, class_id in image_class]
    return _build("cub200", split, paths, raw, sorted(names), 100, names, transform)


def _mat_scalar(value):
    """The single element of a loadmat field (MATLAB wraps scalars and strings in 1x1 arrays)."""
    return np.asarray(value).reshape(-1)[0].item()


def load_cars196(split: str, root: str | Path | None = None, transform: Transform | None = None) -> FileDataset:
    """Cars196: class ids 1-98 train, 99-196 test (16,185 images), from ``cars_annos.mat``.

    The file's own ``test`` flag (the classification split) is ignored: the DML protocol splits by class.
    """
    from scipy.io import loadmat

    check_split("cars196", split, SPLITS)
    folder = find_folder("cars196", root)
    mat = loadmat(folder / "cars_annos.mat")
    annotations = mat["annotations"].reshape(-1)  # (N,) struct records
    paths = [folder / str(_mat_scalar(a["relative_im_path"])) for a in annotations]
    raw = [int(_mat_scalar(a["class"])) for a in annotations]
    classes = sorted(set(raw))
    if "class_names" in mat:
        # class_names is a 1x196 cell array, entry k-1 naming class id k.
        names = {k + 1: str(_mat_scalar(n)) for k, n in enumerate(mat["class_names"].reshape(-1))}
    else:
        names = {c: str(c) for c in classes}
    return _build("cars196", split, paths, raw, classes, 98, names, transform)


def load_sop(split: str, root: str | Path | None = None, transform: Transform | None = None) -> FileDataset:
    """Stanford Online Products: ``Ebay_train.txt`` classes train, ``Ebay_test.txt`` classes test.

    Rows are ``image_id class_id super_class_id path`` after one header line; class_names are the
    class ids as strings.
    """
    check_split("sop", split, SPLITS)
    folder = find_folder("sop", root)
    # The two lists already separate the classes; "val"/"train" are carved from Ebay_train.txt only.
    rows = _read_rows(folder / ("Ebay_test.txt" if split == "test" else "Ebay_train.txt"), skip=1)
    raw = [int(row[1]) for row in rows]
    paths = [folder / row[3] for row in rows]
    classes = sorted(set(raw))
    num_train = 0 if split == "test" else len(classes)
    return _build("sop", split, paths, raw, classes, num_train, {c: c for c in classes}, transform)


def _read_inshop_partition(path: Path) -> list[list[str]]:
    """Rows [image_name, item_id, status] of ``list_eval_partition.txt`` (count line and header removed)."""
    rows = _read_rows(path)
    header = ["image_name", "item_id", "evaluation_status"]
    for i, row in enumerate(rows[:2]):
        if row == header:
            body = rows[i + 1:]
            break
    else:
        raise ValueError(f"{path} does not look like DeepFashion's list_eval_partition.txt: expected a count "
                         f"line and then the header {' '.join(header)!r} before the rows.")
    bad = [row for row in body if len(row) != 3 or row[2] not in ("train", "query", "gallery")]
    if bad:
        raise ValueError(f"{path} has {len(bad)} malformed rows (first: {' '.join(bad[0])!r}); every row "
                         f"should be '<image_name> <item_id> <train|query|gallery>'.")
    return body


def load_inshop(split: str, root: str | Path | None = None, transform: Transform | None = None) -> FileDataset:
    """In-Shop Clothes Retrieval: "train" items for training, query (14,218) vs gallery (12,612) for test.

    Splits: "train", "val", "trainval" (classes = training item ids), "query" and "gallery" (one
    label space: contiguous ids over the union of test item ids, so a query's label equals the
    label of its gallery matches) and "test" = query + gallery in that label space, for
    leave-one-out retrieval. Published In-Shop numbers use query vs gallery.
    """
    check_split("inshop", split, INSHOP_SPLITS)
    folder = find_folder("inshop", root)
    rows = _read_inshop_partition(folder / "Eval" / "list_eval_partition.txt")
    if split in ("train", "val", "trainval"):
        rows = [row for row in rows if row[2] == "train"]
        classes = sorted({row[1] for row in rows})
        return _build("inshop", split, [folder / row[0] for row in rows], [row[1] for row in rows],
                      classes, len(classes), {c: c for c in classes}, transform)
    test_rows = [row for row in rows if row[2] != "train"]
    # Label space shared by query and gallery: all test item ids, not just those of this split.
    labels_all, ids = contiguous_labels([row[1] for row in test_rows])
    wanted = ("query", "gallery") if split == "test" else (split,)
    keep = [i for i, row in enumerate(test_rows) if row[2] in wanted]
    return FileDataset([folder / test_rows[i][0] for i in keep], labels_all[keep], [str(c) for c in ids],
                       transform, name="inshop", split=split)


__all__ = ["load_cub200", "load_cars196", "load_sop", "load_inshop", "SPECS", "INSHOP_SPLITS", "ENV_VAR",
           "find_folder", "resolve_root", "default_root"]
