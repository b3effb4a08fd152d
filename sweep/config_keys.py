"""Which dotted keys (`model.embedding_dim`, `loss.margin`) a sweep may set: the settable fields
of `ExperimentConfig` and of every registered component, so a typo fails before Ray starts."""
from __future__ import annotations

import difflib
import typing
from typing import Any

from pydantic import BaseModel

from dml_core.config import ExperimentConfig
from dml_core.params import SECTIONS


def _submodel(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside `X` or `Optional[X]`, if any."""
    candidates = typing.get_args(annotation) or (annotation,)
    for c in candidates:
        if isinstance(c, type) and issubclass(c, BaseModel):
            return c
    return None


def _models_of(model: type[BaseModel], name: str) -> list[type[BaseModel]]:
    """The model(s) behind field `name`: every registered component for a component section."""
    if model is ExperimentConfig and name in SECTIONS:
        registry = SECTIONS[name]
        return [registry.get(n) for n in registry.names()]
    sub = _submodel(model.model_fields[name].annotation)
    return [sub] if sub else []


def _leaf_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    keys: list[str] = []
    for name in model.model_fields:
        subs = _models_of(model, name)
        if not subs:
            keys.append(f"{prefix}{name}")
        for sub in subs:
            keys.extend(k for k in _leaf_keys(sub, f"{prefix}{name}.") if k not in keys)
    return keys


# Seeds and the sweep block itself are not ablation axes: `seeds:` pairs trials, and a sweep
# cannot sweep its own definition.
_RESERVED = {"seed": "use sweep.seeds", "sweep": "the sweep block cannot be swept"}


def check_config_key(dotted: str) -> None:
    """Raise `ValueError` unless `dotted` names a settable field of `ExperimentConfig`.

    In a component section the key must belong to some registered component
    (`expansion.n_inner_pts`: EE); whether it belongs to the component a cell chooses is checked
    when each trial config is validated (`--dry-run`).
    """
    head = dotted.split(".", 1)[0]
    if head in _RESERVED:
        raise ValueError(_RESERVED[head])
    models: list[type[BaseModel]] = [ExperimentConfig]
    parts = dotted.split(".")
    for i, part in enumerate(parts):
        owners = [m for m in models if part in m.model_fields]
        if not owners:
            hint = difflib.get_close_matches(dotted, _leaf_keys(ExperimentConfig), n=1)
            extra = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise ValueError(f"unknown config key{extra}")
        subs = [sub for m in owners for sub in _models_of(m, part)]
        if not subs:
            if i != len(parts) - 1:
                raise ValueError(f"{'.'.join(parts[: i + 1])} is not a section")
            return
        models = subs
    raise ValueError("names a section, not a field")


def check_keys(keys: typing.Iterable[str], allow: tuple[str, ...] = ()) -> None:
    for key in keys:
        if key in allow:
            continue
        try:
            check_config_key(key)
        except ValueError as e:
            # pydantic reports the location; we add the key so the message names it.
            raise ValueError(f"{key}: {e}") from None
