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
