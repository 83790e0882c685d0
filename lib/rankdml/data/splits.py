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


def family_split_classes(classes: list, families: list, split: str, *, test_fraction: float = 0.5,
                         val_fraction: float = VAL_FRACTION, seed: int = VAL_SEED) -> list:
    """The classes of `split` when whole *families* of classes go to one side, never both.

    `families[i]` names the family of `classes[i]` (variants of one thing: a man's, a woman's and a
    person's version of one emoji, its mirror image, ...). The families are shuffled with `seed`;
    the test split takes families in that order until it holds `test_fraction` of the classes (the
    family that crosses the line goes to whichever side leaves the sizes closer), the rest train.
    Validation families are drawn the same way from the training families, `val_fraction` of its
    classes, with another stream of the same seed. Classes keep their canonical order within a split.
    """
    check_split("", split)
    if len(families) != len(classes):
        raise ValueError(f"family_split_classes: {len(classes)} classes but {len(families)} family names")

    def take(members: dict, order: list, target: int) -> set:
        chosen, count = set(), 0
        for fam in order:
            size = len(members[fam])
            if count >= target:
                break
            if count + size > target and (count + size - target) > (target - count):
                continue  # this family would overshoot by more than it leaves short: try the next ones
            chosen.add(fam)
            count += size
        return chosen

    members: dict = {}
    for cls, fam in zip(classes, families):
        members.setdefault(fam, []).append(cls)
    rng = np.random.default_rng(seed)
    order = [list(members)[i] for i in rng.permutation(len(members))]
    test_families = take(members, order, int(round(test_fraction * len(classes))))
    test = [c for c, f in zip(classes, families) if f in test_families]
    trainval = [c for c, f in zip(classes, families) if f not in test_families]
    if split == "test":
        return test
    if split == "trainval":
        return trainval
    train_families = [f for f in order if f not in test_families]
    val_order = [train_families[i] for i in np.random.default_rng([seed, 1]).permutation(len(train_families))]
    val_families = take(members, val_order, max(1, int(round(val_fraction * len(trainval)))))
    keep = (lambda f: f in val_families) if split == "val" else (lambda f: f not in val_families)
    return [c for c, f in zip(classes, families) if f not in test_families and keep(f)]
