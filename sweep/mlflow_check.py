"""Is the MLflow store a sweep names usable? Checked by `--dry-run` and before a sweep starts Ray.

Without this, a URI MLflow has no store for (`bogus://x`) failed once Ray had started, with a
48-line traceback, and a server that does not answer cost 260 s of MLflow's silent retries and
then 117 lines. Here, each failure one line naming where the URI was set: the scheme is one MLflow
has a store for; a server answers an HTTP request within `SERVER_TIMEOUT_S`; a sqlite store's
folder exists and the file, where it exists, is a database this driver can write.

Nothing here imports MLflow for the stores a sweep usually names (sqlite, a server): a sweep opens
MLflow itself in its writer thread while Ray and Tune start (`sweep.runner`), and these checks are
what still fails fast, before a sweep folder exists.
"""
from __future__ import annotations

import os
import sqlite3
import urllib.error
import urllib.request
from pathlib import Path
from typing import Optional
from urllib.parse import urlparse

from sweep.spec import SweepError

SERVER_TIMEOUT_S = 5.0
DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
_SQLITE = "sqlite:///"
_KNOWN_SCHEMES = ("sqlite", "http", "https")  # MLflow has stores for these: no need to ask it


def resolve_tracking_uri(configured: Optional[str]) -> str:
    """sweep.mlflow.tracking_uri > env MLFLOW_TRACKING_URI > sqlite:///mlflow.db; a relative sqlite
    path becomes absolute (the driver's cwd) so `--resume` from elsewhere finds the same store."""
    uri = configured or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
    if uri.startswith(_SQLITE) and not uri.startswith(_SQLITE + "/") and uri != _SQLITE + ":memory:":
        uri = _SQLITE + os.path.abspath(uri[len(_SQLITE):])
    is_file_store = uri.startswith("file:") or "://" not in uri
    if is_file_store and os.environ.get("MLFLOW_ALLOW_FILE_STORE", "").lower() != "true":
        raise SweepError(
            f"{_where(configured)}: {uri}: mlflow 3 refuses the file store unless MLFLOW_ALLOW_FILE_STORE=true; "
            f"use {DEFAULT_TRACKING_URI} or an MLflow server"
        )
    return uri


def check_tracking_store(configured: Optional[str]) -> str:
    """The resolved tracking URI (`resolve_tracking_uri`), or `SweepError`."""
    uri = resolve_tracking_uri(configured)
    where = _where(configured)
    scheme = urlparse(uri).scheme
    if scheme not in _KNOWN_SCHEMES:
        _check_scheme(uri, where)
    if scheme in ("http", "https"):
        _check_server(uri, where)
    if uri.startswith(_SQLITE):
        _check_sqlite(uri, where)
    return uri


def _where(configured: Optional[str]) -> str:
    return "sweep.mlflow.tracking_uri" if configured else "MLFLOW_TRACKING_URI"


def _check_scheme(uri: str, where: str) -> None:
    from mlflow.exceptions import MlflowException
    from mlflow.tracking._tracking_service.utils import _tracking_store_registry as registry

    try:
        registry.get_store_builder(uri)
    except MlflowException:
        schemes = ", ".join(sorted(s for s in registry._registry if s))
        raise SweepError(f"{where}: {uri}: MLflow has no store for this URI (schemes: {schemes})") from None


def _check_server(uri: str, where: str) -> None:
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=SERVER_TIMEOUT_S):
            pass
    except urllib.error.HTTPError:
        return  # something answered; MLflow's own errors name what is wrong with it
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise SweepError(f"{where}: {uri}: no MLflow server answers ({reason}) within {SERVER_TIMEOUT_S:g} s; "
                         "start it (mlflow server ...) or fix the URI") from None


def _check_sqlite(uri: str, where: str) -> None:
    """The folder exists (MLflow creates the file, not folders); an existing file is an SQLite
    database this driver may write (a write transaction begun and rolled back: nothing changes)."""
    name = uri[len(_SQLITE):].split("?")[0]
    if name == ":memory:":
        return
    path = Path(name)
    if not path.parent.is_dir():
        raise SweepError(f"{where}: {uri}: the folder {path.parent} does not exist")
    if not path.exists():
        if not os.access(path.parent, os.W_OK):
            raise SweepError(f"{where}: {uri}: the folder {path.parent} is not writable")
        return
    try:
        conn = sqlite3.connect(f"file:{path}?mode=rw", uri=True, timeout=30)
        try:
            conn.execute("PRAGMA schema_version").fetchone()  # "file is not a database" here
            conn.execute("BEGIN IMMEDIATE")  # "attempt to write a readonly database" here
            conn.execute("ROLLBACK")
        finally:
            conn.close()
    except sqlite3.Error as e:
        raise SweepError(f"{where}: {uri}: not a writable SQLite database ({e})") from None
