"""Backbone + pooling + head: the model every experiment trains."""
from __future__ import annotations

import torch
from torch import nn

from dml_core.params.backbones import ModelConfig
from dml_core.models.backbones import Backbone, build_backbone
from dml_core.models.head import EmbeddingHead, GlobalPool


class EmbeddingModel(nn.Module):
    """x -> backbone feature map -> pooled features -> L2-normalised embedding.

    `features()` and `head_forward()` split the model where the frozen-backbone feature cache
    cuts it: cached pooled features go straight into `head_forward`.
    """

    def __init__(self, backbone: Backbone, embedding_dim: int, pooling: str = "avg",
                 freeze_bn: bool = False, freeze_backbone: bool = False, head_norm: bool = False,
                 head_init: str = "kaiming_normal") -> None:
        super().__init__()
        self.backbone = backbone
        self.pool = GlobalPool(pooling)
        self.head = EmbeddingHead(backbone.out_channels, embedding_dim, norm=head_norm, init=head_init)
        self.freeze_bn = freeze_bn
        self.freeze_backbone = freeze_backbone
        if freeze_backbone:
            self.backbone.requires_grad_(False)
        self.train()

    @property
    def embedding_dim(self) -> int:
        return self.head.linear.out_features

    def train(self, mode: bool = True) -> "EmbeddingModel":
        super().train(mode)
        if mode and (self.freeze_bn or self.freeze_backbone):
            # Frozen BN statistics: with small P x K batches of few classes, running stats drift
            # away from the pretrained ones (standard in DML since Wu et al. 2017).
            for m in self.backbone.modules():
                if self.freeze_backbone or isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.backbone(x))

    def feature_extractor(self) -> nn.Module:
        """Backbone + pooling as one module (shares this model's weights), for the feature cache."""
        return nn.Sequential(self.backbone, self.pool)

    def head_forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head_forward(self.features(x))


def build_model(cfg: ModelConfig, in_channels: int) -> EmbeddingModel:
    backbone = build_backbone(cfg, in_channels)
    return EmbeddingModel(backbone, cfg.embedding_dim, cfg.pooling, cfg.freeze_bn, cfg.freeze_backbone,
                          head_norm=cfg.head == "layernorm_linear", head_init=cfg.head_init)
