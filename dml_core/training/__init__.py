"""The trainer: `fit(config, report=...)` runs one experiment."""
from dml_core.training.checkpoint import load_checkpoint
from dml_core.training.trainer import FitResult, NonFiniteLossError, Trainer, fit, select_device

__all__ = ["FitResult", "NonFiniteLossError", "Trainer", "fit", "load_checkpoint", "select_device"]
