"""Is the MLflow store a sweep names usable? Checked by `--dry-run` and before a sweep starts Ray.

Without this, a URI MLflow has no store for (`bogus://x`) failed once Ray had started, with a
48-line traceback, and a server that does not answer cost 260 s of MLflow's silent retries and
then 117 lines. Here: the scheme is one MLflow has a store for, and a server answers an HTTP
request within `SERVER_TIMEOUT_S` -- each failure one line naming where the URI was set.
"""
from __future__ import annotations

import os
import urllib.error
import urllib.request
from typing import Optional
from urllib.parse import urlparse

from sweep.spec import SweepError

SERVER_TIMEOUT_S = 5.0


def check_tracking_store(configured: Optional[str]) -> str:
    """The resolved tracking URI (`sweep.tracking.resolve_tracking_uri`), or `SweepError`."""
    from sweep.tracking import resolve_tracking_uri

    uri = resolve_tracking_uri(configured)
    where = "sweep.mlflow.tracking_uri" if configured else "MLFLOW_TRACKING_URI"
    if not (configured or os.environ.get("MLFLOW_TRACKING_URI")):
        return uri  # the default sqlite store
    _check_scheme(uri, where)
    if urlparse(uri).scheme in ("http", "https"):
        _check_server(uri, where)
    return uri


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
