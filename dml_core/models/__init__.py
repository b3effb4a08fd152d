"""Backbones and the embedding head."""
from dml_core.models.backbones import BACKBONES, ModelError, build_backbone
from dml_core.models.embedding import EmbeddingModel, build_model
from dml_core.models.head import EmbeddingHead, GlobalPool
from dml_core.models import timm_backbone as _timm  # noqa: F401,E402  (registers timm/<name>)

__all__ = ["BACKBONES", "ModelError", "build_backbone", "EmbeddingModel", "build_model",
           "EmbeddingHead", "GlobalPool"]
