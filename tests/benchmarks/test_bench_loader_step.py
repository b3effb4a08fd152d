"""`benchmarks/bench_loader.py --step`: the whole training step with real images against the plain
torchvision loop runs end to end and prints both arms and their paired ratio, the CPU row included
with a loader worker (its CPU time is counted with the process's)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_step_mode_prints_both_arms_and_the_paired_ratio(omniglot_root: Path) -> None:
    done = subprocess.run([sys.executable, "benchmarks/bench_loader.py", "--step", "--threads", "1",
                           "--rounds", "2", "--iters", "2", "--workers", "1"],
                          cwd=REPO, capture_output=True, text=True, timeout=600, env=dict(os.environ))
    assert done.returncode == 0, done.stderr[-2000:]
    assert "omniglot 28px, batch 64 = 16 x 4" in done.stdout and "1 loader workers" in done.stdout, done.stdout
    rows = dict(re.findall(r"^(wall|process CPU)\s+[0-9.]+\s+[0-9.]+\s+([0-9.]+)$", done.stdout, re.M))
    assert set(rows) == {"wall", "process CPU"}, done.stdout
    assert all(float(ratio) > 0 for ratio in rows.values())
