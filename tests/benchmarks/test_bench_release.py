"""`benchmarks/bench_release.py`: whole training processes of this checkout and of a release's,
paired, per iteration with start-up cancelled ((t_long - t_short) / extra iterations)."""
from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "benchmarks" / "bench_release.py"

sys.path.insert(0, str(REPO / "benchmarks"))

from bench_release import per_iteration  # noqa: E402


def test_start_up_cancels_between_the_two_lengths() -> None:
    # 5 s of start-up and evaluation in both runs, 70 ms per iteration: 60 and 300 iterations.
    short, long = {"wall": 5 + 60 * 0.07, "cpu": 1.0}, {"wall": 5 + 300 * 0.07, "cpu": 3.4}
    assert per_iteration(short, long, 240, "wall") == pytest.approx(70.0)
    assert per_iteration(short, long, 240, "cpu") == pytest.approx(10.0)


def test_a_release_without_its_interpreter_is_one_line_exit_2(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, str(BENCH), "--release", str(tmp_path)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bench_release: --release: interpreter ") and "release arm" in lines[0]


@pytest.mark.slow
def test_both_arms_run_and_the_paired_ratio_is_printed(omniglot_root: Path) -> None:
    # This checkout against itself: the mechanics, not a speed (two iterations say nothing of one).
    done = subprocess.run([sys.executable, str(BENCH), "--release", str(REPO), "--release-python", sys.executable,
                           "--short", "1", "--long", "2", "--pairs", "1", "--workers", "0"],
                          cwd=REPO, capture_output=True, text=True, timeout=900, env=dict(os.environ))
    assert done.returncode == 0, done.stderr[-2000:]
    row = re.search(r"^  1    this>\s+(-?[0-9.]+)\s+(-?[0-9.]+)\s+(-?[0-9.]+|nan)\s+.*\s(\d\.\d{6}), (\d\.\d{6})$",
                    done.stdout, re.M)
    assert row, done.stdout
    assert row.group(4) == row.group(5)  # the same tree, config and seed: the same loss
    assert re.search(r"this / release, medians of paired ratios: wall .* CPU .*target <= 1\.03x",
                     done.stdout), done.stdout


def test_a_negative_wall_difference_keeps_its_columns_apart() -> None:
    # Seen at load 10: -20.86 ms and a ratio of -11.061 printed as "-20.86-11.061", one field; a
    # pair without a per-iteration time shows no ratio (`paired_ratio`).
    from bench_release import pair_row

    line = pair_row(0, {"wall": [2228.03, -84.53], "cpu": [230.75, -20.86]}, (0.954623, 0.955753))
    fields = line.split()
    assert fields[:8] == ["1", "this>", "2228.03", "-84.53", "nan", "230.75", "-20.86", "nan"], line
    assert pair_row(1, {"wall": [75.0, 70.0], "cpu": [74.0, 80.0]}, (0.5, 0.5)).split()[:8] == [
        "2", "rel>", "75.00", "70.00", "1.071", "74.00", "80.00", "0.925"]


def test_a_pair_without_a_per_iteration_time_is_not_a_ratio(capsys) -> None:
    # Wall (t300 - t60) came out negative at load 10-30 (565.79 / -84.53 ms): that pair measured
    # nothing, yet its -6.694 entered the median (0.804x instead of 0.959x over the two real pairs).
    from bench_release import paired_ratio, verdict

    assert math.isnan(paired_ratio(565.79, -84.53)) and math.isnan(paired_ratio(-2.0, -4.0))
    assert paired_ratio(78.22, 89.25) == pytest.approx(0.876, abs=1e-3)
    wall = [paired_ratio(565.79, -84.53), paired_ratio(1136.08, 1413.17), paired_ratio(712.78, 639.72)]
    assert verdict({"wall": wall, "cpu": [0.946, 0.876, 0.992]}, 1.03)
    out = capsys.readouterr().out
    assert "wall 0.959x (0.804-1.114, 1 of 3 pairs unmeasured" in out and "CPU 0.946x (0.876-0.992)" in out
    assert not verdict({"wall": wall, "cpu": [1.01, 1.05, 1.04]}, 1.03)
    assert capsys.readouterr().out.rstrip().endswith("NOT met")

    assert verdict({"wall": [1.01, 1.02], "cpu": [0.99, 1.0]}, 1.03)
    assert not verdict({"wall": [math.nan], "cpu": [1.0]}, 1.03)
    assert "wall not measured, 1 of 1 pairs unmeasured" in capsys.readouterr().out
