"""The two data set shapes every loader returns: images in memory, or image files on disk.

Both expose `labels` (N,) int64 in 0..C-1 and `class_names` (C,), so samplers and metrics never
have to decode an image to know its class.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

Transform = Callable[[torch.Tensor], torch.Tensor]


def contiguous_labels(raw_labels: Sequence) -> tuple[np.ndarray, list]:
    """Map arbitrary class ids to 0..C-1 in sorted order. Returns (labels (N,) int64, sorted class ids)."""
    classes, labels = np.unique(np.asarray(raw_labels), return_inverse=True)
    return labels.astype(np.int64), classes.tolist()


class LabelledDataset(Dataset):
    """Common part: integer labels, class names, a transform, and a readable repr."""

    def __init__(self, labels: np.ndarray, class_names: Sequence[str], transform: Transform | None, name: str,
                 split: str):
        self.labels = np.asarray(labels, dtype=np.int64)
        self.class_names = list(class_names)
        self.transform = transform
        self.name = name
        self.split = split
        if len(self.labels) and (self.labels.min() < 0 or self.labels.max() >= len(self.class_names)):
            raise ValueError(f"{name}/{split}: labels must lie in 0..{len(self.class_names) - 1}")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.labels)

    def __repr__(self) -> str:
        counts = np.bincount(self.labels, minlength=self.num_classes) if len(self.labels) else np.zeros(1, int)
        return (f"{type(self).__name__}(name={self.name!r}, split={self.split!r}, images={len(self)}, "
                f"classes={self.num_classes}, images per class={counts.min()}..{counts.max()})")


class ArrayDataset(LabelledDataset):
    """Images held in memory as uint8 (N, H, W, C); items are (transform(CHW uint8 tensor), label)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, class_names: Sequence[str],
                 transform: Transform | None = None, *, name: str = "array", split: str = "all"):
        super().__init__(labels, class_names, transform, name, split)
        images = np.asarray(images)
        if images.dtype != np.uint8 or images.ndim != 4 or len(images) != len(self.labels):
            raise ValueError(f"expected uint8 images of shape (N, H, W, C) with N = {len(self.labels)}, "
                             f"got {images.dtype} {images.shape}")
        self.images = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))  # (N, C, H, W)

    def __getitem__(self, index: int):
        image = self.images[index]
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.labels[index])


class FileDataset(LabelledDataset):
    """Images read from files on demand (RGB); items are (transform(CHW uint8 tensor), label)."""

    def __init__(self, paths: Sequence[Path], labels: np.ndarray, class_names: Sequence[str],
                 transform: Transform | None = None, *, name: str = "files", split: str = "all"):
        super().__init__(labels, class_names, transform, name, split)
        self.paths = [Path(p) for p in paths]
        if len(self.paths) != len(self.labels):
            raise ValueError(f"{name}/{split}: {len(self.paths)} paths but {len(self.labels)} labels")

    def __getitem__(self, index: int):
        from PIL import Image  # torchvision's own decoders are deprecated in favour of torchcodec

        with Image.open(self.paths[index]) as im:
            image = torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1)  # (3, H, W) uint8
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.labels[index])


class IndexedDataset(Dataset):
    """A data set whose items carry their own index: `(image, label, index)`.

    Made by `with_indices(dataset)`. Losses, miners and callbacks that look items up by dataset
    index (Magnet's cluster assignment, per-item statistics) get them through
    `rankdml.train.fit`, which reads the third element of every batch as `state.batch_indices`.
    Every other attribute (`labels`, `class_names`, `num_classes`, ...) is the wrapped data set's,
    so samplers are built exactly as before: `PKSampler(indexed.labels, P, K)`.
    """

    def __init__(self, dataset: Dataset):
        if isinstance(dataset, IndexedDataset):
            raise ValueError("the data set already yields its indices; do not wrap it twice")
        self.dataset = dataset

    def __getitem__(self, index: int):
        image, label = self.dataset[index][:2]
        return image, label, index

    def __len__(self) -> int:
        return len(self.dataset)

    def __getattr__(self, name: str):
        if name == "dataset":  # not set yet (e.g. while unpickling in a DataLoader worker)
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __repr__(self) -> str:
        return f"with_indices({self.dataset!r})"


def with_indices(dataset: Dataset) -> IndexedDataset:
    """Wrap any data set of `(image, label)` items so that its items are `(image, label, index)`."""
    return IndexedDataset(dataset)
