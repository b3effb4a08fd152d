"""Backbones from PyTorch Image Models (timm): ``model.backbone: timm/<model name>``.

The model is created without its classifier (``num_classes=0``) and keeps its own pooling
(the CLS token for ViT/DeiT, global pooling for CNNs), so it emits (B, num_features), returned
as a 1 x 1 feature map for the shared pooling + embedding head. Pretrained weights come from
timm (Hugging Face hub cache; offline without a cached copy: one clear `ModelError`).

Normalisation and input size are the model's own (`timm.data.resolve_data_config`): the data
pipeline normalises with ImageNet statistics (pretrained) or to [-1, 1] (not), and the first
layer here maps that to the mean / std the model was trained with. ViT-style models take any
input size (``dynamic_img_size``); set ``data.image_size`` to ``input_size`` (224 for
``deit_small_patch16_224``) to match their pretraining.
"""
from __future__ import annotations

import torch
from torch import nn

from dml_core.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from dml_core.errors import first_line
from dml_core.models.backbones import Backbone, ModelError
from dml_core.params.timm import TimmModel


class _Renormalise(nn.Module):
    """x normalised by (mean_in, std_in) -> normalised by (mean_out, std_out), per channel."""

    def __init__(self, mean_in, std_in, mean_out, std_out) -> None:
        super().__init__()
        t = lambda v: torch.tensor(v, dtype=torch.float32).view(1, -1, 1, 1)  # noqa: E731
        self.register_buffer("scale", t(std_in) / t(std_out), persistent=False)
        self.register_buffer("shift", (t(mean_in) - t(mean_out)) / t(std_out), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.shift


class TimmBackbone(Backbone):
    def __init__(self, model: nn.Module, pipeline_pretrained: bool) -> None:
        super().__init__()
        import timm.data

        self.model = model
        self.out_channels = model.num_features
        data = timm.data.resolve_data_config({}, model=model)
        self.input_size = tuple(data["input_size"])
        mean_in, std_in = (IMAGENET_MEAN, IMAGENET_STD) if pipeline_pretrained else ((0.5,) * 3, (0.5,) * 3)
        self.renormalise = _Renormalise(mean_in, std_in, data["mean"], data["std"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.model.forward_head(self.model.forward_features(self.renormalise(x)), pre_logits=True)
        return features[:, :, None, None]


def build(cfg: TimmModel, in_channels: int) -> Backbone:
    import timm

    if in_channels != 3:
        raise ModelError(f"model.backbone: {cfg.backbone} takes 3-channel input, got {in_channels}")
    kwargs = {"num_classes": 0}
    try:
        try:  # ViT-style models: any input size (positional embeddings interpolated)
            model = timm.create_model(cfg.timm_name, pretrained=cfg.pretrained, dynamic_img_size=True, **kwargs)
        except TypeError:  # models without that option
            model = timm.create_model(cfg.timm_name, pretrained=cfg.pretrained, **kwargs)
    except (OSError, RuntimeError, ValueError) as e:  # no network / no cache: huggingface_hub, urllib
        if not cfg.pretrained:
            raise
        raise ModelError(
            f"model.pretrained: cannot load timm weights for {cfg.timm_name!r} ({first_line(e)}); "
            "put them in the Hugging Face cache (HF_HOME) or set model.pretrained: false"
        ) from None
    if cfg.freeze_patch_embed:
        if not hasattr(model, "patch_embed"):
            raise ModelError(f"model.freeze_patch_embed: {cfg.timm_name} has no patch embedding")
        model.patch_embed.requires_grad_(False)
    return TimmBackbone(model, cfg.pretrained)
