"""Test-wide settings: keep Ray and MLflow from writing into the user's home, and find the data.

Datasets are reached through DML_DATA (`dml_core.data.roots`), as on a user's machine. On this
project's machines the real Omniglot subset sits in the data folder beside the checkout; this is
the one place that knows it, and it only fills in DML_DATA when the caller has not set it.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# matplotlib (the sweep report) would otherwise write its font cache under ~/.config and ~/.cache.
os.environ.setdefault("MPLCONFIGDIR", tempfile.mkdtemp(prefix="dml-tests-mpl-"))

REPO_ROOT = Path(__file__).resolve().parents[1]
_SIBLING_DATA = REPO_ROOT.parent / "shared" / "data"
if "DML_DATA" not in os.environ and _SIBLING_DATA.is_dir():
    os.environ["DML_DATA"] = str(_SIBLING_DATA)

from dml_core.data.roots import data_home  # noqa: E402  (after DML_DATA is settled)

OMNIGLOT_SMALL = data_home() / "omniglot" / "images_background_small1"


@pytest.fixture(scope="session")
def omniglot_root() -> Path:
    if not OMNIGLOT_SMALL.is_dir():
        pytest.skip(f"Omniglot subset not found at {OMNIGLOT_SMALL} (set DML_DATA)")
    return OMNIGLOT_SMALL


@pytest.fixture(scope="session")
def blank_mlflow_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An MLflow sqlite store as a sweep's driver creates it (WAL, schema migrated, no experiment yet),
    made once: creating the schema costs seconds of CPU, copying the file milliseconds."""
    from sweep.tracker import Tracker

    path = tmp_path_factory.mktemp("blank-mlflow") / "mlflow.db"
    Tracker(f"sqlite:///{path}", "blank").client  # noqa: B018 -- creates the store, not the experiment
    with contextlib.closing(sqlite3.connect(path)) as conn:  # everything into the file itself, so a copy holds it
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return path


@pytest.fixture
def mlflow_db(blank_mlflow_db: Path, tmp_path: Path) -> Path:
    """`tmp_path/mlflow.db`: a test's own MLflow store, as the first sweep to use it would have made it.
    For tests whose subject is not the store's creation (that is exercised by `tracking_uri` and by
    the tests that make their own)."""
    shutil.copyfile(blank_mlflow_db, tmp_path / "mlflow.db")
    return tmp_path / "mlflow.db"
