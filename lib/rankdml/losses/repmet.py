"""RepMet (Karlinsky et al., CVPR 2019): learnable class representatives, and the variants of pytorch.repmet."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from rankdml._checks import check_embeddings_labels
from rankdml.distances import pairwise_squared_distances
from rankdml.losses.functional import masked_logsumexp

__all__ = ["RepMetLoss"]

VARIANTS = ("cvpr", "v1", "v2", "v3", "radius")


class RepMetLoss(nn.Module):
    """RepMet: K learnable representatives per class; the loss of the CVPR paper or one of the original
    code's variants.

    Notation: :math:`R_{ij}` the j-th representative of class i (``representatives (C*K, D)``,
    class-major: row ``i*K + j``), :math:`D_{ij} = \\|E - R_{ij}\\|^2` the *squared* Euclidean
    distance (as in the official MXNet code and in pytorch.repmet), :math:`s = 1/(2\\sigma^2)`,
    :math:`i^*` the true class of the embedding E. Each variant gives a per-item loss
    :math:`\\ell`; the loss is their mean over the batch.

    * ``"cvpr"`` (paper): :math:`p_{ij} = e^{-s D_{ij}}`, class posterior
      :math:`P_i = \\max_j p_{ij}`; cross-entropy on the class posterior plus the embedding hinge

      .. math:: \\ell = -\\log \\frac{P_{i^*}}{\\sum_i P_i}
                + \\big[\\min_j D_{i^*j} - \\min_{i \\ne i^*, j} D_{ij} + \\alpha\\big]_+ .

      It pulls E to its closest own representative and pushes the closest wrong one α further.
      ``softmax_mul=m`` replaces the first term by the MXNet code's ``softmax(m * P)``
      cross-entropy (SOFTMAX_MUL = 15 there). The background term of detection is not used.
    * ``"v1"`` (arXiv v1, magnet-style ratio; the original's ``RepMetLoss``):
      :math:`\\ell = [s \\min_j D_{i^*j} + \\log \\sum_{i \\ne i^*, j} e^{-s D_{ij}} + \\alpha]_+`,
      i.e. :math:`[-\\log(e^{-s \\min_j D_{i^*j}} / \\sum_{\\text{other}} e^{-s D}) + \\alpha]_+`:
      the closest own representative against all representatives of the other classes.
    * ``"v2"`` (suggested by the authors; ``RepMetLoss2``):
      :math:`\\ell = [-\\log(\\sum_j e^{-s D_{i^*j}} / \\sum_{i,j} e^{-s D_{ij}}) + \\alpha]_+`. The
      ratio is at most 1, so :math:`\\ell \\ge \\alpha`: it can never reach 0 (its floor is α plus
      the log of 1 + the other classes' share, which stays positive for bounded embeddings).
    * ``"v3"`` (``RepMetLoss3``): :math:`\\ell = [-\\log(\\sum_j e^{-s D_{i^*j}} /
      \\sum_{i \\ne i^*, j} e^{-s D_{ij}}) + \\alpha]_+`: all own representatives against the others.
    * ``"radius"`` (the author's ``MyLoss1``): each representative r gets the radius
      :math:`\\rho_r = \\max` of :math:`D(n, r)` over the batch items n of r's class (0 if none);
      for each item n and each representative r of *another* class present in the batch,
      :math:`c_{nr} = [2(\\rho_r + \\alpha - D(n, r))]_+`, and
      :math:`\\ell_n = \\sum_r c_{nr} / \\#\\{r: \\text{class}(r) \\text{ in the batch}\\}`: it
      penalises impostors inside a representative's class radius plus margin (the code's form;
      its README writes another).

    Args:
        num_classes: C; labels must lie in [0, C).
        k: representatives per class (K).
        embedding_dim: D.
        sigma: σ of the Gaussian :math:`e^{-D/(2\\sigma^2)}`. Default 0.5 (paper; the original
            code hard-codes it).
        alpha: margin α. Default 0.5 (paper's EMBED_LOSS_MARGIN; the original code used 1.0).
        variant: one of ``"cvpr"``, ``"v1"``, ``"v2"``, ``"v3"``, ``"radius"``.
        normalize_representatives: L2-normalise the representatives before use (REP_L2_NORM).
        softmax_mul: ``"cvpr"`` only, see above; ``None`` (default) for the normalised posterior.

    The representatives are an ``nn.Parameter`` initialised from a seeded-by-the-global-RNG
    standard normal (then L2-normalised, as pytorch.repmet's HEAD); :meth:`init_from` copies
    k-means centres into them. Give them their own learning rate through an optimiser parameter
    group (the original: Adam 1e-3 for them, 1e-4 for the network)::

        opt = torch.optim.Adam([{"params": model.parameters(), "lr": 1e-4},
                                {"params": [loss.representatives], "lr": 1e-3}])

    For prediction use
    :func:`rankdml.accuracy.repmet_accuracy` with ``sigma=loss.sigma`` (the σ of training).

    Shape:
        embeddings (B, D), labels (B,) -> scalar. After each call ``item_losses (B,)`` holds the
        detached per-item losses (for the Magnet sampler's cluster losses).

    References:
        Karlinsky, Shtok, Harary, Schwartz, Aides, Feris, Giryes, Bronstein, "RepMet:
        Representative-based metric learning for classification and few-shot object detection",
        CVPR 2019 (karlinsky2019repmet).
    """

    def __init__(self, num_classes: int, k: int, embedding_dim: int, *, sigma: float = 0.5, alpha: float = 0.5,
                 variant: str = "cvpr", normalize_representatives: bool = False, softmax_mul: float | None = None):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
        if num_classes < 2 or k < 1 or embedding_dim < 1:
            raise ValueError(f"need num_classes >= 2, k >= 1 and embedding_dim >= 1, got {num_classes}, {k}, "
                             f"{embedding_dim}")
        if sigma <= 0:
            raise ValueError(f"sigma must be > 0, got {sigma}")
        if softmax_mul is not None and variant != "cvpr":
            raise ValueError("softmax_mul applies to variant='cvpr' only")
        self.num_classes, self.k, self.embedding_dim = int(num_classes), int(k), int(embedding_dim)
        self.sigma, self.alpha, self.variant = float(sigma), float(alpha), variant
        self.normalize_representatives, self.softmax_mul = normalize_representatives, softmax_mul
        self.representatives = nn.Parameter(F.normalize(torch.randn(num_classes * k, embedding_dim), dim=1))
        self.item_losses: torch.Tensor | None = None

    def extra_repr(self) -> str:
        return (f"num_classes={self.num_classes}, k={self.k}, embedding_dim={self.embedding_dim}, sigma={self.sigma}, "
                f"alpha={self.alpha}, variant={self.variant!r}, "
                f"normalize_representatives={self.normalize_representatives}, softmax_mul={self.softmax_mul}")

    @property
    def representative_labels(self) -> torch.Tensor:
        """(C*K,) the class of each representative."""
        return torch.arange(self.num_classes, device=self.representatives.device).repeat_interleave(self.k)

    def current_representatives(self) -> torch.Tensor:
        """(C*K, D) the representatives as the loss uses them (normalised if asked)."""
        reps = self.representatives
        return F.normalize(reps, dim=1) if self.normalize_representatives else reps

    @torch.no_grad()
    def init_from(self, centres) -> None:
        """Copy k-means centres into the representatives: a (C*K, D) / (C, K, D) tensor, or a
        :class:`rankdml.clusters.ClusterIndex` fitted on labels 0..C-1 with the same K."""
        if hasattr(centres, "centres"):
            index = centres
            if index.centres is None:
                raise ValueError("init_from: the cluster index is not fitted yet")
            if index.k != self.k or not torch.equal(index.classes.cpu(), torch.arange(self.num_classes)):
                raise ValueError(f"init_from: the index must have k = {self.k} and classes 0..{self.num_classes - 1}, "
                                 f"got k = {index.k} and {index.classes.numel()} classes")
            centres = index.centres
        centres = torch.as_tensor(centres)
        if centres.numel() != self.representatives.numel() or centres.shape[-1] != self.embedding_dim:
            raise ValueError(f"init_from: expected centres of shape ({self.num_classes * self.k}, "
                             f"{self.embedding_dim}), got {tuple(centres.shape)}")
        self.representatives.copy_(centres.reshape_as(self.representatives))

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor, indices=None) -> torch.Tensor:
        check_embeddings_labels(embeddings, labels, min_classes=2, where="RepMetLoss")
        if indices is not None:
            raise ValueError("RepMetLoss compares items with the representatives and takes no mined indices")
        if embeddings.shape[1] != self.embedding_dim:
            raise ValueError(f"RepMetLoss: expected embeddings of dimension {self.embedding_dim}, "
                             f"got {embeddings.shape[1]}")
        if labels.min() < 0 or labels.max() >= self.num_classes:
            raise ValueError(f"RepMetLoss: labels must lie in [0, {self.num_classes}), got "
                             f"[{int(labels.min())}, {int(labels.max())}]; map them to 0..C-1")
        reps = self.current_representatives().to(embeddings.dtype)
        sq = pairwise_squared_distances(embeddings, reps)  # (B, C*K)
        own = labels[:, None] == self.representative_labels[None, :]  # (B, C*K)
        s = 1.0 / (2.0 * self.sigma ** 2)
        logits = -s * sq
        if self.variant == "cvpr":
            terms = self._cvpr(sq, labels, own, s)
        elif self.variant == "v1":
            closest_own = sq.masked_fill(~own, float("inf")).amin(1)
            terms = torch.relu(s * closest_own + masked_logsumexp(logits, ~own, dim=1) + self.alpha)
        elif self.variant == "v2":
            log_ratio = masked_logsumexp(logits, own, dim=1) - torch.logsumexp(logits, dim=1)
            terms = torch.relu(-log_ratio + self.alpha)
        elif self.variant == "v3":
            log_ratio = masked_logsumexp(logits, own, dim=1) - masked_logsumexp(logits, ~own, dim=1)
            terms = torch.relu(-log_ratio + self.alpha)
        else:
            terms = self._radius(sq, labels, own)
        self.item_losses = terms.detach()
        return terms.mean()

    def _cvpr(self, sq, labels, own, s):
        B, C, K = labels.shape[0], self.num_classes, self.k
        class_min = sq.view(B, C, K).amin(2)  # (B, C): min_j D_ij
        if self.softmax_mul is None:
            # log P_i = -s min_j D_ij: the cross-entropy of the normalised posterior is a log-softmax
            ce = F.cross_entropy(-s * class_min, labels, reduction="none")
        else:
            ce = F.cross_entropy(self.softmax_mul * torch.exp(-s * class_min), labels, reduction="none")
        closest_own = sq.masked_fill(~own, float("inf")).amin(1)
        closest_other = sq.masked_fill(own, float("inf")).amin(1)
        return ce + torch.relu(closest_own - closest_other + self.alpha)

    def _radius(self, sq, labels, own):
        # rho_r: the largest distance from representative r to the batch items of its class (0 if absent)
        rho = sq.masked_fill(~own, float("-inf")).amax(0)  # (C*K,)
        present = torch.isfinite(rho)
        rho = torch.where(present, rho, torch.zeros_like(rho))
        cost = torch.relu(2.0 * (rho[None, :] + self.alpha - sq))  # (B, C*K)
        cost = cost * (present[None, :] & ~own)
        return cost.sum(1) / present.sum()
