"""The base of every typed config model: unknown keys are errors, and a YAML boolean is not a number.

pydantic's lax mode turns `true` into 1 for an int field (`train.epochs: true` trained one epoch)
and `"yes"`/`1` into True for a bool field. Strict mode would refuse those, but also `lr: 1e-3`
(PyYAML reads a float without a dot as a string) and lists for tuple fields, which YAML cannot
write. So only booleans are held to their type: a number field refuses a boolean, a bool field
accepts only true/false; everything else keeps pydantic's usual conversions.
"""
from __future__ import annotations

import types
import typing
from typing import Any, Union

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator


def _scalar_types(annotation: Any) -> set[Any]:
    """The plain types a field annotation accepts at its top level (Optional/Union/Annotated unwrapped)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _scalar_types(typing.get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        return set().union(*(_scalar_types(a) for a in typing.get_args(annotation)))
    return {annotation}


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    @field_validator("*", mode="before")
    @classmethod
    def _booleans_are_not_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        field = cls.model_fields.get(info.field_name or "")
        if field is None or value is None:
            return value
        accepts = _scalar_types(field.annotation)
        if isinstance(value, bool) and bool not in accepts and accepts & {int, float}:
            raise ValueError(f"expected a number, got {str(value).lower()}")
        if accepts == {bool} or accepts == {bool, type(None)}:
            if not isinstance(value, bool):
                raise ValueError(f"expected true or false, got {value!r}")
        return value
