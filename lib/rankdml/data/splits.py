"""Class-disjoint splits: train on the first classes, test on the rest, validate on held-out training classes."""
from __future__ import annotations

import numpy as np

#: Splits of the zero-shot protocol. "trainval" = every training class; "train" = trainval minus "val".
SPLITS = ("train", "val", "trainval", "test")
VAL_FRACTION = 0.2
VAL_SEED = 0


def check_split(name: str, split: str, allowed: tuple[str, ...] = SPLITS) -> None:
    if split not in allowed:
        raise ValueError(f"unknown split {split!r} for data set {name!r}; expected one of {', '.join(allowed)}")


def split_classes(classes: list, num_train_classes: int, split: str, *, val_fraction: float = VAL_FRACTION,
                  seed: int = VAL_SEED) -> list:
    """The classes of `split`, given all classes in their canonical order.

    `classes[:num_train_classes]` are the training classes and the rest the test classes (the
    protocol of Song et al. 2016). The validation classes are a fixed random `val_fraction` of the
    training classes (seeded, so every run and every machine gets the same ones).
    """
    check_split("", split)
    trainval, test = list(classes[:num_train_classes]), list(classes[num_train_classes:])
    if split == "test":
        return test
    if split == "trainval":
        return trainval
    rng = np.random.default_rng(seed)
    num_val = max(1, int(round(val_fraction * len(trainval))))
    val_idx = set(rng.permutation(len(trainval))[:num_val].tolist())
    if split == "val":
        return [c for i, c in enumerate(trainval) if i in val_idx]
    return [c for i, c in enumerate(trainval) if i not in val_idx]
