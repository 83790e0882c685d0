"""SoDeep (Engilberge et al., CVPR 2019): learned sorters as differentiable ranks, and the losses built on them.

- :mod:`~rankdml.sodeep.ranks`: `exact_rank(x, dim=-1)`, descending normalised ranks (largest -> 1/n).
- :mod:`~rankdml.sodeep.synthetic`: `sample_sequences(B, n, family)`, the original's ten families.
- :mod:`~rankdml.sodeep.sorters`: `make_sorter(name, seq_len)` over :data:`SORTERS`.
- :mod:`~rankdml.sodeep.training`: `train_sorter`, `load_sorter`, `evaluate_sorter`;
  command line ``python -m rankdml.sodeep.train``.
- :mod:`~rankdml.sodeep.losses`: `SpearmanLoss`, `MapRankingLoss`, `RankLoss`, `RankHardLoss`, `SoDeepAPLoss`.
- :mod:`~rankdml.sodeep.updating`: `UpdatingWrapper`, a `rankdml.callbacks.Callback` fine-tuning the sorter.
"""
from __future__ import annotations

from rankdml.sodeep.losses import MapRankingLoss, RankHardLoss, RankLoss, SoDeepAPLoss, SpearmanLoss, resolve_sorter
from rankdml.sodeep.ranks import exact_rank
from rankdml.sodeep.sorters import SORTERS, ExactSorter, Sorter, StandardizedSorter, make_sorter
from rankdml.sodeep.synthetic import FAMILIES, make_generator, sample_sequences
from rankdml.sodeep.training import evaluate_sorter, load_sorter, save_sorter, train_sorter
from rankdml.sodeep.updating import UpdatingWrapper

__all__ = ["exact_rank", "FAMILIES", "sample_sequences", "make_generator", "SORTERS", "Sorter", "ExactSorter", "StandardizedSorter",
           "make_sorter", "train_sorter", "load_sorter", "save_sorter", "evaluate_sorter", "SpearmanLoss",
           "MapRankingLoss", "RankLoss", "RankHardLoss", "SoDeepAPLoss", "resolve_sorter", "UpdatingWrapper"]
