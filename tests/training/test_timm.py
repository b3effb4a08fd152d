"""timm backbones (`model.backbone: timm/<name>`), built without weights on tiny inputs."""
from __future__ import annotations

import pytest
import torch

from dml_core.config import config_from_dict
from dml_core.errors import ConfigError
from dml_core.params.backbones import ModelConfig
from dml_core.models import ModelError, build_model


@pytest.mark.parametrize("name", ["timm/deit_tiny_patch16_224", "timm/resnet18"])
def test_timm_backbones_embed_tiny_inputs(name):
    model = build_model(ModelConfig.of(backbone=name, embedding_dim=16, pooling="avg"), 3).eval()
    out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 16)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(2))
    assert model.backbone.input_size == (3, 224, 224)


def test_timm_renormalises_to_the_models_own_statistics():
    # Without pretrained weights the pipeline maps [0, 1] to [-1, 1]; the backbone's first step
    # turns that into the model's own normalisation: ImageNet statistics for DeiT, ...
    raw = torch.rand(1, 3, 4, 4)
    pipeline = (raw - 0.5) / 0.5
    deit = build_model(ModelConfig.of(backbone="timm/deit_tiny_patch16_224"), 3).backbone
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    torch.testing.assert_close(deit.renormalise(pipeline), (raw - mean) / std)
    # ... and [-1, 1] itself for Inception-v3 (trained on mean = std = 0.5): nothing changes.
    inception = build_model(ModelConfig.of(backbone="timm/inception_v3"), 3).backbone
    torch.testing.assert_close(inception.renormalise(pipeline), pipeline)


def test_unknown_timm_model_fails_at_load_with_a_suggestion():
    with pytest.raises(ConfigError, match=r"model\.backbone: unknown timm model 'deit_smal_patch16_224' "
                                          r"\(did you mean 'deit_small_patch16_224'\?\)"):
        config_from_dict({"model": {"backbone": "timm/deit_smal_patch16_224"}})
    with pytest.raises(ConfigError, match=r"model\.conv_blocks: not a parameter of backbone timm"):
        config_from_dict({"model": {"backbone": "timm/resnet18", "conv_blocks": 2}})


def test_pretrained_offline_is_one_clear_line(monkeypatch):
    import timm

    def offline(*args, **kwargs):
        raise OSError("We couldn't connect to 'https://huggingface.co'\nmore detail")

    monkeypatch.setattr(timm, "create_model", offline)
    with pytest.raises(ModelError) as info:
        build_model(ModelConfig.of(backbone="timm/deit_small_patch16_224", pretrained=True), 3)
    assert str(info.value).startswith("model.pretrained: cannot load timm weights for 'deit_small_patch16_224'")
    assert "\n" not in str(info.value)
