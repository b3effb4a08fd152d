"""One-line messages for users' mistakes: the config error type and the one formatter.

Every config, sweep and CLI error reaches the user as one line naming the file and the dotted
field, e.g. ``experiments/x.yaml: model.conv_blocks: not a parameter of backbone resnet18``.
Component sections (``data``, ``model``, ``loss``, ``expansion``) are discriminated unions;
pydantic puts the chosen component's tag into the error location, which is folded into the
message ("of backbone resnet18") instead of the dotted path.
"""
from __future__ import annotations

import difflib
import re
import typing
from typing import Any, Mapping, Optional, Protocol, Sequence

from pydantic import BaseModel, ValidationError


class Kind(Protocol):
    """What the formatter reads of a component kind (`dml_core.registry.Kind`, which imports
    this module for its messages)."""

    kind: str
    discriminator: str

    def names(self) -> list[str]: ...

    def choices(self) -> list[str]: ...

    def get(self, name: str) -> type[BaseModel]: ...

    def __contains__(self, name: object) -> bool: ...


class ConfigError(ValueError):
    """A user's configuration mistake; the message is one line that names the field or file."""


# Longer messages are cut: a value echoed back (a list that YAML aliases blew up, a whole file)
# must not turn one line into megabytes.
MAX_LINE = 400

# torch re-raises an error of a DataLoader worker with the worker's traceback as its message:
# the first line is "Caught DatasetError in DataLoader worker process 0.", the error's own message
# (naming the file) is the traceback's last line, "<module>.<Type>: <message>".
_WORKER_ERROR = re.compile(r"Caught \w+ in DataLoader worker process \d+\.")
_TYPE_PREFIX = re.compile(r"^[A-Za-z_][\w.]*: ")


def did_you_mean(word: str, choices: Any) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``choices``, or ``""``."""
    hint = difflib.get_close_matches(str(word), list(choices), n=1)
    return f" (did you mean {hint[0]!r}?)" if hint else ""


def first_line(error: BaseException) -> str:
    """The first line of an exception's message (its type name when it has none), at most
    `MAX_LINE` characters; for an error raised in a DataLoader worker, that error's message."""
    text = str(error).strip()
    if _WORKER_ERROR.match(text):
        text = _TYPE_PREFIX.sub("", text.splitlines()[-1].strip(), count=1)
    line = text.splitlines()[0] if text else type(error).__name__
    return line if len(line) <= MAX_LINE else f"{line[:MAX_LINE - 25]} ... ({len(line)} characters)"


def _submodel(annotation: Any) -> Optional[type[BaseModel]]:
    for c in typing.get_args(annotation) or (annotation,):
        if isinstance(c, type) and issubclass(c, BaseModel):
            return c
    return None


_DOTTED_HEAD = re.compile(r"^[A-Za-z0-9_.\-\[\]]+: ")


def format_validation_error(
    err: ValidationError,
    source: Optional[str] = None,
    *,
    root: Sequence[str] = (),
    model: Optional[type[BaseModel]] = None,
    unions: Mapping[str, Kind] = {},
) -> str:
    """``<source>: <dotted field>: <problem>`` for the first error (``(+N more)`` if several).

    ``root`` prefixes the location (``("loss",)`` when one section is validated alone);
    ``model`` is the validated model (for did-you-mean on unknown keys); ``unions`` maps the
    section names that are component unions to their registries.
    """
    first = err.errors()[0]
    loc = [*root, *(str(p) for p in first["loc"])]
    registry, component = None, None
    if loc and loc[0] in unions:
        registry = unions[loc[0]]
        if len(loc) > 1 and loc[1] in registry:
            component = loc.pop(1)
    dotted = ".".join(loc)
    kind, msg = first["type"], first["msg"].removeprefix("Value error, ")
    if kind == "extra_forbidden":
        text = f"{dotted}: {_unknown_key(loc, len(root), registry, component, model, unions)}"
    elif kind == "union_tag_invalid" and registry is not None:
        tag = first["ctx"]["tag"]
        choices = registry.choices()
        text = (f"{dotted}.{registry.discriminator}: unknown {registry.kind} {tag!r}"
                f"{did_you_mean(tag, registry.names())}; choose from {choices}")
    elif kind == "union_tag_not_found" or (kind == "model_attributes_type" and registry is not None):
        text = f"{dotted}: must be a mapping"
    elif not dotted:
        text = msg
    elif _DOTTED_HEAD.match(msg):
        text = f"{dotted}.{msg}"  # a validator named the key below its own location
    else:
        text = f"{dotted}: {msg}"
    more = f" (+{err.error_count() - 1} more)" if err.error_count() > 1 else ""
    return f"{source}: {text}{more}" if source else f"{text}{more}"


def _unknown_key(loc: list[str], skip: int, registry: Optional[Kind], component: Optional[str],
                 model: Optional[type[BaseModel]], unions: Mapping[str, Kind]) -> str:
    key = loc[-1]
    if registry is not None and component is not None and len(loc) == 2:
        params = registry.get(component)
        if key in params.renamed:
            return params.renamed[key]
        owners = [n for n in registry.names() if key in registry.get(n).model_fields]
        belongs = f"; it belongs to {registry.kind} {', '.join(owners)}" if owners else ""
        return f"not a parameter of {registry.kind} {component}{did_you_mean(key, params.model_fields)}{belongs}"
    fields = _fields_at(model, loc[:-1] if registry is not None else loc[skip:-1], registry, component, unions)
    return f"unknown key{did_you_mean(key, fields)}"


def _fields_at(model: Optional[type[BaseModel]], path: list[str], registry: Optional[Kind],
               component: Optional[str], unions: Mapping[str, Kind]) -> list[str]:
    """Field names of the (sub)model at ``path``, for did-you-mean; [] when unknown."""
    node = model
    for i, part in enumerate(path):
        if i == 0 and registry is not None:
            node = registry.get(component) if component else None
        elif node is not None and part in node.model_fields:
            node = _submodel(node.model_fields[part].annotation)
        else:
            node = None
        if node is None:
            return []
    return list(node.model_fields) if node is not None else []
