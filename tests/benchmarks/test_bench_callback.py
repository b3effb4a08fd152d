"""`benchmarks/bench_callback.py` replays trials into the sweep's Tune callback as the driver builds it:
a change of the callback's signature must not leave the benchmark behind."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_bench_callback_replays_a_few_trials() -> None:
    out = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_callback.py"), "--trials", "4"],
                         capture_output=True, text=True, timeout=300, cwd=REPO,
                         env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert "4 trials:" in out.stdout and "ms of driver CPU per trial" in out.stdout and "s of wall until MLflow had them all" in out.stdout
