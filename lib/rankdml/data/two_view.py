"""Two views of the same classes: a cross-modal retrieval protocol built from a labelled data set.

Each class that has an item of style `query_style` and one of style `gallery_style` gives a pair
(query item, gallery item); on the emoji data, e.g., Google Noto's drawing of an emoji is the
query and Twemoji's drawing of the same emoji its one relevant gallery item. This is the layout of
text-image retrieval (a caption and its image), with two drawing styles in place of two modalities.
"""
from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler

__all__ = ["paired_views", "TwoViewSampler"]


def paired_views(labels: Sequence[int], styles: Sequence[int], query_style: int, gallery_style: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Indices `(query (M,), gallery (M,))` of the classes holding both styles, one pair per class.

    Pair m is the first item of style `query_style` and the first of style `gallery_style` of the
    m-th such class (classes in increasing label order). Raises ValueError if no class has both.
    """
    labels, styles = np.asarray(labels), np.asarray(styles)
    if labels.shape != styles.shape or labels.ndim != 1:
        raise ValueError(f"labels and styles must be 1-D of the same length, got {labels.shape} and {styles.shape}")
    if query_style == gallery_style:
        raise ValueError("query_style and gallery_style must differ")
    first = {}
    for style in (query_style, gallery_style):
        idx = np.flatnonzero(styles == style)
        classes, where = np.unique(labels[idx], return_index=True)  # first item of each class in this style
        first[style] = dict(zip(classes.tolist(), idx[where].tolist()))
    both = sorted(set(first[query_style]) & set(first[gallery_style]))
    if not both:
        raise ValueError(f"no class has an item of style {query_style} and one of style {gallery_style}")
    return (np.array([first[query_style][c] for c in both], dtype=np.int64),
            np.array([first[gallery_style][c] for c in both], dtype=np.int64))


class TwoViewSampler(Sampler[list[int]]):
    """Batches of `pairs_per_batch` pairs: their B query indices, then their B gallery indices.

    Each epoch shuffles the pairs (seeded by (seed, epoch)) and cuts them into batches; the last
    incomplete batch is dropped, so every batch has the same size (a learned sorter is tied to one
    length). `set_epoch` chooses the epoch, as `rankdml.data.PKSampler`'s does.
    """

    updates_during_epoch = False

    def __init__(self, query: Sequence[int], gallery: Sequence[int], pairs_per_batch: int, *, seed: int = 0):
        self.query, self.gallery = np.asarray(query, dtype=np.int64), np.asarray(gallery, dtype=np.int64)
        if self.query.shape != self.gallery.shape or self.query.ndim != 1:
            raise ValueError("query and gallery must be 1-D index arrays of the same length")
        if not 2 <= pairs_per_batch <= len(self.query):
            raise ValueError(f"pairs_per_batch must be in 2..{len(self.query)} (the number of pairs), "
                             f"got {pairs_per_batch}")
        self.B, self.seed, self.epoch = pairs_per_batch, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[list[int]]:
        order = np.random.default_rng([self.seed, self.epoch]).permutation(len(self.query))
        self.epoch += 1
        for start in range(0, len(order) - self.B + 1, self.B):
            chosen = order[start:start + self.B]
            yield self.query[chosen].tolist() + self.gallery[chosen].tolist()

    def __len__(self) -> int:
        return len(self.query) // self.B
