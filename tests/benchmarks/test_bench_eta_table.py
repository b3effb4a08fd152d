"""`bench_eta`: the console's ETA read back from its lines and judged against the real end."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from bench_eta import error, parse_duration, parse_line, table  # noqa: E402


def test_every_eta_form_the_console_prints_is_read() -> None:
    assert parse_duration("8 s") == 8 and parse_duration("1:05") == 65 and parse_duration("1:02:03") == 3723
    assert parse_line(1.0, "[ 3/16] search  MS · #2  lr 0.1  holdout MAP@R 41.8  (20 s)  ETA ~2:29").eta_s == 149
    line = parse_line(2.0, "[6/16] ...     running 2, pending 8 · slowest MS · s1 epoch 0/8 (20 s)  ETA 1:48")
    assert (line.done, line.total, line.kind, line.eta_s) == (6, 16, "...", 108)
    # Under a seed policy the expected value is the one compared.
    assert parse_line(0.0, "[7/18] final   MS · s0  R@1 96.2  (8 s)  ETA at most 5:00, expected ~3:10").eta_s == 190
    assert parse_line(0.0, "[8/10] FAILED  final crash · s1  DatasetError: ...  (2 s)").eta_s is None
    assert parse_line(0.0, "-- final: 10 trials") is None


def test_the_table_compares_each_eta_with_the_last_trial_line() -> None:
    text = ["[1/4] search  a  (10 s)  ETA 30 s", "[2/4] final   b  (10 s)  ETA 40 s",
            "[3/4] final   c  (10 s)  ETA 10 s", "[4/4] final   d  (10 s)"]
    lines = [parse_line(t, x) for t, x in zip((10.0, 20.0, 30.0, 40.0), text)]
    assert error(lines[0], 40.0) == pytest.approx(0.0)  # 30 s said, 30 s left
    assert error(lines[1], 40.0) == pytest.approx(1.0)  # 40 s said, 20 s left
    rows = "\n".join(table(lines))
    assert "first final trial" in rows and "+100%" in rows
    assert "worst +100%, misses the target" in rows
