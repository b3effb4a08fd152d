"""`bench_eval.round_order`: over two rounds every method runs once early and once late, so a load
that drifts during the benchmark does not fall on one method only."""
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
    assert paired(runs, "ours", "bare", "seconds") == [1.05, 1.05]
    verdict(runs)
    out = capsys.readouterr().out
    assert "wall 1.050x" in out and "CPU 1.038x" in out and ": met" in out

    runs["ours"][1] = _run(30.0, 8.4)  # one round over 1.10x: median of (1.05, 1.5) = 1.275
    verdict(runs)
    assert "NOT met" in capsys.readouterr().out
