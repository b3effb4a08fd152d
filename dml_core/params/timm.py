"""Parameters of timm backbones: ``model.backbone: timm/<model name>`` for any timm model.

The name is checked against timm's registry when the config is loaded (this imports timm and
torch, for timm configs only).
"""
from __future__ import annotations

from typing import ClassVar

from pydantic import Field, field_validator

from dml_core.errors import did_you_mean
from dml_core.params.backbones import BACKBONES, ModelConfig

PREFIX = "timm/"


@BACKBONES.register("timm", builder="dml_core.models.timm_backbone:build", prefix=True)
class TimmModel(ModelConfig):
    """Any model of PyTorch Image Models (timm), e.g. ``timm/deit_small_patch16_224``."""

    rgb: ClassVar[bool] = True
    backbone: str = Field(pattern=r"^timm/.+")
    # Freeze the patch embedding (ViT / DeiT): SEE's reference does (freeze(body, 0)).
    freeze_patch_embed: bool = False

    @property
    def timm_name(self) -> str:
        return self.backbone.removeprefix(PREFIX)

    @field_validator("backbone")
    @classmethod
    def _known(cls, v: str) -> str:
        import timm

        name = v.removeprefix(PREFIX)
        if not timm.is_model(name):
            raise ValueError(f"unknown timm model {name!r}{did_you_mean(name, timm.list_models())}")
        return v
