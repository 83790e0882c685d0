"""Sorters: modules mapping score sequences `x (B, n)` to their (relaxed) ranks `(B, n)`, by name.

Every sorter outputs SoDeep's descending normalised ranks (largest score -> about 1/n). Learned
sorters are trained on synthetic data (:mod:`rankdml.sodeep.training`); "exact" needs no training.
Build one with :func:`make_sorter`; `seq_len` is the length a learned sorter is tied to (its
position-wise read-out has one weight per position); a length-free one ignores it for the
architecture but still records the length it was trained on.
"""
from __future__ import annotations

import torch
from torch import nn

from rankdml.sodeep.ranks import check_sequences

__all__ = ["SORTERS", "make_sorter", "Sorter", "ExactSorter", "LSTMSorter", "GRUConstrainedSorter",
           "GRUPositionSorter", "MLPSorter", "CNNSorter", "StandardizedSorter"]


class Sorter(nn.Module):
    """Base class: `forward(x (B, n)) -> ranks (B, n)`. `length_free` sorters accept any n >= 2."""

    name = "sorter"
    length_free = False

    def __init__(self, seq_len: int | None):
        super().__init__()
        if not self.length_free and (seq_len is None or seq_len < 2):
            raise ValueError(f"sorter {self.name!r} is tied to one sequence length: pass seq_len >= 2")
        self.seq_len = seq_len

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_sequences(x, f"sorter {self.name!r}", seq_len=None if self.length_free else self.seq_len)
        return self.rank(x)

    def rank(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"seq_len={self.seq_len}"


class ExactSorter(Sorter):
    """The sigmoid-relaxed pairwise count, no training (the original's ``sorter_exact``).

    .. math::
        r_i = \\frac{1}{n}\\Big(1 + \\sum_{j \\ne i} \\sigma\\big(c\\,(x_j - x_i)\\big)\\Big), \\qquad c = 6.8 / s

    computed per sequence, with :math:`s` held constant (no gradient through it). The original's
    :math:`s` is the (unbiased) standard deviation of the n x n matrix holding :math:`x_j - x_i`
    above the diagonal and 0 elsewhere; its mean term depends on the *order* of the input (a sorted
    sequence gets a smaller s than the same values shuffled), so the relaxed ranks would not be
    permutation-equivariant. By default (``order_dependent=False``) the mean term is dropped:
    :math:`s = \\sqrt{\\sum_{i<j} (x_j - x_i)^2 / (n^2 - 1)}`, equal to the original's for a
    mean-zero upper triangle; ``order_dependent=True`` reproduces the original exactly. Ties give
    each other 1/2. A constant sequence (s = 0) gets c = 0: all ranks (n + 1) / (2n).
    A fixed `c` (a float) replaces 6.8 / s; the ranks are then a smooth function of x alone (used to
    gradcheck the losses; with the default the gradient is that of the function at frozen c).
    Any length, vectorised over the batch; memory (B, n, n).
    """

    name = "exact"
    length_free = True

    def __init__(self, seq_len: int | None = None, *, scale: float = 6.8, order_dependent: bool = False,
                 c: float | None = None):
        super().__init__(seq_len)
        self.scale, self.order_dependent, self.c = scale, order_dependent, c

    def temperature(self, x: torch.Tensor) -> torch.Tensor:
        """c per sequence, (B,), without gradient."""
        if self.c is not None:
            return torch.full(x.shape[:1], float(self.c), dtype=x.dtype, device=x.device)
        n = x.shape[1]
        upper = torch.triu(x.detach()[:, None, :] - x.detach()[:, :, None], diagonal=1).reshape(x.shape[0], -1)
        if self.order_dependent:  # zeros below the diagonal included, as the original
            spread = upper.std(dim=1)
        else:
            spread = (upper.square().sum(dim=1) / (n * n - 1)).sqrt()
        return torch.where(spread > 0, self.scale / spread.clamp_min(torch.finfo(x.dtype).tiny),
                           torch.zeros_like(spread))

    def rank(self, x: torch.Tensor) -> torch.Tensor:
        return self.rank_with(x, self.temperature(x))

    #: sequences per block: about 2**20 elements (4 MB in float32) per (block, n, n) tensor, so a
    #: block stays in cache; one (B, n, n) tensor at B = 64, n = 1024 would be 256 MB
    BLOCK_ELEMENTS = 2 ** 20

    @staticmethod
    def rank_with(x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """The relaxed ranks of `x (B, n)` at the temperatures `c (B,)`, in blocks of sequences."""
        n = x.shape[1]
        block = max(1, ExactSorter.BLOCK_ELEMENTS // (n * n))
        if x.shape[0] > block:
            return torch.cat([ExactSorter.rank_with(xb, cb) for xb, cb in zip(x.split(block), c.split(block))])
        diff = x[:, None, :] - x[:, :, None]  # (B, n, n): diff[b, i, j] = x_j - x_i
        c = c[:, None, None]  # (B, 1, 1)
        # the diagonal holds sigma(0) = 1/2 exactly, with zero gradient (x_i - x_i): subtract it
        # instead of masking, which would cost another (B, n, n) tensor
        count = torch.sigmoid(c * diff).sum(dim=2) - 0.5  # (B, n)
        return (1 + count) / n

    def extra_repr(self) -> str:
        return f"scale={self.scale}, order_dependent={self.order_dependent}, c={self.c}"


class _PositionReadout(nn.Module):
    """Linear map from all positions' features (B, n, F) to one rank per position (B, n).

    The original's Conv1d with the n positions as channels and kernel F: a full (n x n F) matrix.
    """

    def __init__(self, seq_len: int, features: int):
        super().__init__()
        self.conv = nn.Conv1d(seq_len, seq_len, kernel_size=features)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.conv(h).squeeze(-1)


class LSTMSorter(Sorter):
    """Bidirectional 2-layer LSTM + position-wise linear read-out; tied to `seq_len`.

    `hidden=512` is the paper's model ("lstm_large", 18.65 M parameters at n = 100), `hidden=128`
    the original's baseline ("lstm"). No output non-linearity.
    """

    name = "lstm"

    def __init__(self, seq_len: int, *, hidden: int = 128, layers: int = 2):
        super().__init__(seq_len)
        self.rnn = nn.LSTM(1, hidden, num_layers=layers, bidirectional=True, batch_first=True)
        self.readout = _PositionReadout(seq_len, 2 * hidden)

    def rank(self, x):
        h, _ = self.rnn(x[:, :, None])  # (B, n, 2 hidden)
        return self.readout(h)


class GRUConstrainedSorter(Sorter):
    """The original's "gruc": x -> sigma(x / 2 + 1), 6-layer bi-GRU (32 per direction), sum of the 64
    features per position, sigmoid -> rank in (0, 1). Length-free (no position-wise weights)."""

    name = "gruc"
    length_free = True

    def __init__(self, seq_len: int | None = None, *, hidden: int = 32, layers: int = 6):
        super().__init__(seq_len)
        self.rnn = nn.GRU(1, hidden, num_layers=layers, bidirectional=True, batch_first=True)

    def rank(self, x):
        h, _ = self.rnn(torch.sigmoid(x / 2 + 1)[:, :, None])  # (B, n, 2 hidden)
        return torch.sigmoid(h.sum(dim=-1))


class GRUPositionSorter(Sorter):
    """The original's "grup": 6-layer bi-GRU (128 per direction) + position-wise read-out + sigmoid."""

    name = "grup"

    def __init__(self, seq_len: int, *, hidden: int = 128, layers: int = 6):
        super().__init__(seq_len)
        self.rnn = nn.GRU(1, hidden, num_layers=layers, bidirectional=True, batch_first=True)
        self.readout = _PositionReadout(seq_len, 2 * hidden)

    def rank(self, x):
        h, _ = self.rnn(x[:, :, None])
        return torch.sigmoid(self.readout(h))


class MLPSorter(Sorter):
    """The original's "mlp": n -> 2048 -> 2048 -> n with ReLU; tied to `seq_len`."""

    name = "mlp"

    def __init__(self, seq_len: int, *, hidden: int = 2048):
        super().__init__(seq_len)
        self.net = nn.Sequential(nn.Linear(seq_len, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                 nn.Linear(hidden, seq_len))

    def rank(self, x):
        return self.net(x)


class CNNSorter(Sorter):
    """A 10-layer Conv1d stack (BatchNorm + PReLU, sigmoid output) after the original's "cnn".

    The channel width and kernel are ours (the reference gives only the layer count and the
    non-linearities). Length-free, but its receptive field is local (10 (k - 1) + 1 = 41 positions
    for k = 5), so it cannot rank a long sequence globally: a baseline, not a recommended sorter.
    """

    name = "cnn"
    length_free = True

    def __init__(self, seq_len: int | None = None, *, channels: int = 32, kernel: int = 5, layers: int = 10):
        super().__init__(seq_len)
        blocks, width = [], 1
        for _ in range(layers - 1):
            blocks += [nn.Conv1d(width, channels, kernel, padding=kernel // 2), nn.BatchNorm1d(channels), nn.PReLU()]
            width = channels
        blocks.append(nn.Conv1d(width, 1, kernel, padding=kernel // 2))
        self.net = nn.Sequential(*blocks)

    def rank(self, x):
        return torch.sigmoid(self.net(x[:, None, :]).squeeze(1))


class StandardizedSorter(nn.Module):
    """Wrap a sorter so that every sequence is standardised first: :math:`x \\to (x - \\bar x) / s_x`.

    Ranks do not change under a positive affine map of a sequence, so the targets are the same,
    but a learned sorter only ranks well on the scales it was trained on: cosine similarities
    of a fresh network often spread over 10^-2 or less, where the shipped `gruc` is far off (see
    chapter 4). Not in the original code. A constant row (s_x = 0) becomes all zeros. `seq_len`,
    `length_free` and `meta` are those of the wrapped sorter; it stays frozen if that one is.
    """

    def __init__(self, sorter: nn.Module, *, eps: float = 1e-12):
        super().__init__()
        self.sorter, self.eps = sorter, eps
        self.seq_len = getattr(sorter, "seq_len", None)
        self.length_free = getattr(sorter, "length_free", True)
        self.meta = getattr(sorter, "meta", {})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_sequences(x, "StandardizedSorter")
        centred = x - x.mean(dim=1, keepdim=True)
        spread = centred.square().mean(dim=1, keepdim=True).sqrt()
        return self.sorter(centred / spread.clamp_min(self.eps))


def _lstm_large(seq_len, *, hidden: int = 512, **kw):
    sorter = LSTMSorter(seq_len, hidden=hidden, **kw)
    sorter.name = "lstm_large"
    return sorter


#: name -> constructor `(seq_len, **kwargs) -> Sorter`.
SORTERS = {
    "exact": ExactSorter,
    "lstm_large": _lstm_large,
    "lstm": LSTMSorter,
    "gruc": GRUConstrainedSorter,
    "grup": GRUPositionSorter,
    "mlp": MLPSorter,
    "cnn": CNNSorter,
}


def make_sorter(name: str, seq_len: int | None = None, **kwargs) -> Sorter:
    """Build the sorter registered under `name` (untrained for learned ones; see `load_sorter`)."""
    try:
        build = SORTERS[name]
    except KeyError:
        raise ValueError(f"unknown sorter {name!r}; choose one of: {', '.join(SORTERS)}") from None
    return build(seq_len, **kwargs)
