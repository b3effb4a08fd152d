"""Typed parameters of every component, in light modules (pydantic only, no torch).

Each dataset, backbone, loss and expansion declares its name and parameters here; the
experiment config (`dml_core.config`) builds its ``data``, ``model``, ``loss`` and
``expansion`` sections from these registries, and the torch builders register against the
same parameter classes. Validating a config therefore imports neither torch nor any model.
"""
from dml_core.params.backbones import BACKBONE_PARAMS, ModelConfig
from dml_core.params.datasets import DATASET_PARAMS, BatchConfig, DataConfig
from dml_core.params.expansions import EXPANSION_PARAMS, ExpansionConfig
from dml_core.params.losses import LOSS_PARAMS, LossConfig
from dml_core.params import timm as _timm  # noqa: F401,E402  (registers timm/<name> backbones)

# Experiment config section -> the registry its union is built from.
SECTIONS = {"data": DATASET_PARAMS, "model": BACKBONE_PARAMS, "loss": LOSS_PARAMS, "expansion": EXPANSION_PARAMS}

__all__ = ["BACKBONE_PARAMS", "DATASET_PARAMS", "EXPANSION_PARAMS", "LOSS_PARAMS", "SECTIONS", "BatchConfig",
           "DataConfig", "ExpansionConfig", "LossConfig", "ModelConfig"]
