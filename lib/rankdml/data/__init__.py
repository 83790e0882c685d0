"""Data sets, splits, transforms and batch samplers.

`load_dataset(name, split, root=None, transform=None)` is the one entry point for every data set:

- embedded, offline: ``"emoji"`` (the same emoji drawn by several design teams; class-disjoint
  retrieval protocol; ``"emoji-family"``: the same images with whole families of variants on one
  side of the train/test cut, see `rankdml.data.embedded`) and ``"fashion"`` (a Fashion-MNIST subset; same classes in train and test);
- real benchmarks, read from their published folder layouts under `root`: ``"cub200"``,
  ``"cars196"``, ``"sop"`` and ``"inshop"`` (see `rankdml.data.download`).
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Callable

from rankdml.data.base import ArrayDataset, FileDataset, IndexedDataset, LabelledDataset, with_indices
from rankdml.data.benchmarks import load_cars196, load_cub200, load_inshop, load_sop
from rankdml.data.download import download
from rankdml.data.embedded import load_emoji, load_fashion
from rankdml.data.magnet_sampler import MagnetSampler
from rankdml.data.samplers import PKSampler
from rankdml.data.distributed_sampler import DistributedPKSampler
from rankdml.data.two_view import TwoViewSampler, paired_views
from rankdml.data.transforms import eval_transform, train_transform

#: name -> loader(split, root, transform) -> LabelledDataset
DATASETS: dict[str, Callable[..., LabelledDataset]] = {
    "emoji": load_emoji,
    "emoji-family": functools.partial(load_emoji, protocol="family"),
    "fashion": load_fashion,
    "cub200": load_cub200,
    "cars196": load_cars196,
    "sop": load_sop,
    "inshop": load_inshop,
}


#: The K of Recall@K each benchmark is reported with in the literature.
STANDARD_KS: dict[str, tuple[int, ...]] = {
    "emoji": (1, 2, 4, 8), "emoji-family": (1, 2, 4, 8), "fashion": (1, 2, 4, 8), "cub200": (1, 2, 4, 8), "cars196": (1, 2, 4, 8),
    "sop": (1, 10, 100, 1000), "inshop": (1, 10, 20, 30, 40, 50),
}


def load_dataset(name: str, split: str, root: str | Path | None = None, transform=None) -> LabelledDataset:
    """Load split `split` of data set `name` as a torch Dataset of (image, integer label).

    `transform=None` gives the data set's evaluation transform (`eval_transform(name)`); pass
    `train_transform(name)` for augmented training batches, or any callable on a (C, H, W) uint8 tensor.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; expected one of {', '.join(DATASETS)}")
    if transform is None:
        transform = eval_transform(name)
    return DATASETS[name](split, root=root, transform=transform)


def evaluation_splits(name: str, root: str | Path | None = None, transform=None) -> dict:
    """{"val": dataset, "test": dataset} for `rankdml.train.fit(eval_sets=...)`.

    In-Shop's test entry is the (query, gallery) pair of its retrieval protocol; the other data
    sets are evaluated leave-one-out.
    """
    test = ((load_dataset(name, "query", root, transform), load_dataset(name, "gallery", root, transform))
            if name == "inshop" else load_dataset(name, "test", root, transform))
    return {"val": load_dataset(name, "val", root, transform), "test": test}


__all__ = ["DATASETS", "STANDARD_KS", "load_dataset", "evaluation_splits", "download", "PKSampler", "MagnetSampler",
           "DistributedPKSampler", "TwoViewSampler", "paired_views", "train_transform", "eval_transform",
           "ArrayDataset", "FileDataset", "LabelledDataset", "IndexedDataset", "with_indices"]
