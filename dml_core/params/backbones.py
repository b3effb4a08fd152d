"""Backbone parameters: what `model:` accepts, per backbone (`model.backbone`), and the
registration of every backbone (its name, these parameters and its builder).

The embedding head's settings (dimension, pooling, freezing, pretrained weights) are shared by
every backbone and live on `ModelConfig`; a backbone adds its own keys (the small
conv net: blocks and width).
"""
from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field

from dml_core.registry import ComponentParams, Kind

BACKBONES: Kind = Kind("backbone", section="model", discriminator="backbone")


class ModelConfig(ComponentParams):
    kind: ClassVar[Kind] = BACKBONES
    # Takes 3-channel input (grayscale data is repeated to RGB), else the data's own channels.
    rgb: ClassVar[bool] = True

    backbone: str
    pretrained: bool = False
    # Papers use 64 .. 2048; a bound turns a typo (an allocator error at model build) into a config error.
    embedding_dim: int = Field(128, ge=2, le=2**16)
    pooling: Literal["avg", "avg_max"] = "avg"
    freeze_bn: bool = False
    freeze_backbone: bool = False
    # The embedding head (`dml_core.models.head`): `linear` (Proxy-Anchor, EE) or
    # `layernorm_linear` = LayerNorm without affine parameters, then linear (SEE's reference,
    # --use_lastnorm); both end in L2 normalisation.
    head: Literal["linear", "layernorm_linear"] = "linear"
    # Initialisation of the head's linear weight (bias 0): `kaiming_normal` (fan_out,
    # Proxy-Anchor's), `orthogonal` (SEE's), `xavier_uniform` (MXNet Xavier(magnitude=2), EE's).
    head_init: Literal["kaiming_normal", "orthogonal", "xavier_uniform"] = "kaiming_normal"

    def backbone_params(self) -> dict[str, Any]:
        """This backbone's own keys (not the shared head settings)."""
        shared = set(ModelConfig.model_fields)
        return {k: v for k, v in self.model_dump().items() if k not in shared}


@BACKBONES.register("small_conv", builder="dml_core.models.backbones:conv_blocks", default=True)
class SmallConvModel(ModelConfig):
    """Conv-BN-ReLU-MaxPool blocks; trains in minutes on CPU."""

    rgb: ClassVar[bool] = False
    conv_blocks: int = Field(4, ge=1, le=6)
    conv_width: int = Field(64, ge=8)


# torchvision models: the builders load the architecture the name selects.
@BACKBONES.register("resnet18", builder="dml_core.models.backbones:resnet")
class ResNet18Model(ModelConfig):
    pass


@BACKBONES.register("resnet50", builder="dml_core.models.backbones:resnet")
class ResNet50Model(ModelConfig):
    pass


@BACKBONES.register("googlenet", builder="dml_core.models.backbones:inception_v1")
class GoogLeNetModel(ModelConfig):
    """GoogLeNet / Inception-v1, EE's reference backbone."""
