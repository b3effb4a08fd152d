"""Where datasets live: the ``DML_DATA`` convention for data paths.

Shipped YAMLs write ``data.root: ${DML_DATA}/omniglot/images_background_small1`` rather than a
path of one machine. The data layer expands ``${DML_DATA}`` (or ``$DML_DATA``) to the environment
variable of that name -- read when the data is opened, so each node of a cluster uses its own --
and to ``~/.cache/dml-sweep/data`` when it is unset; a leading ``~`` is expanded too. No other
variable is expanded, and naming one is an error: an unset one would silently become part of a
path (a literal ``./${HOME}`` folder in the cwd, an ``rm -rf ${HOME}`` waiting to happen), and one
read from the environment is a path of one machine again.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from dml_core.params.datasets import DataConfig
from dml_core.data.base import DatasetError

DATA_ENV = "DML_DATA"
DEFAULT_DATA_HOME = Path("~/.cache/dml-sweep/data")

_VARIABLE = re.compile(r"\$\{" + DATA_ENV + r"\}|\$" + DATA_ENV + r"(?![A-Za-z0-9_])")
_ANY_VARIABLE = re.compile(r"\$\{[^}]*\}?|\$[A-Za-z_][A-Za-z0-9_]*")


def data_home() -> Path:
    """``$DML_DATA``, or ``~/.cache/dml-sweep/data`` when it is unset or empty."""
    return Path(os.environ.get(DATA_ENV) or DEFAULT_DATA_HOME).expanduser()


def uses_data_home(path: str) -> bool:
    """True when ``path`` names ``${DML_DATA}``: it is resolved where the data is read, not before."""
    return bool(_VARIABLE.search(path))


def expand_data_path(path: str | None, field: str = "data.root") -> str | None:
    """``path`` with ``${DML_DATA}`` / ``$DML_DATA`` and a leading ``~`` expanded; any other
    variable is a `DatasetError` naming ``field`` and the variable."""
    if path is None:
        return None
    other = _ANY_VARIABLE.search(_VARIABLE.sub("", path))
    if other is not None:
        raise DatasetError(f"{field}: {other.group()}: only ${{{DATA_ENV}}} is expanded in data paths; "
                           "write this part of the path out")
    if uses_data_home(path):
        path = _VARIABLE.sub(lambda _: str(data_home()), path)
    return os.path.expanduser(path)


def resolve_data_paths(cfg: DataConfig) -> DataConfig:
    """A copy of ``cfg`` whose path fields (those its dataset has) are expanded (module docstring)."""
    return cfg.model_copy(update={f: expand_data_path(getattr(cfg, f), f"data.{f}") for f in cfg.path_fields()})
