"""Component kinds: the one place each component's name, parameters and builder are declared.

A `Kind` (dataset, backbone, loss, expansion) maps a name to one `Component`: its typed parameter
model and its builder. One registration gives all three:

    @DATASETS.register("birds", builder="my_package.birds:build")
    class BirdsData(DataConfig):
        root: Annotated[Optional[str], PATH, SELECTS] = None

- The **parameter model** is a pydantic model in a light module (`dml_core/params/`): validating
  a config imports no torch, which is why the builder is named, not imported. The registration
  returns the model with its discriminator field added (``name: Literal["birds"] = "birds"``,
  or ``backbone`` for models), so the name is written once, in the registration. A model that
  declares that `Literal` itself (a script's own component) may leave the name out.
- The **builder** is the torch class or function that makes the component from its validated
  parameters: ``"module:attribute"``, imported the first time it is built, or the object itself
  (a script that defines both halves in one place).

The experiment config's ``data``, ``model``, ``loss`` and ``expansion`` sections are
discriminated unions over the registered parameter models (`Kind.union`); `dml_core.config`
builds the experiment model from them explicitly, and builds it again after a late
registration (`Kind.version` says when).
"""
from __future__ import annotations

import importlib
import typing
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Generic, Literal, Optional, TypeVar, Union

from pydantic import ConfigDict, Discriminator, Tag, TypeAdapter, ValidationError, create_model

from dml_core.errors import ConfigError, did_you_mean, format_validation_error

from dml_core.strict import StrictModel

P = TypeVar("P", bound="ComponentParams")


class UnknownNameError(ValueError):
    """A config named something no registry entry has."""


class Strict(StrictModel):
    """A config section: unknown keys are errors, and so are invalid assignments; a boolean is
    not a number, nor `yes` a boolean (`dml_core.strict`)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ComponentParams(Strict):
    """The parameters a registered component accepts; unknown keys are errors.

    Subclasses per kind (dataset, backbone, loss, expansion) add the fields every component of
    that kind shares; a component's model adds its own.
    """

    # Old or mistaken keys -> the message that says what to write instead.
    renamed: ClassVar[dict[str, str]] = {}
    component: ClassVar[str] = "<unregistered>"  # set by Kind.register
    # What people read in a sweep's labels, tables and plots (`MS` for multi_similarity); None:
    # the registered name itself. (Not `label`: a component may well have a parameter of that name.)
    short_name: ClassVar[Optional[str]] = None

    kind: ClassVar["Kind"]  # set on each kind's base class

    @classmethod
    def of(cls: type[P], **fields: Any) -> P:
        """Validate ``fields`` as the component they name (``DataConfig.of(name="birds", root=...)``).

        Raises `ConfigError` with the one-line message a config file would get.
        """
        try:
            return cls.kind.adapter().validate_python(fields)
        except ValidationError as e:
            raise ConfigError(format_validation_error(e, root=(cls.kind.section,), unions={cls.kind.section: cls.kind})) from None

    def as_dict(self) -> dict[str, Any]:
        return self.model_dump()


@dataclass
class Component(Generic[P]):
    """One registered component: its name, parameter model and (lazily imported) builder."""

    name: str
    params: type[P]
    builder_ref: Union[str, Callable[..., Any]]
    _builder: Optional[Callable[..., Any]] = field(default=None, repr=False)

    @property
    def builder(self) -> Callable[..., Any]:
        if self._builder is None:
            ref = self.builder_ref
            if isinstance(ref, str):
                module, _, attr = ref.partition(":")
                ref = getattr(importlib.import_module(module), attr)
            self._builder = ref
        return self._builder


class Kind(Generic[P]):
    """Name -> `Component` for one kind of component, keyed on the section's ``discriminator``.

    ``prefix`` components stand for a family (``timm`` for ``timm/<any model>``): a value
    ``timm/deit_small_patch16_224`` selects the component registered as ``timm``. ``check`` runs
    once per component when its builder is first imported (e.g. a loss class's family must be
    its parameters' family).
    """

    def __init__(self, kind: str, section: str, discriminator: str,
                 check: Optional[Callable[[Component[P]], None]] = None) -> None:
        self.kind = kind
        self.section = section  # the experiment config section (`model` for backbones)
        self.discriminator = discriminator
        self.default: Optional[str] = None  # the component a section without a discriminator gets
        self.prefixes: set[str] = set()
        self.version = 0  # bumped by each registration: the experiment model is rebuilt on change
        self._check = check
        self._entries: dict[str, Component[P]] = {}
        self._adapter: Optional[TypeAdapter] = None

    # ------------------------------------------------------------------ registration

    def register(self, name: Optional[str] = None, *, builder: Union[str, Callable[..., Any]],
                 default: bool = False, prefix: bool = False) -> Callable[[type[P]], type[P]]:
        """Register the parameter model it decorates under ``name`` with ``builder``; returns the
        model with the discriminator field set to the name (see the module docstring)."""

        def deco(cls: type[P]) -> type[P]:
            tag = name or _literal_value(cls, self.discriminator)
            if tag in self._entries:
                raise KeyError(f"{self.kind} {tag!r} registered twice")
            if not prefix and _literal_value(cls, self.discriminator, required=False) != tag:
                cls = create_model(cls.__name__, __base__=cls, __module__=cls.__module__, __doc__=cls.__doc__,
                                   **{self.discriminator: (Literal[tag], tag)})
            cls.component = tag
            self._entries[tag] = Component(tag, cls, builder)
            if prefix:
                self.prefixes.add(tag)
            if default:
                self.default = tag
            self._adapter = None
            self.version += 1
            return cls

        return deco

    def unregister(self, name: str) -> None:
        """Remove component ``name`` (a test's or a plugin's own); the configs forget it too."""
        self.entry(name)
        del self._entries[name]
        self.prefixes.discard(name)
        if self.default == name:
            self.default = None
        self._adapter = None
        self.version += 1

    # ------------------------------------------------------------------ lookup

    def entry(self, name: str) -> Component[P]:
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}{did_you_mean(name, self._entries)}; choose from {self.names()}"
            ) from None

    def get(self, name: str) -> type[P]:
        """The parameter model of component ``name``."""
        return self.entry(name).params

    def builder(self, name: str) -> Callable[..., Any]:
        """What builds component ``name`` (imported on first use, then checked)."""
        entry = self.entry(name)
        fresh = entry._builder is None
        built = entry.builder
        if fresh and self._check is not None:
            self._check(entry)
        return built

    def build(self, params: ComponentParams, *args: Any, **kwargs: Any) -> Any:
        """The component ``params`` (validated) selects: ``builder(params, *args, **kwargs)``."""
        return self.builder(params.component)(params, *args, **kwargs)

    def names(self) -> list[str]:
        return sorted(self._entries)

    def label(self, name: Any) -> str:
        """The short name people read for component ``name`` (its parameters' ``short_name``); a name
        this kind does not have reads as itself."""
        tag = self.tag_of(name)
        entry = self._entries.get(tag)
        return (entry.params.short_name if entry is not None else None) or str(name)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> typing.Iterator[Component[P]]:
        return iter(self._entries[n] for n in self.names())

    # ------------------------------------------------------------------ the config union

    def union(self) -> Any:
        """The discriminated union of every registered parameter model (default: ``default``)."""
        members = tuple(typing.Annotated[self._entries[n].params, Tag(n)] for n in self.names())

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


def _literal_value(cls: type, field: str, required: bool = True) -> Optional[str]:
    info = cls.model_fields.get(field)
    args = typing.get_args(info.annotation) if info is not None and typing.get_origin(info.annotation) is Literal else ()
    if len(args) != 1 or not isinstance(args[0], str):
        if required:
            raise TypeError(f"{cls.__name__}: register it with a name, or declare {field}: Literal['<name>']")
        return None
    return args[0]
