"""The backbones' builders: each returns a feature map (B, C, H, W) and reports its channel count.

Names, parameters and the builder each name uses are registered in `dml_core.params.backbones`.

The classification layers of torchvision models are removed: DML puts its own pooling and
embedding head on top (Ko & Gu 2020 and Le & Woo 2024 both use GAP + linear + L2).
"""
from __future__ import annotations

import torch
from torch import nn

from dml_core.errors import first_line
from dml_core.params.backbones import BACKBONES, GoogLeNetModel, ModelConfig, SmallConvModel


class ModelError(ValueError):
    """A model configuration that cannot be built; the message names the field."""


class Backbone(nn.Module):
    """A feature extractor; `out_channels` is the channel count of its feature map."""

    out_channels: int


class SmallConvNet(Backbone):
    """Conv-BN-ReLU-MaxPool blocks (the 4-block net of few-shot/Omniglot work).

    Trains in minutes on CPU for 8-105 px images. Pooling is skipped once the map is 1 px wide so
    that tiny inputs (8x8 digits) still work with 4 blocks.
    """

    def __init__(self, in_channels: int = 1, blocks: int = 4, width: int = 64) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = in_channels
        for _ in range(blocks):
            layers.append(
                nn.Sequential(nn.Conv2d(c, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True))
            )
            c = width
        self.blocks = nn.ModuleList(layers)
        self.pool = nn.MaxPool2d(2)
        self.out_channels = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
            if min(x.shape[-2:]) >= 2:
                x = self.pool(x)
        return x


class TorchvisionBackbone(Backbone):
    """Wraps a torchvision classifier, keeping its layers up to the last feature map."""

    def __init__(self, body: nn.Module, out_channels: int) -> None:
        super().__init__()
        self.body = body
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def _torchvision_weights(arch: str, pretrained: bool):
    if not pretrained:
        return None
    import torchvision.models as tvm

    return tvm.get_model_weights(arch).DEFAULT


def _load(arch: str, pretrained: bool, **kwargs) -> nn.Module:
    import torchvision.models as tvm

    weights = _torchvision_weights(arch, pretrained)
    try:
        return tvm.get_model(arch, weights=weights, **kwargs)
    except Exception as e:  # no cache and no network: urllib/OSError/RuntimeError
        hub = torch.hub.get_dir()
        reason = first_line(e)
        raise ModelError(
            f"model.pretrained: cannot load torchvision weights {weights} for {arch!r} "
            f"(not cached under {hub}/checkpoints and download failed: {reason}); "
            "put the file there or set model.pretrained: false"
        ) from None


def conv_blocks(cfg: SmallConvModel, in_channels: int) -> Backbone:
    if cfg.pretrained:
        raise ModelError(f"model.pretrained: {cfg.backbone} has no pretrained weights; set model.pretrained: false")
    return SmallConvNet(in_channels, cfg.conv_blocks, cfg.conv_width)


def resnet(cfg: ModelConfig, in_channels: int) -> Backbone:
    """A torchvision ResNet, the one ``model.backbone`` names, up to its last stage."""
    _require_rgb(cfg.backbone, in_channels)
    net = _load(cfg.backbone, cfg.pretrained)
    body = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2, net.layer3, net.layer4)
    return TorchvisionBackbone(body, net.fc.in_features)  # 512 (ResNet-18/34), 2048 (ResNet-50 and up)


def inception_v1(cfg: GoogLeNetModel, in_channels: int) -> Backbone:
    """GoogLeNet / Inception-v1, EE's reference backbone (Szegedy et al. 2015)."""
    _require_rgb(cfg.backbone, in_channels)
    pretrained = cfg.pretrained
    # torchvision's pretrained GoogLeNet expects aux heads at load time; we drop them after.
    kwargs = {} if pretrained else {"aux_logits": False, "init_weights": True}
    net = _load(cfg.backbone, pretrained, **kwargs)
    names = ["conv1", "maxpool1", "conv2", "conv3", "maxpool2", "inception3a", "inception3b", "maxpool3",
             "inception4a", "inception4b", "inception4c", "inception4d", "inception4e", "maxpool4",
             "inception5a", "inception5b"]
    body = nn.Sequential(*(getattr(net, n) for n in names))
    if pretrained:
        # The ImageNet weights were trained on inputs torchvision re-normalises; keep that step.
        body = nn.Sequential(_GoogLeNetInputTransform(), body)
    return TorchvisionBackbone(body, 1024)


class _GoogLeNetInputTransform(nn.Module):
    """torchvision's `transform_input` for its pretrained GoogLeNet (weights ported from TF)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ch0 = x[:, 0:1] * (0.229 / 0.5) + (0.485 - 0.5) / 0.5
        ch1 = x[:, 1:2] * (0.224 / 0.5) + (0.456 - 0.5) / 0.5
        ch2 = x[:, 2:3] * (0.225 / 0.5) + (0.406 - 0.5) / 0.5
        return torch.cat((ch0, ch1, ch2), 1)


def _require_rgb(arch: str, in_channels: int) -> None:
    if in_channels != 3:
        raise ModelError(f"model.backbone: {arch} takes 3-channel input, got {in_channels} (grayscale data is repeated to RGB by the data pipeline)")


def build_backbone(cfg: ModelConfig, in_channels: int) -> Backbone:
    """The feature extractor `cfg` (a validated `model:` section) names, for ``in_channels`` input."""
    return BACKBONES.build(cfg, in_channels)
