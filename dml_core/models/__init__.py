"""Backbones and the embedding head."""
from dml_core.models.backbones import ModelError, build_backbone
from dml_core.models.embedding import EmbeddingModel, build_model
from dml_core.models.head import EmbeddingHead, GlobalPool

__all__ = ["ModelError", "build_backbone", "EmbeddingModel", "build_model",
           "EmbeddingHead", "GlobalPool"]
