"""The name -> loss class registry that config files refer to (`loss.name`)."""
from __future__ import annotations

from typing import Callable, TypeVar

from dml_core.registry import Registry

T = TypeVar("T", bound=type)

LOSSES: Registry[type] = Registry("loss")


def register_loss(name: str) -> Callable[[T], T]:
    """Register a loss class under ``name`` and record the name on it (for error messages)."""

    def deco(cls: T) -> T:
        cls.name = name
        return LOSSES.register(name)(cls)

    return deco
