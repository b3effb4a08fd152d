"""Registries: the one place each component name is declared.

Two kinds work together. A `ParamRegistry` maps a name to a component's typed parameter model
(a pydantic model in a light module: no torch), and is what the experiment config's
discriminated unions are built from. A `Registry` maps the same name to the thing that builds
the component (a torch class or function); it registers *against the parameter model*
(`register_for`), so a name is written once, in the parameter model.
"""
from __future__ import annotations

import difflib
import typing
from typing import Any, Callable, ClassVar, Generic, Optional, TypeVar

from pydantic import BaseModel, ConfigDict, Discriminator, Tag, TypeAdapter

from dml_core.strict import StrictModel

T = TypeVar("T")
P = TypeVar("P", bound="ComponentParams")


class UnknownNameError(ValueError):
    """A config named something no registry entry has."""


def did_you_mean(word: str, choices: Any) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``choices``, or ``""``."""
    hint = difflib.get_close_matches(str(word), list(choices), n=1)
    return f" (did you mean {hint[0]!r}?)" if hint else ""


class _Strict(StrictModel):
    """Unknown keys are errors; booleans are not numbers (`dml_core.strict`)."""


class ComponentParams(_Strict):
    """The parameters a registered component accepts; unknown keys are errors.

    Subclasses per kind (dataset, backbone, loss, expansion) add the fields every component of
    that kind shares; a component's model adds its own and declares its name in the Literal of
    the kind's discriminator field (``name``, or ``backbone`` for models).
    """

    # Old or mistaken keys -> the message that says what to write instead.
    renamed: ClassVar[dict[str, str]] = {}
    component: ClassVar[str] = "<unregistered>"  # set by ParamRegistry.register

    registry: ClassVar["ParamRegistry"]  # set on each kind's base class

    @classmethod
    def of(cls: type[P], **fields: Any) -> P:
        """Validate ``fields`` as the component they name (``DataConfig.of(name="cub200", root=...)``).

        Raises `ConfigError` with the one-line message a config file would get.
        """
        from pydantic import ValidationError

        from dml_core.errors import ConfigError, format_validation_error

        try:
            return cls.registry.adapter().validate_python(fields)
        except ValidationError as e:
            raise ConfigError(format_validation_error(e, root=(cls.registry.section,), unions={cls.registry.section: cls.registry})) from None

    def as_dict(self) -> dict[str, Any]:
        return self.model_dump()


class Registry(Generic[T]):
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._entries:
                raise KeyError(f"{self.kind} {name!r} registered twice")
            self._entries[name] = obj
            return obj

        return deco

    def register_for(self, params: type[ComponentParams]) -> Callable[[T], T]:
        """Register the builder of the component whose parameter model is ``params``."""
        return self.register(params.component)

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}{did_you_mean(name, self._entries)}; choose from {sorted(self._entries)}"
            ) from None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries


class ParamRegistry(Registry[type[P]]):
    """Name -> parameter model of one kind of component, keyed on ``discriminator``.

    ``prefixes`` are names that stand for a family (``timm`` for ``timm/<any model>``): a value
    ``timm/deit_small_patch16_224`` selects the model registered as ``timm``.
    """

    def __init__(self, kind: str, section: str, discriminator: str, default: str) -> None:
        super().__init__(kind)
        self.section = section  # the experiment config section (`model` for backbones)
        self.discriminator = discriminator
        self.default = default
        self.prefixes: set[str] = set()
        self.on_change: list[Callable[[], None]] = []  # e.g. rebuild the experiment config
        self._adapter: Optional[TypeAdapter] = None

    def register(self, name: Optional[str] = None, *, prefix: bool = False) -> Callable[[type[P]], type[P]]:  # type: ignore[override]
        def deco(cls: type[P]) -> type[P]:
            tag = name or _literal_value(cls, self.discriminator)
            cls.component = tag
            if prefix:
                self.prefixes.add(tag)
            Registry.register(self, tag)(cls)
            self._adapter = None
            for hook in self.on_change:
                hook()
            return cls

        return deco

    def union(self) -> Any:
        """The discriminated union of every registered parameter model (default: ``default``)."""
        members = tuple(typing.Annotated[self._entries[n], Tag(n)] for n in self.names())

        def tag(value: Any) -> Optional[str]:
            if isinstance(value, dict):
                return self.tag_of(value.get(self.discriminator, self.default))
            if isinstance(value, ComponentParams):
                return value.component
            return None

        return typing.Annotated[typing.Union[members], Discriminator(tag)]

    def adapter(self) -> TypeAdapter:
        if self._adapter is None:
            self._adapter = TypeAdapter(self.union())
        return self._adapter

    def default_params(self) -> ComponentParams:
        return self.get(self.default)()

    def tag_of(self, value: Any) -> str:
        """The registry name a discriminator value selects (``timm/x`` -> ``timm``)."""
        text = str(value)
        head = text.split("/", 1)[0]
        return head if "/" in text and head in self.prefixes else text

    def choices(self) -> list[str]:
        return [f"{n}/<name>" if n in self.prefixes else n for n in self.names()]


def _literal_value(cls: type, field: str) -> str:
    args = getattr(cls.model_fields[field].annotation, "__args__", ())
    if len(args) != 1 or not isinstance(args[0], str):
        raise TypeError(f"{cls.__name__}.{field} must be Literal['<name>'] or be registered with a name")
    return args[0]
