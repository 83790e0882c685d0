"""SoDeep's losses: rank metrics computed on a sorter's output, so their gradient reaches the scores.

Every loss takes a sorter: a name (``"exact"``, or a learned one whose shipped checkpoint is then
loaded), a checkpoint path, or a loaded :class:`~rankdml.sodeep.sorters.Sorter`. The sorter stays
frozen: its parameters get ``requires_grad=False`` and ``loss.train()`` (which `rankdml.train.fit`
calls) keeps it in eval mode; only :class:`~rankdml.sodeep.updating.UpdatingWrapper` fine-tunes it.
Ranks follow the descending convention (largest score -> 1/n; smaller rank = better placed).
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from rankdml._checks import check_embeddings_labels
from rankdml.losses.cross_modal import check_scores  # rankdml.losses registers SoDeepAPLoss; its helpers load first
from rankdml.losses.functional import zero_loss
from rankdml.masks import positive_mask
from rankdml.sodeep.ranks import exact_rank
from rankdml.sodeep.sorters import SORTERS, make_sorter
from rankdml.sodeep.training import load_sorter

__all__ = ["resolve_sorter", "SpearmanLoss", "MapRankingLoss", "RankLoss", "RankHardLoss", "SoDeepAPLoss",
           "shipped_checkpoint"]

_WEIGHTS = Path(__file__).resolve().parent / "weights"


def shipped_checkpoint(name: str, seq_len: int | None) -> Path:
    """Path of the packaged checkpoint of sorter `name` for length `seq_len` (it may not exist yet)."""
    return _WEIGHTS / f"{name}_n{seq_len}.pt"


def resolve_sorter(sorter, seq_len: int | None = None) -> nn.Module:
    """A sorter module from a name, a checkpoint path or a module (returned as is)."""
    if isinstance(sorter, nn.Module):
        return sorter
    if not isinstance(sorter, (str, Path)):
        raise ValueError(f"expected a sorter name ({', '.join(SORTERS)}), a checkpoint path or a sorter module, "
                         f"got {type(sorter).__name__}")
    if isinstance(sorter, Path) or (isinstance(sorter, str) and sorter not in SORTERS):
        if not Path(sorter).is_file():
            raise ValueError(f"sorter {str(sorter)!r} is neither a sorter name ({', '.join(SORTERS)}) "
                             f"nor an existing checkpoint file")
        return load_sorter(sorter)
    if sorter == "exact":
        return make_sorter("exact")
    if seq_len is None and getattr(SORTERS[sorter], "length_free", False):
        # a length-free sorter ranks any n: the shipped one (trained at n = 100) serves every length
        seq_len = 100
    path = shipped_checkpoint(sorter, seq_len)
    if not path.is_file():
        raise ValueError(f"no trained {sorter!r} sorter for length {seq_len} is shipped ({path.name}); train one with "
                         f"`python -m rankdml.sodeep.train --sorter {sorter} --seq-len {seq_len} --out FILE` and pass "
                         f"load_sorter(FILE), or use sorter='exact'")
    return load_sorter(path)


class _SorterLoss(nn.Module):
    """Holds a frozen sorter: no trainable parameter, and eval mode whatever `train()` is called with."""

    def __init__(self, sorter, seq_len):
        super().__init__()
        self.sorter = resolve_sorter(sorter, seq_len)
        self.sorter.requires_grad_(False)
        self.sorter.eval()

    def train(self, mode: bool = True):
        super().train(mode)
        self.sorter.eval()  # BatchNorm / dropout of a learned sorter must not change under fit
        return self

    def _rank(self, x: torch.Tensor) -> torch.Tensor:
        """Sorter ranks of the rows of `x (M, n)`, in the dtype of `x`."""
        params = next(self.sorter.parameters(), None)
        if params is not None and params.dtype != x.dtype:
            return self.sorter(x.to(params.dtype)).to(x.dtype)
        return self.sorter(x)


def _check_matrix(x, where):
    if not isinstance(x, torch.Tensor) or x.dim() != 2 or not x.is_floating_point():
        raise ValueError(f"{where}: expected a floating-point matrix, got "
                         f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
    if not torch.isfinite(x).all():
        raise ValueError(f"{where}: the input contains NaN or inf")


def _column_to_vector(x):
    """(n, 1) regression outputs -> (n,); anything else unchanged (checked by the caller)."""
    return x.reshape(-1) if isinstance(x, torch.Tensor) and x.dim() == 2 and x.shape[1] == 1 else x


class SpearmanLoss(_SorterLoss):
    """Spearman surrogate: :math:`L = \\frac1n \\sum_i (\\hat r_i(p) - r_i(g))^2 + \\lambda \\frac1n \\sum_i |p_i - g_i|`.

    :math:`\\hat r(p)` are the sorter's ranks of the predictions `pred (n,)` taken as one sequence,
    :math:`r(g)` the exact ranks of the targets `target (n,)`. With normalised ranks and no ties,
    :math:`\\rho = 1 - 6 n^2 \\mathrm{MSE} / (n^2 - 1)`, so minimising the MSE maximises Spearman's ρ.
    `lbd` (:math:`\\lambda`, default 0) adds the L1 term the authors recommend as a warm-up on some
    regression tasks. A learned sorter needs n = its `seq_len` (the batch size).
    """

    def __init__(self, sorter="exact", *, seq_len: int | None = None, lbd: float = 0.0):
        super().__init__(sorter, seq_len)
        self.lbd = lbd

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        pred, target = _column_to_vector(pred), _column_to_vector(target)
        if pred.dim() != 1 or pred.shape != target.shape:
            raise ValueError(f"SpearmanLoss: expected pred and target of shape (n,), got {tuple(pred.shape)} "
                             f"and {tuple(target.shape)}")
        ranks = self._rank(pred[None, :])[0]  # (n,)
        loss = F.mse_loss(ranks, exact_rank(target.to(pred.dtype)))
        if self.lbd:
            loss = loss + self.lbd * F.l1_loss(pred, target.to(pred.dtype))
        return loss


class MapRankingLoss(_SorterLoss):
    """Rank-sum surrogate of mAP: :math:`L = \\sum_c \\sum_{i: y_{ic} = 1} \\hat r_i(s_{:, c})`.

    `output (N, C)` scores, `target (N, C)` in {0, 1}; each class column is ranked as one sequence
    of length N (a learned sorter needs N = its `seq_len`); columns without positives add nothing.
    Not normalised by the number of positives or classes, as in the original.
    """

    def __init__(self, sorter="exact", *, seq_len: int | None = None):
        super().__init__(sorter, seq_len)

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        _check_matrix(output, "MapRankingLoss")
        if target.shape != output.shape or not ((target == 0) | (target == 1)).all():
            raise ValueError(f"MapRankingLoss: expected a 0/1 target of shape {tuple(output.shape)}, got "
                             f"shape {tuple(target.shape)}")
        ranks = self._rank(output.T)  # (C, N): column c ranked as one sequence
        return (ranks * target.T.to(ranks.dtype)).sum()


class RankLoss(_SorterLoss):
    """Cross-modal rank loss, positives on the diagonal of `scores (B, B)` (query i <-> item i):

    :math:`L = \\sum_i \\hat r_{ii}(S_{i,:}) + \\sum_j \\hat r_{jj}(S_{:,j})`, each row and each column
    ranked as one sequence. Minimum 2 (every positive first, rank 1/B). Learned sorters need B = seq_len.
    """

    def __init__(self, sorter="exact", *, seq_len: int | None = None):
        super().__init__(sorter, seq_len)

    def forward(self, scores: torch.Tensor) -> torch.Tensor:
        check_scores(scores, "RankLoss")
        rows, cols = self._rank(scores), self._rank(scores.T)
        return torch.diagonal(rows).sum() + torch.diagonal(cols).sum()


class RankHardLoss(_SorterLoss):
    """Cross-modal hardest-negative rank loss, positives on the diagonal of `scores (B, B)`.

    For row i with ranks :math:`\\hat r` and the `nmax` best-ranked negatives :math:`h_1..h_k`,
    :math:`\\ell_i = \\sum_k [\\hat r_{ii} + 1/B - h_k]_+`; the same on the columns; summed.

    Margin: with ``use_margin=True`` (default) `margin` is real, in score units: the positive's score
    is lowered by `margin` before ranking, so it costs nothing only if it beats the hardest negatives
    by at least `margin` (the rank-space analogue of the triplet hinge). ``use_margin=False`` is the
    original code, which stores `margin` and never uses it: the effective margin is one rank step 1/B.
    """

    def __init__(self, sorter="exact", *, seq_len: int | None = None, margin: float = 0.2, nmax: int = 1,
                 use_margin: bool = True):
        super().__init__(sorter, seq_len)
        if nmax < 1:
            raise ValueError(f"RankHardLoss: nmax must be >= 1, got {nmax}")
        self.margin, self.nmax, self.use_margin = margin, nmax, use_margin

    def _side(self, scores):
        B = scores.shape[0]
        eye = torch.eye(B, dtype=torch.bool, device=scores.device)
        if self.use_margin:
            scores = scores - self.margin * eye.to(scores.dtype)
        ranks = self._rank(scores)  # (B, B)
        positive = torch.diagonal(ranks)  # (B,)
        negatives = ranks.masked_fill(eye, float("inf"))  # the original adds 50 to exclude the positive
        hardest = negatives.topk(self.nmax, dim=1, largest=False).values  # (B, nmax): best-placed negatives
        return torch.relu(positive[:, None] + 1.0 / B - hardest).sum()

    def forward(self, scores: torch.Tensor) -> torch.Tensor:
        check_scores(scores, "RankHardLoss")
        if not 1 <= self.nmax <= scores.shape[0] - 1:
            raise ValueError(f"RankHardLoss: nmax={self.nmax} needs at least nmax + 1 = {self.nmax + 1} rows")
        return self._side(scores) + self._side(scores.T)


class SoDeepAPLoss(_SorterLoss):  # registered in rankdml.losses.LOSSES as "sodeep_ap"
    """Retrieval loss on `(embeddings (B, D), labels (B,))`: 1 - mean AP, AP from the sorter's ranks.

    Query i ranks the other B - 1 items by cosine similarity :math:`s_{ij}` (its row without the
    diagonal, one sorter sequence of length B - 1). With :math:`\\hat r_{ij}` the sorter's normalised
    rank of item j and :math:`P_i` the positives of i,

    .. math::
        \\mathrm{AP}_i = \\frac{1}{|P_i|} \\sum_{p \\in P_i} \\frac{\\mathrm{rk}^+_i(p)}{(B - 1)\\, \\hat r_{ip}},
        \\qquad L = 1 - \\frac{1}{|Q|} \\sum_{i \\in Q} \\mathrm{AP}_i

    where :math:`\\mathrm{rk}^+_i(p) = 1 + \\#\\{q \\in P_i : s_{iq} > s_{ip}\\}` is p's exact position
    among the positives (piecewise constant, no gradient) and Q the queries with a positive. With
    exact ranks this is 1 - AP exactly; the gradient flows through the sorter's rank among all items
    (clamped below at the first position, :math:`(B - 1)\\hat r \\ge 1`).
    A learned sorter needs B - 1 = its `seq_len`; the default "exact" sorter takes any batch.
    Keyword-only arguments, like every loss of `rankdml.losses`.
    """

    def __init__(self, *, sorter="exact", seq_len: int | None = None):
        super().__init__(sorter, seq_len)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor, indices=None) -> torch.Tensor:
        if indices is not None:
            raise ValueError("SoDeepAPLoss ranks every query's whole row and takes no mined indices; "
                             "call it without a miner")
        check_embeddings_labels(embeddings, labels, min_classes=2, where="SoDeepAPLoss")
        B = labels.shape[0]
        pos = positive_mask(labels)  # (B, B)
        if not pos.any():
            return zero_loss(embeddings, "SoDeepAPLoss", "no positive pair in the batch (all labels distinct)")
        x = F.normalize(embeddings, dim=1)
        sim = x @ x.T  # (B, B)
        off = ~torch.eye(B, dtype=torch.bool, device=labels.device)
        rows = sim[off].view(B, B - 1)  # query i's similarities to the others
        rows_pos = pos[off].view(B, B - 1)
        # (B, B-1): relaxed positions; a learned sorter's output may dip below the first position,
        # where 1 / position would blow up, so it is clamped there (the exact sorter is always >= 1)
        ranks = (self._rank(rows) * (B - 1)).clamp_min(1.0)
        # exact position of each positive among its query's positives: 1 + #positives scored higher
        above = (rows.detach()[:, None, :] > rows.detach()[:, :, None]) & rows_pos[:, None, :]  # (B, B-1, B-1)
        rank_pos = 1 + above.sum(dim=2).to(rows.dtype)
        n_pos = rows_pos.sum(dim=1)
        query = n_pos > 0
        ap = (rank_pos / ranks * rows_pos).sum(dim=1)[query] / n_pos[query]
        return 1 - ap.mean()

    def extra_repr(self) -> str:
        return ""
