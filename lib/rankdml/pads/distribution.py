"""PADS's negative-sampling distribution: a histogram over anchor-negative distances, and its miner.

The support is ``n_support`` points :math:`s_0 < \\dots < s_{K}` linearly spaced on
``[lower, upper]`` (PADS: 30 points on [0.1, 1.4]), defining :math:`K = n_support - 1` bins. A
distance :math:`d` falls in bin

.. math::
    b(d) = \\#\\{k = 1, \\dots, K-1 : d > s_k\\} \\in \\{0, \\dots, K-1\\},

the number of *interior* support points below it, so everything below :math:`s_1` is in bin 0 and
everything above :math:`s_{K-1}` in bin :math:`K-1` (out-of-range distances merge into the end bins).
The distribution keeps unnormalised weights :math:`w \\in \\mathbb{R}^K`, :math:`p = w / \\sum_k w_k`;
the policy reshapes it multiplicatively, :math:`w \\leftarrow \\mathrm{clip}(w \\odot v, 10^{-25}, 10^{25})`.

:class:`DistributionSampler` draws, for every anchor of a batch, one positive uniformly and one
negative :math:`n` with probability :math:`\\propto p_{b(d_{an})}`.

Reference: Roth, Milbich, Ommer, "PADS: Policy-Adapted Sampling for Visual Similarity Learning",
CVPR 2020 (roth2020pads); code Confusezius/CVPR2020_PADS, ``Parametric_Sampler``.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

from rankdml._checks import check_embeddings_labels
from rankdml.distances import pairwise_distances
from rankdml.masks import SelfRegularisedTriplets, same_label

__all__ = ["INITIAL_DISTRIBUTIONS", "SamplingDistribution", "DistributionSampler"]

#: The original's named initial distributions: name -> (shape, parameters). Shapes, evaluated at
#: x = s_k + 2 / n_support (k = 0..K-1), then clipped to [1e-15, 1] and normalised:
#: "uniform" (mu, sigma): 1 on [mu - sigma, mu + sigma]; "gaussian" (mu, sigma):
#: exp(-(x - mu)^2 / (2 sigma^2)) / sqrt(2 pi sigma); "heavyside" (mu,): 1 where x <= mu;
#: "below" (limit,): 1 where x < limit; "flat": 1 everywhere (not normalised, as in the original).
INITIAL_DISTRIBUTIONS: dict[str, tuple[str, tuple[float, ...]]] = {
    "uniform_low": ("uniform", (0.5, 0.2)),
    "uniform_avg": ("uniform", (1.0, 0.2)),
    "uniform_high": ("uniform", (1.5, 0.2)),
    "uniform_low_and_tight": ("uniform", (0.4, 0.1)),
    "uniform_lowish_and_tight": ("uniform", (0.6, 0.1)),
    "normal_low": ("gaussian", (0.5, 0.05)),
    "normal_avg": ("gaussian", (1.1, 0.04)),
    "normal_high": ("gaussian", (1.6, 0.04)),
    "heavyside_low": ("heavyside", (0.5,)),
    "distance": ("below", (0.5,)),
    "random": ("flat", ()),
}
#: Shapes that take (mu, sigma) from `init_params` when given by shape name (the original's help
#: text promises this, but its code has no branch for it and raises).
_CUSTOM = {"uniform": "uniform", "normal": "gaussian"}


def _shape(kind: str, params: Sequence[float], x: torch.Tensor) -> torch.Tensor:
    """The unnormalised initial shape at the evaluation points `x` (float64)."""
    if kind == "uniform":
        mu, sigma = params
        return ((x >= mu - sigma) & (x <= mu + sigma)).to(x.dtype)
    if kind == "gaussian":
        mu, sigma = params
        # the original's normalising constant is 1/sqrt(2 pi sigma), not 1/(sigma sqrt(2 pi)); it
        # matters because values above 1 are clipped to 1 (a flat top for small sigma)
        return torch.exp(-(x - mu) ** 2 / (2 * sigma ** 2)) / math.sqrt(2 * math.pi * sigma)
    if kind == "heavyside":
        return (x <= params[0]).to(x.dtype)
    if kind == "below":
        return (x < params[0]).to(x.dtype)
    return torch.ones_like(x)


class SamplingDistribution:
    """A discretised distribution over anchor-negative distances, reshaped multiplicatively.

    Args:
        n_support: number of support points, giving ``n_support - 1`` bins. Default 30
            (``--policy_n_support``).
        lower, upper: support interval. Default 0.1, 1.4 (``--policy_support_limit``).
        init: initial distribution, a name of :data:`INITIAL_DISTRIBUTIONS` (default
            ``"uniform_low"``, the original's default and every sample run's; ``"random"`` is flat),
            or ``"uniform"`` / ``"normal"`` with ``init_params = (mu, sigma)``.
        init_params: (mu, sigma) for ``init="uniform"`` or ``"normal"``. Default (0.5, 0.04)
            (``--policy_init_params``; unused by the original's code).
        min_weight, max_weight: clipping bounds of the weights after each update. Default 1e-25, 1e25.

    Attributes:
        support: (n_support,) float64 support points; ``interior`` = support[1:-1].
        weights: (K,) float64 unnormalised weights; ``probs`` = weights / weights.sum().

    The initial shapes are evaluated at :math:`s_k + 2/n_{support}` (an offset of 0.0667 with the
    defaults, not the bin centre +0.0224), as in the original: ``uniform_low`` puts 1/9 of the mass
    on each of bins 3..11, i.e. distances [0.234, 0.638), not the README's [0.3, 0.7].
    """

    def __init__(self, n_support: int = 30, lower: float = 0.1, upper: float = 1.4, init: str = "uniform_low",
                 init_params: Sequence[float] = (0.5, 0.04), *, min_weight: float = 1e-25,
                 max_weight: float = 1e25):
        if isinstance(n_support, bool) or not isinstance(n_support, int) or n_support < 3:
            raise ValueError(f"n_support must be an int >= 3 (at least two bins), got {n_support!r}")
        if not (math.isfinite(lower) and math.isfinite(upper) and 0 <= lower < upper):
            raise ValueError(f"the support must be an interval 0 <= lower < upper, got [{lower}, {upper}]")
        if not 0 < min_weight <= max_weight:
            raise ValueError(f"need 0 < min_weight <= max_weight, got {min_weight}, {max_weight}")
        self.n_support, self.lower, self.upper = n_support, float(lower), float(upper)
        self.min_weight, self.max_weight = float(min_weight), float(max_weight)
        self.init, self.init_params = init, tuple(float(v) for v in init_params)
        self.support = torch.linspace(self.lower, self.upper, n_support, dtype=torch.float64)
        self.weights = self.initial_weights(init, self.init_params)

    # ---------------------------------------------------------------------------------------------
    @property
    def num_bins(self) -> int:
        return self.n_support - 1

    @property
    def interior(self) -> torch.Tensor:
        """(K - 1,) the interior support points s_1..s_{K-1}: the bin boundaries used by `bin`."""
        return self.support[1:-1]

    @property
    def bin_edges(self) -> torch.Tensor:
        """(K + 1,) the support points, for plotting (the end bins also hold out-of-range distances)."""
        return self.support.clone()

    @property
    def probs(self) -> torch.Tensor:
        """(K,) float64 probabilities p = w / sum(w)."""
        return self.weights / self.weights.sum()

    def initial_weights(self, init: str, init_params: Sequence[float] = (0.5, 0.04)) -> torch.Tensor:
        """(K,) float64 initial weights of a named distribution (see :data:`INITIAL_DISTRIBUTIONS`)."""
        if init in INITIAL_DISTRIBUTIONS:
            kind, params = INITIAL_DISTRIBUTIONS[init]
        elif init in _CUSTOM:
            if len(init_params) != 2 or not init_params[1] > 0:
                raise ValueError(f"init={init!r} needs init_params=(mu, sigma) with sigma > 0, got {tuple(init_params)}")
            kind, params = _CUSTOM[init], tuple(init_params)
        else:
            raise ValueError(f"unknown initial distribution {init!r}; expected one of "
                             f"{', '.join([*INITIAL_DISTRIBUTIONS, *_CUSTOM])}")
        if kind == "flat":
            return torch.ones(self.num_bins, dtype=torch.float64)
        x = self.support[:-1] + 2.0 / self.n_support  # the original's evaluation points
        w = _shape(kind, params, x).clamp(1e-15, 1.0)
        return w / w.sum()

    def bin(self, distances: torch.Tensor) -> torch.Tensor:
        """Bin index b(d) in 0..K-1 of every distance, same shape, int64, on the distances' device.

        b(d) counts the interior support points strictly below d (compared in float64, as the
        original's numpy code does).
        """
        if not isinstance(distances, torch.Tensor) or not distances.is_floating_point():
            raise ValueError("bin: expected a floating-point tensor of distances")
        d = distances.detach().to(torch.float64)
        return torch.bucketize(d, self.interior.to(d.device), right=False)

    def in_support(self, distances: torch.Tensor) -> torch.Tensor:
        """Bool mask, same shape: lower <= d <= upper."""
        d = distances.detach().to(torch.float64)
        return (d >= self.lower) & (d <= self.upper)

    def update(self, multipliers: torch.Tensor | Sequence[float]) -> None:
        """w <- clip(w * multipliers, min_weight, max_weight); `multipliers`: (K,) positive finite values."""
        m = torch.as_tensor(multipliers, dtype=torch.float64).detach().cpu()
        if m.shape != (self.num_bins,):
            raise ValueError(f"update: expected {self.num_bins} multipliers (one per bin), got shape {tuple(m.shape)}")
        if not (torch.isfinite(m).all() and (m > 0).all()):
            raise ValueError("update: multipliers must be positive and finite")
        self.weights = (self.weights * m).clamp(self.min_weight, self.max_weight)

    def sampler(self, **options) -> "DistributionSampler":
        """A :class:`DistributionSampler` drawing with this distribution (options: see that class)."""
        return DistributionSampler(self, **options)

    # ---------------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"weights": self.weights.clone(), "n_support": self.n_support, "lower": self.lower,
                "upper": self.upper}

    def load_state_dict(self, state: dict) -> None:
        if (state["n_support"], state["lower"], state["upper"]) != (self.n_support, self.lower, self.upper):
            raise ValueError(f"load_state_dict: the saved support (n_support={state['n_support']}, "
                             f"[{state['lower']}, {state['upper']}]) differs from this one (n_support="
                             f"{self.n_support}, [{self.lower}, {self.upper}])")
        self.weights = torch.as_tensor(state["weights"], dtype=torch.float64).clone().cpu()

    def __repr__(self) -> str:
        return (f"SamplingDistribution(n_support={self.n_support}, lower={self.lower}, upper={self.upper}, "
                f"init={self.init!r})")


class DistributionSampler:
    """Draw one (anchor, positive, negative) per anchor, the negative by its distance's bin probability.

    For every anchor :math:`a` of the batch (distances of the detached embeddings, exact square root):

    * positive: uniform over the items with the anchor's label (the anchor itself included when
      `anchor_as_positive`);
    * negative: :math:`n` drawn with probability :math:`p_{b(d_{an})} / \\sum_{m \\in C_a} p_{b(d_{am})}`
      over the candidates :math:`C_a`: the whole batch (the anchor and same-class items included)
      when `same_class_negatives`, else the items of other classes.

    Args:
        distribution: the :class:`SamplingDistribution` (shared: updates to it apply to the next batch).
        same_class_negatives: candidates for the negative are the whole batch. Default True: the
            original forces this on (``include_pos = not --policy_no_self_reg``) and calls it
            "self-regularisation"; same-class "negatives" are then pushed beyond β - α by the margin loss.
        anchor_as_positive: the anchor may be drawn as its own positive. Default True (the original's
            ``include_same``, forced on likewise).
        merge_out_of_range: distances outside [lower, upper] count in the end bins. Default True,
            which is what the original always does: its ``--policy_merge_oobs`` flag (default off)
            was meant to give them probability 0 but tests ``d < lower AND d > upper`` (never true).
            False gives them probability 0.
        seed: seed of the generator used for the draws; one generator per device, created on the
            embeddings' device at first use, its state in :meth:`state_dict`.

    Returns (on call) ``(anchor_idx, pos_idx, neg_idx)``, LongTensors on the embeddings' device, in the
    format :class:`rankdml.losses.MarginLoss` takes as ``indices=``. When either self-regularisation
    option is on, the tuple is a :class:`rankdml.masks.SelfRegularisedTriplets`, which tells the
    losses' triplet check to accept these triplets. Anchors without a positive (a singleton class
    without `anchor_as_positive`) or without any candidate negative are skipped.

    Notes:
        - A row whose candidates all have probability 0 (only possible with
          ``merge_out_of_range=False``: every candidate outside the support) falls back to uniform
          over its candidates; the original's ``np.random.choice`` would fail on the NaN row.
        - Shape: embeddings (B, D), L2-normalised as the support assumes distances in [0, 2]; labels (B,).
    """

    def __init__(self, distribution: SamplingDistribution, *, same_class_negatives: bool = True,
                 anchor_as_positive: bool = True, merge_out_of_range: bool = True, seed: int = 0):
        if not isinstance(distribution, SamplingDistribution):
            raise ValueError(f"distribution must be a SamplingDistribution, got {type(distribution).__name__}")
        self.distribution = distribution
        self.same_class_negatives = bool(same_class_negatives)
        self.anchor_as_positive = bool(anchor_as_positive)
        self.merge_out_of_range = bool(merge_out_of_range)
        self.seed = int(seed)
        self._generators: dict[str, torch.Generator] = {}
        self._pending: dict[str, torch.Tensor] = {}  # saved generator states not yet applied

    def __repr__(self) -> str:
        return (f"DistributionSampler({self.distribution!r}, same_class_negatives={self.same_class_negatives}, "
                f"anchor_as_positive={self.anchor_as_positive}, merge_out_of_range={self.merge_out_of_range}, "
                f"seed={self.seed})")

    def generator(self, device: torch.device | str) -> torch.Generator:
        """The generator for draws on `device` (created, seeded with `seed`, at first use)."""
        dev = torch.device(device)
        key = str(dev)
        if key not in self._generators:
            g = torch.Generator(device=dev).manual_seed(self.seed)
            if key in self._pending:  # restored from a checkpoint before this device was used
                g.set_state(self._pending.pop(key))
            self._generators[key] = g
        return self._generators[key]

    @torch.no_grad()
    def negative_probabilities(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """(B, B) float64: row a holds the probability of drawing each item as a's negative (rows of
        anchors without any candidate are 0)."""
        # without same-class negatives a one-class batch has no candidate at all
        check_embeddings_labels(embeddings, labels, min_classes=1 if self.same_class_negatives else 2,
                                where="DistributionSampler")
        labels = labels.to(embeddings.device)
        d = pairwise_distances(embeddings.detach())  # (B, B)
        p = self.distribution.probs.to(d.device)[self.distribution.bin(d)]  # (B, B) float64
        if not self.merge_out_of_range:
            p = p.masked_fill(~self.distribution.in_support(d), 0.0)
        candidates = torch.ones_like(p, dtype=torch.bool) if self.same_class_negatives else ~same_label(labels)
        w = p * candidates
        total = w.sum(1, keepdim=True)
        # fallback for rows with candidates but zero mass: uniform over the candidates
        w = torch.where(total > 0, w, candidates.to(w.dtype))
        total = w.sum(1, keepdim=True)
        return torch.where(total > 0, w / total.clamp_min(torch.finfo(w.dtype).tiny), w)

    @torch.no_grad()
    def __call__(self, embeddings: torch.Tensor, labels: torch.Tensor):
        check_embeddings_labels(embeddings, labels, where="DistributionSampler")
        labels = labels.to(embeddings.device)
        probs = self.negative_probabilities(embeddings, labels)  # (B, B)
        B = labels.shape[0]
        positives = same_label(labels)  # (B, B)
        if not self.anchor_as_positive:
            positives &= ~torch.eye(B, dtype=torch.bool, device=labels.device)
        anchors = torch.nonzero(positives.any(1) & (probs.sum(1) > 0), as_tuple=True)[0]
        if anchors.numel() == 0:
            empty = labels.new_empty(0, dtype=torch.long)
            return self._wrap((empty, empty, empty))
        g = self.generator(embeddings.device)
        # positives first, then negatives: a fixed order of draws, so a resumed generator repeats them
        pos = torch.multinomial(positives[anchors].to(probs.dtype), 1, generator=g)[:, 0]
        neg = torch.multinomial(probs[anchors], 1, generator=g)[:, 0]
        return self._wrap((anchors, pos, neg))

    def _wrap(self, triplets):
        return SelfRegularisedTriplets(triplets) if self._self_regularised else triplets

    @property
    def _self_regularised(self) -> bool:
        return self.same_class_negatives or self.anchor_as_positive

    # ---------------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """The seed and every generator's state, by device (the distribution is saved by its owner)."""
        states = {**self._pending, **{k: g.get_state() for k, g in self._generators.items()}}
        return {"seed": self.seed, "generators": states}

    def load_state_dict(self, state: dict) -> None:
        """Restore the generators; a device's state is applied when that device is first used (so a
        checkpoint written on CUDA still loads on a machine without it)."""
        self.seed = int(state["seed"])
        self._generators = {}
        self._pending = {k: v.clone() for k, v in state["generators"].items()}
