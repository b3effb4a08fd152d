"""The sweep's console is its own: libraries that log at INFO are turned down before they load."""
from __future__ import annotations

import os
import subprocess
import sys

from sweep_testlib import REPO_ROOT

PROBE = """
import logging
from sweep.run import _quiet_libraries
_quiet_libraries({verbose})
import mlflow  # configures its logger on first import, as the tracker does mid-sweep
print(logging.getLogger("mlflow").getEffectiveLevel())
"""


def mlflow_level(verbose: int) -> int:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_LOGGING_LEVEL"}
    done = subprocess.run([sys.executable, "-c", PROBE.format(verbose=verbose)], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return int(done.stdout.strip().splitlines()[-1])


def test_mlflow_database_setup_lines_stay_off_the_console() -> None:
    # "Creating initial MLflow database tables..." is logged at INFO when the tracker opens a store.
    assert mlflow_level(verbose=0) == 30


def test_verbose_brings_them_back() -> None:
    assert mlflow_level(verbose=1) == 20
