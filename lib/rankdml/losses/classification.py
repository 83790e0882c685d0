"""Normalised softmax: the classification baseline of Zhai & Wu (2019) used as an embedding loss."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from rankdml._checks import check_embeddings_labels, check_finite_embeddings


class NormSoftmaxLoss(nn.Module):
    r"""Cross-entropy over cosine similarities to one learned proxy per training class.

    .. math::
        L = -\frac{1}{B} \sum_{i=1}^{B} \log
            \frac{\exp(\hat x_i^\top \hat w_{y_i} / \tau)}{\sum_{c=1}^{C} \exp(\hat x_i^\top \hat w_c / \tau)}

    with :math:`\hat x = x / \lVert x \rVert` and :math:`\hat w_c = w_c / \lVert w_c \rVert`.
    After training the proxies are thrown away and :math:`\hat x` is the embedding.

    Args:
        num_classes: C, the number of training classes (labels must lie in 0..C-1).
        embedding_dim: D.
        temperature: :math:`\tau` (0.05 in the paper).

    Shape: embeddings (B, D), labels (B,) -> scalar. Any batch composition works (no pairs needed).

    References: Zhai & Wu, "Classification is a Strong Baseline for Deep Metric Learning", BMVC 2019
    (``zhai2019classification``). Explained in chapter 1.
    """

    def __init__(self, num_classes: int, embedding_dim: int, *, temperature: float = 0.05):
        super().__init__()
        if num_classes < 2 or temperature <= 0:
            raise ValueError(f"need num_classes >= 2 and temperature > 0, got {num_classes} and {temperature}")
        self.temperature = temperature
        self.proxies = nn.Parameter(torch.randn(num_classes, embedding_dim) / embedding_dim ** 0.5)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        # Finiteness is checked on the scalar result, not on the (B, D) input: a NaN or inf in x or
        # in the proxies always reaches the loss, and one pass over the embeddings is saved.
        check_embeddings_labels(embeddings, labels, where="NormSoftmaxLoss", finite=False)
        if embeddings.shape[1] != self.proxies.shape[1]:
            raise ValueError(f"NormSoftmaxLoss was built for {self.proxies.shape[1]}-d embeddings, "
                             f"got {embeddings.shape[1]}-d")
        low, high = (int(v) for v in torch.aminmax(labels))
        if low < 0 or high >= self.proxies.shape[0]:
            raise ValueError(f"labels must lie in 0..{self.proxies.shape[0] - 1} (the training classes), "
                             f"got {low}..{high}")
        # x̂ᵀŵ/τ = (xᵀŵ) / (‖x‖ τ): the row scaling of the (B, C) products replaces normalising x (B, D),
        # and costs nothing more than the division by τ it absorbs. Norms are clamped as F.normalize does.
        scale = embeddings.norm(dim=1, keepdim=True).clamp_min(1e-12).mul(self.temperature)  # (B, 1)
        logits = (embeddings @ F.normalize(self.proxies, dim=1).T).div(scale)  # (B, C)
        loss = F.cross_entropy(logits, labels)
        if not torch.isfinite(loss):
            check_finite_embeddings(embeddings, where="NormSoftmaxLoss")
            raise ValueError("NormSoftmaxLoss: the proxies contain NaN or inf (the embeddings are finite); "
                             "check the learning rate of the proxies")
        return loss
