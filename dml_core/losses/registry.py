"""The loss classes by name (`loss.name`); each registers against its parameter model."""
from __future__ import annotations

from typing import Callable, TypeVar

from dml_core.params.losses import LossConfig
from dml_core.registry import Registry

T = TypeVar("T", bound=type)

LOSSES: Registry[type] = Registry("loss")


def register_loss(params: type[LossConfig]) -> Callable[[T], T]:
    """Register a loss class for ``params`` (whose Literal declares the name) and name the class."""

    def deco(cls: T) -> T:
        cls.name = params.component
        if cls.family != params.family:
            raise TypeError(f"{cls.__name__} is {cls.family}-based but {params.__name__}.family is {params.family!r}")
        return LOSSES.register_for(params)(cls)

    return deco
