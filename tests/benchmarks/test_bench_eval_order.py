"""`bench_eval.round_order` and `paired`: over two rounds every method runs once early and once late,
and ratios are taken over such two-round blocks, so a load that drifts during the benchmark does
not fall on one method only."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from bench_eval import round_order  # noqa: E402


def test_rounds_alternate_their_order() -> None:
    methods = ["load-only", "bare", "ours"]
    first, second = round_order(methods, 0), round_order(methods, 1)
    assert sorted(first) == sorted(second) == sorted(methods)
    positions = {m: first.index(m) + second.index(m) for m in methods}
    assert len(set(positions.values())) == 1  # every method's mean position is the same
    assert round_order(methods, 2) == first


def _run(seconds: float, cpu: float) -> dict:
    return {"seconds": seconds, "cpu": cpu, "peak_mib": 1.0, "floor_mib": 0.0, "metrics": {}}


def test_ratios_pair_each_round_with_the_same_rounds_baseline(capsys) -> None:
    from bench_eval import paired, verdict

    # The machine slowed down 2x in round 2: pairing cancels it, a ratio of medians would not.
    runs = {"bare": [_run(10.0, 8.0), _run(20.0, 8.0)], "ours": [_run(10.5, 8.2), _run(21.0, 8.4)]}
    assert paired(runs, "ours", "bare", "seconds") == [1.05]
    verdict(runs)
    out = capsys.readouterr().out
    assert "wall 1.050x" in out and "CPU 1.038x" in out and ": met" in out

    runs["ours"][1] = _run(30.0, 8.4)  # one round 1.5x: the block is (10.5 + 30) / 30 = 1.35x
    verdict(runs)
    assert "NOT met" in capsys.readouterr().out


def test_a_steady_drift_cancels_within_a_block_of_two_rounds() -> None:
    from bench_eval import paired

    # Equal work, the load rising steadily: each child takes 1 s longer than the one before. The
    # rounds run bare, ours | ours, bare (round_order), so ours is second in round 1 and first in
    # round 2; per round that reads 11/10 = 1.10x and 12/13 = 0.92x, over the block exactly 1.
    runs = {"bare": [_run(10.0, 10.0), _run(13.0, 13.0)], "ours": [_run(11.0, 11.0), _run(12.0, 12.0)]}
    assert paired(runs, "ours", "bare", "seconds") == [1.0]
    assert paired(runs, "ours", "bare", "cpu") == [1.0]
    # A third round (ours second again) is left out rather than tipping the median towards it.
    runs["bare"].append(_run(16.0, 16.0))
    runs["ours"].append(_run(17.0, 17.0))
    assert paired(runs, "ours", "bare", "seconds") == [1.0]


def test_odd_repeats_are_refused_in_one_line() -> None:
    import subprocess

    done = subprocess.run([sys.executable, str(Path(__file__).resolve().parents[2] / "benchmarks" / "bench_eval.py"),
                           "--sizes", "100", "--repeats", "3"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "bench_eval: --repeats: must be even and >= 2 (ratios pair blocks of 2 rounds), got 3"]
