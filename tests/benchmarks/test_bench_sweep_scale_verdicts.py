"""`bench_sweep_scale.verdicts`: one line per target the measured sizes can speak to, each saying
whether the ratio meets it (issue 28: CPU per trial <= 2x bare at N = 64 and 1,024, wall <= 1.15x
at every N, peak RSS <= 1.5x; issue 15: CPU per trial growth, last trial to exit)."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from bench_sweep_scale import Row, verdicts  # noqa: E402


def arm(wall: float, cpu: float, rss: float, exit_s: float = 1.0) -> dict[str, Any]:
    return {"wall_s": wall, "cpu_s": cpu, "peak_rss_mib": rss, "last_to_exit_s": exit_s}


def test_each_target_is_judged_on_the_sizes_it_names() -> None:
    rows = [
        Row(16, arm(11.0, 9.0, 400), arm(10.0, 3.0, 300)),  # CPU 3x at N = 16: no CPU target there
        Row(64, arm(23.0, 8.0, 460), arm(20.0, 4.0, 300)),  # wall 1.15, CPU 2.0: both just met
        Row(1024, arm(150.0, 60.0, 700, exit_s=6.0), arm(140.0, 25.0, 400)),
    ]
    lines = verdicts(rows)
    assert lines[0] == "wall ratio: worst 1.15 at N=64 meets the target <= 1.15"
    assert "driver CPU per trial project / bare at N=64: 2.00 meets the target <= 2.0" in lines
    assert "driver CPU per trial project / bare at N=1024: 2.40 misses the target <= 2.0" in lines
    assert not any("at N=16:" in line for line in lines)
    assert "driver peak RSS project / bare: worst 1.75 at N=1024 misses the target <= 1.5" in lines
    assert "project driver CPU per trial N=1024 / N=64: 0.47 meets the target <= 1.3" in lines
    assert "last trial to exit at N=1024: 6.0 s misses the target <= 5.0 s" in lines


def test_a_wall_ratio_over_target_at_any_size_misses() -> None:
    rows = [Row(16, arm(12.0, 1.0, 300), arm(10.0, 1.0, 300)), Row(256, arm(10.0, 1.0, 300), arm(10.0, 1.0, 300))]
    assert verdicts(rows)[0] == "wall ratio: worst 1.20 at N=16 misses the target <= 1.15"
