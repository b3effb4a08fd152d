import pytest
import torch

from dml_core.params.backbones import BACKBONES, ModelConfig
from dml_core.models import ModelError, build_backbone, build_model


@pytest.mark.parametrize("backbone, channels, size", [("small_conv", 1, 8), ("small_conv", 3, 28), ("resnet18", 3, 32)])
@pytest.mark.parametrize("pooling", ["avg", "avg_max"])
def test_embeddings_are_unit_norm(backbone, channels, size, pooling):
    model = build_model(ModelConfig.of(backbone=backbone, embedding_dim=16, pooling=pooling), channels)
    out = model(torch.randn(3, channels, size, size))
    assert out.shape == (3, 16)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(3))


def test_features_then_head_equals_forward():
    model = build_model(ModelConfig.of(embedding_dim=8), 1).eval()
    x = torch.randn(2, 1, 28, 28)
    torch.testing.assert_close(model.head_forward(model.features(x)), model(x))


def test_freeze_bn_keeps_running_stats():
    model = build_model(ModelConfig.of(embedding_dim=8, freeze_bn=True), 1)
    model.train()
    bn = next(m for m in model.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d))
    before = bn.running_mean.clone()
    model(torch.randn(4, 1, 16, 16) * 5 + 3)
    torch.testing.assert_close(bn.running_mean, before)
    assert model.head.training  # only the backbone's BN is frozen


def test_freeze_backbone_has_no_trainable_backbone_params():
    model = build_model(ModelConfig.of(embedding_dim=8, freeze_backbone=True), 1)
    assert not any(p.requires_grad for p in model.backbone.parameters())
    assert all(p.requires_grad for p in model.head.parameters())


def test_torchvision_backbone_rejects_grayscale():
    with pytest.raises(ModelError, match="model.backbone"):
        build_model(ModelConfig.of(backbone="resnet18"), 1)


def test_pretrained_without_weights_is_one_clear_line(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    import torchvision.models as tvm

    def offline(*a, **k):
        raise OSError("network unreachable")

    monkeypatch.setattr(tvm, "get_model", offline)
    with pytest.raises(ModelError) as info:
        build_model(ModelConfig.of(backbone="resnet18", pretrained=True), 3)
    assert "model.pretrained" in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("name", [n for n in BACKBONES.names() if n not in BACKBONES.prefixes])
def test_every_registered_backbone_reports_its_feature_channels(name):
    # From the registry: a new backbone is tested with no edit here (timm/<name> has its own tests).
    cfg = ModelConfig.of(backbone=name)
    backbone = build_backbone(cfg, 3)
    with torch.no_grad():
        features = backbone.eval()(torch.randn(1, 3, 32, 32))
    assert features.dim() == 4 and features.shape[1] == backbone.out_channels
