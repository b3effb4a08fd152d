"""A tiny name -> class registry, the way config names become objects."""
from __future__ import annotations

import difflib
import inspect
from typing import Any, Callable, Generic, TypeVar

T = TypeVar("T")


class UnknownNameError(ValueError):
    """A config named something no registry entry has."""


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

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            hint = difflib.get_close_matches(name, self._entries, n=1)
            extra = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}{extra}; choose from {sorted(self._entries)}"
            ) from None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries


def check_kwargs(fn: Callable[..., Any], kwargs: dict[str, Any], where: str) -> None:
    """Reject keyword arguments that `fn` does not accept, naming the bad key.

    Config blocks such as `loss:` pass their extra keys straight to a constructor; a typo
    there should be a one-line error, not a TypeError deep inside a trial.
    """
    params = inspect.signature(fn).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    accepted = {n for n, p in params.items() if p.kind is not inspect.Parameter.VAR_POSITIONAL}
    for key in kwargs:
        if key not in accepted:
            hint = difflib.get_close_matches(key, accepted, n=1)
            extra = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise UnknownNameError(f"{where}.{key}: unknown parameter{extra}; accepted: {sorted(accepted - {'self'})}")
