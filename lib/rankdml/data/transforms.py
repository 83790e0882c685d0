"""Per-data-set image transforms, on (C, H, W) uint8 tensors (torchvision.transforms.v2).

Small embedded images are normalised to roughly [-1, 1]. Photographs follow the recipe shared by
the published DML code: RandomResizedCrop(224) + horizontal flip for training, Resize(256) +
CenterCrop(224) for testing, ImageNet mean and std. The emoji set gets no flips: some classes are
left- and right-facing versions of each other.
"""
from __future__ import annotations

import torch
from torchvision.transforms import v2

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
SMALL = {"emoji": 32, "emoji-family": 32, "fashion": 28}
PHOTOS = ("cub200", "cars196", "sop", "inshop")


def _known(name: str) -> None:
    if name not in SMALL and name not in PHOTOS:
        raise ValueError(f"no transforms defined for data set {name!r}; expected one of "
                         f"{', '.join([*SMALL, *PHOTOS])}")


def _to_unit_range() -> list:
    return [v2.ToDtype(torch.float32, scale=True), v2.Normalize([0.5], [0.5])]


def eval_transform(name: str) -> v2.Compose:
    """Deterministic transform used for embedding a data set at test time."""
    _known(name)
    if name in SMALL:
        return v2.Compose(_to_unit_range())
    return v2.Compose([v2.Resize(256, antialias=True), v2.CenterCrop(224), v2.ToDtype(torch.float32, scale=True),
                       v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def train_transform(name: str) -> v2.Compose:
    """Random augmentation for training batches (no horizontal flip for emoji)."""
    _known(name)
    if name in ("emoji", "emoji-family"):
        return v2.Compose([v2.RandomResizedCrop(32, scale=(0.6, 1.0), ratio=(0.85, 1.18), antialias=True),
                           v2.ColorJitter(0.2, 0.2, 0.2, 0.02), *_to_unit_range()])
    if name == "fashion":
        return v2.Compose([v2.RandomCrop(28, padding=2, fill=0), v2.RandomHorizontalFlip(), *_to_unit_range()])
    return v2.Compose([v2.RandomResizedCrop(224, antialias=True), v2.RandomHorizontalFlip(),
                       v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
