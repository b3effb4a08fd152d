"""Every component kind and the typed parameters of each component, in light modules (pydantic
only, no torch).

Each dataset, backbone, loss and expansion is registered here once -- its name, its parameters
and the (lazily imported) torch code that builds it. The experiment config (`dml_core.config`)
builds its ``data``, ``model``, ``loss`` and ``expansion`` sections from these kinds, so
validating a config imports neither torch nor any model.
"""
from dml_core.params.backbones import BACKBONES, ModelConfig
from dml_core.params.datasets import DATASETS, BatchConfig, DataConfig
from dml_core.params.expansions import EXPANSIONS, ExpansionConfig
from dml_core.params.losses import LOSSES, LossConfig
from dml_core.params import timm as _timm  # noqa: F401,E402  (registers timm/<name> backbones)

# Experiment config section -> the kind its union is built from.
SECTIONS = {"data": DATASETS, "model": BACKBONES, "loss": LOSSES, "expansion": EXPANSIONS}

__all__ = ["BACKBONES", "DATASETS", "EXPANSIONS", "LOSSES", "SECTIONS", "BatchConfig", "DataConfig",
           "ExpansionConfig", "LossConfig", "ModelConfig"]
