"""Embedding networks: a small CNN for 32-pixel images and torchvision backbones with an embedding head.

Every model maps images (B, C, H, W) to embeddings (B, D) and is split, as in timm, into
`forward_features` (backbone, (B, F)) and `forward_head` (linear F -> D, then optional L2
normalisation), so a classifier baseline and a metric-learning head share one backbone.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn


class EmbeddingModel(nn.Module):
    """Backbone + linear embedding head + optional L2 normalisation.

    Args:
        backbone: module mapping images to features (B, F).
        feature_dim: F.
        embedding_dim: D.
        normalize: L2-normalise the output (embeddings on the unit sphere).
        freeze_bn: keep every BatchNorm in eval mode (running statistics frozen; their affine
            weights still train), the recipe of the published DML code for small batches.
    """

    def __init__(self, backbone: nn.Module, feature_dim: int, embedding_dim: int = 128, *,
                 normalize: bool = True, freeze_bn: bool = False):
        super().__init__()
        if embedding_dim < 1:
            raise ValueError(f"embedding_dim must be positive, got {embedding_dim}")
        self.backbone = backbone
        self.head = nn.Linear(feature_dim, embedding_dim)
        self.feature_dim, self.embedding_dim = feature_dim, embedding_dim
        self.normalize, self.freeze_bn = normalize, freeze_bn

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        return self.backbone(images)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        embeddings = self.head(features)
        return F.normalize(embeddings, dim=1) if self.normalize else embeddings

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(images))

    def train(self, mode: bool = True) -> "EmbeddingModel":
        super().train(mode)
        if mode and self.freeze_bn:
            for module in self.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        return self


def small_cnn_backbone(in_channels: int = 3, widths: tuple[int, ...] = (32, 64, 128, 256)) -> nn.Sequential:
    """Conv-BN-ReLU blocks (3x3), max-pooling after all but the last, global average pooling -> (B, widths[-1])."""
    layers: list[nn.Module] = []
    for i, width in enumerate(widths):
        layers += [nn.Conv2d(in_channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
        if i < len(widths) - 1:
            layers.append(nn.MaxPool2d(2))
        in_channels = width
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    return nn.Sequential(*layers)


def small_cnn(embedding_dim: int = 128, *, in_channels: int = 3, widths: tuple[int, ...] = (32, 64, 128, 256),
              normalize: bool = True, freeze_bn: bool = False, pretrained: bool = False) -> EmbeddingModel:
    """A ~0.4 M-parameter CNN for 28-32 pixel images that trains in minutes on a CPU."""
    if pretrained:
        raise ValueError("small_cnn has no pretrained weights; use pretrained=False")
    return EmbeddingModel(small_cnn_backbone(in_channels, widths), widths[-1], embedding_dim,
                          normalize=normalize, freeze_bn=freeze_bn)


def _torchvision_backbone(arch: str, pretrained: bool) -> tuple[nn.Module, int]:
    import torchvision

    weights = "DEFAULT" if pretrained else None
    builder = getattr(torchvision.models, arch)
    kwargs = {"aux_logits": False, "init_weights": not pretrained} if arch == "googlenet" else {}
    try:
        net = builder(weights=weights, **kwargs)
    except (OSError, RuntimeError) as err:  # URLError is an OSError; a truncated download a RuntimeError
        url = torchvision.models.get_model_weights(arch).DEFAULT.url
        raise RuntimeError(
            f"could not get torchvision's pretrained weights for {arch} ({err}). Where there is no internet, "
            f"download {url} elsewhere and copy it into {torch.hub.get_dir()}/checkpoints/, "
            f"or use pretrained=False") from err
    feature_dim = net.fc.in_features
    net.fc = nn.Identity()  # the backbone ends at global average pooling: (B, F)
    return net, feature_dim


def _backbone_model(arch: str) -> Callable[..., EmbeddingModel]:
    def build(embedding_dim: int = 512, *, normalize: bool = True, freeze_bn: bool | None = None,
              pretrained: bool = False) -> EmbeddingModel:
        backbone, feature_dim = _torchvision_backbone(arch, pretrained)
        # None: freeze BatchNorm exactly when fine-tuning ImageNet weights, as the published recipes do
        # (PADS, Smooth-AP, Musgrave et al. 2020): small P x K batches would overwrite the pretrained
        # running statistics with noisy ones. A network trained from scratch needs its statistics to move.
        frozen = pretrained if freeze_bn is None else freeze_bn
        return EmbeddingModel(backbone, feature_dim, embedding_dim, normalize=normalize, freeze_bn=frozen)

    build.__name__ = arch
    build.__doc__ = (f"torchvision {arch} (ImageNet weights when pretrained=True), global average pooling, "
                     f"a linear embedding head and optional L2 normalisation. BatchNorm is frozen "
                     f"(freeze_bn=None, the default) exactly when pretrained=True; pass True/False to choose.")
    return build


#: name -> constructor(embedding_dim, *, normalize, freeze_bn, pretrained) -> EmbeddingModel
#: (small_cnn: freeze_bn=False by default; torchvision backbones: None, i.e. frozen when pretrained)
MODELS: dict[str, Callable[..., EmbeddingModel]] = {
    "small_cnn": small_cnn,
    "resnet18": _backbone_model("resnet18"),
    "resnet50": _backbone_model("resnet50"),
    "googlenet": _backbone_model("googlenet"),
}


def make_model(name: str, embedding_dim: int = 128, **kwargs) -> EmbeddingModel:
    """Build a registered model: `make_model("resnet50", 512, pretrained=True, freeze_bn=True)`."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; expected one of {', '.join(MODELS)}")
    return MODELS[name](embedding_dim, **kwargs)
