"""`benchmarks/bench_throughput.py --smoke`: the trainer-vs-plain comparison runs end to end on CPU."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_smoke_run_prints_both_arms_and_a_ratio():
    done = subprocess.run([sys.executable, "benchmarks/bench_throughput.py", "--smoke", "--threads", "1"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = re.findall(r"^(MS(?: \+ EE n=2)?)\s+([0-9.]+)\s+([0-9.]+)\s+([0-9.]+)\s+([0-9.]+)$", done.stdout, re.M)
    assert [r[0] for r in rows] == ["MS", "MS + EE n=2"], done.stdout
    for _, ours, plain, ratio, paired in rows:
        assert float(ours) > 0 and float(plain) > 0 and float(paired) > 0
        # img/s are printed to 0.1, the ratio from the unrounded values
        ours, plain = float(ours), float(plain)
        assert (ours - 0.05) / (plain + 0.05) - 1e-3 <= float(ratio) <= (ours + 0.05) / (plain - 0.05) + 1e-3
    assert re.search(r"^worst ratio [0-9.]+ (meets|misses) the target >= 0.9", done.stdout, re.M)
