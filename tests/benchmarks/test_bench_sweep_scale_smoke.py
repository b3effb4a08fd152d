"""`benchmarks/bench_sweep_scale.py --sizes 2`: both arms run as their own drivers on one Ray and the
table comes out (each arm timed 2 trials, sizes and ratios consistent with the per-arm rows), both
with the same Tune loggers (no TensorBoard files in either); and the verdicts against the targets."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_smoke_run_times_both_arms_and_prints_their_ratio(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "benchmarks/bench_sweep_scale.py", "--sizes", "2", "--keep", str(tmp_path)],
                          cwd=REPO, capture_output=True, text=True, timeout=880)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    num = r"([0-9.]+)"
    project = re.search(rf"^\s+2 project\s+{num}\s+{num}\s+{num}\s+{num}\s+{num}\s+{num}\s+{num}\s+{num}\s+{num}$", done.stdout, re.M)
    bare = re.search(rf"^\s+2 bare\s+{num}\s+{num}\s+{num}\s+{num}\s+{num}\s+{num}\s+{num}\s+-\s+{num}$", done.stdout, re.M)
    ratio = re.search(rf"^\s+2 ratio\s+{num}\s+{num}\s+{num}$", done.stdout, re.M)
    assert project and bare and ratio, done.stdout
    results = {arm: json.loads((tmp_path / f"{arm}-2" / "result.json").read_text()) for arm in ("project", "bare")}
    for arm, m in results.items():
        assert m["trials_timed"] == 2 and 1 <= m["peak_concurrent"] <= 2 and 0 < m["busy_s"] and 0 <= m["last_to_exit_s"] < m["wall_s"], (arm, m)
    assert results["project"]["store_bytes"] > 0  # the ledger or the trial store was found and measured
    assert float(ratio.group(1)) == pytest.approx(results["project"]["wall_s"] / results["bare"]["wall_s"], abs=0.006)
    assert float(ratio.group(3)) == pytest.approx(results["project"]["peak_rss_mib"] / results["bare"]["peak_rss_mib"], abs=0.006)
    assert re.search(r"^wall ratio: worst [0-9.]+ at N=2 (meets|misses) the target <= 1.15$", done.stdout, re.M)
    assert re.search(r"^driver peak RSS project / bare: worst [0-9.]+ at N=2 (meets|misses) the target <= 1.5$", done.stdout, re.M)
    # The bare arm runs Tune as the project does: CSV and JSON loggers, no TensorBoard logger
    # (Tune's default, which imports torch into the bare driver inside its timed run).
    for arm, folder in (("bare", tmp_path / "bare-2" / "tune"), ("project", tmp_path / "project-2" / "sweeps")):
        assert len(list(folder.rglob("result.json"))) == 2 and len(list(folder.rglob("progress.csv"))) == 2, arm
        assert not list(folder.rglob("events.out.tfevents*")), arm
