"""Test-wide settings: keep Ray and MLflow from writing into the user's home, and find shared data."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# matplotlib (the sweep report) would otherwise write its font cache under ~/.config and ~/.cache.
os.environ.setdefault("MPLCONFIGDIR", tempfile.mkdtemp(prefix="dml-tests-mpl-"))

REPO_ROOT = Path(__file__).resolve().parents[1]
OMNIGLOT_SMALL = REPO_ROOT.parent / "shared" / "data" / "omniglot" / "images_background_small1"


@pytest.fixture(scope="session")
def omniglot_root() -> Path:
    if not OMNIGLOT_SMALL.is_dir():
        pytest.skip(f"shared Omniglot subset not found at {OMNIGLOT_SMALL}")
    return OMNIGLOT_SMALL
