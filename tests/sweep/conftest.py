"""Fixtures for the sweep tests: a tiny local Ray and an MLflow sqlite store in a temp dir."""
from __future__ import annotations

from typing import Iterator

import pytest

# The environment (no Ray auth token, no MLflow telemetry, matplotlib's cache in a temp dir)
# is set by tests/conftest.py for the whole suite.


@pytest.fixture(scope="session")
def ray_local() -> Iterator[None]:
    """One 2-CPU local Ray for all in-process sweeps (starting one costs ~6 s and ~670 MB)."""
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING")
    try:
        yield
    finally:
        ray.shutdown()


@pytest.fixture(scope="session")
def tracking_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One sqlite store for the session (creating its schema takes seconds); sweeps use their own
    MLflow experiment in it."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
