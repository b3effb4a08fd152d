"""Backbone parameters: what `model:` accepts, per backbone (`model.backbone`).

The embedding head's settings (dimension, pooling, freezing, pretrained weights) are shared by
every backbone and live on `ModelConfig`; a backbone adds its own keys (`small_conv`: blocks and
width).
"""
from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field

from dml_core.registry import ComponentParams, ParamRegistry

BACKBONE_PARAMS: ParamRegistry = ParamRegistry("backbone", section="model", discriminator="backbone", default="small_conv")


class ModelConfig(ComponentParams):
    registry: ClassVar[ParamRegistry] = BACKBONE_PARAMS
    # Takes 3-channel input (grayscale data is repeated to RGB), else the data's own channels.
    rgb: ClassVar[bool] = True

    backbone: str
    pretrained: bool = False
    # Papers use 64 .. 2048; a bound turns a typo (an allocator error at model build) into a config error.
    embedding_dim: int = Field(128, ge=2, le=2**16)
    pooling: Literal["avg", "avg_max"] = "avg"
    freeze_bn: bool = False
    freeze_backbone: bool = False

    def backbone_params(self) -> dict[str, Any]:
        """This backbone's own keys (not the shared head settings)."""
        shared = set(ModelConfig.model_fields)
        return {k: v for k, v in self.model_dump().items() if k not in shared}


@BACKBONE_PARAMS.register()
class SmallConvModel(ModelConfig):
    """Conv-BN-ReLU-MaxPool blocks; trains in minutes on CPU."""

    rgb: ClassVar[bool] = False
    backbone: Literal["small_conv"] = "small_conv"
    conv_blocks: int = Field(4, ge=1, le=6)
    conv_width: int = Field(64, ge=8)


@BACKBONE_PARAMS.register()
class ResNet18Model(ModelConfig):
    backbone: Literal["resnet18"] = "resnet18"


@BACKBONE_PARAMS.register()
class ResNet50Model(ModelConfig):
    backbone: Literal["resnet50"] = "resnet50"


@BACKBONE_PARAMS.register()
class GoogLeNetModel(ModelConfig):
    """GoogLeNet / Inception-v1, EE's reference backbone."""

    backbone: Literal["googlenet"] = "googlenet"
