"""A real sweep of slow trials: status lines come between the trial lines, and the ETA does not
swing when trials end together."""
from __future__ import annotations

import contextlib
import io
import re
import time
from pathlib import Path

import pytest

from sweep.plan import load_plan
from sweep.records import FINISHED
from sweep.runner import run_sweep
from sweep_testlib import write_yaml
from test_progress import etas

pytestmark = pytest.mark.slow


class TimedLines(io.TextIOBase):
    """stdout that keeps each line with the time it was written."""

    def __init__(self) -> None:
        self.lines: list[tuple[float, str]] = []
        self._part = ""

    def write(self, s: str) -> int:
        self._part += s
        *done, self._part = self._part.split("\n")
        self.lines += [(time.monotonic(), line) for line in done]
        return len(s)


def test_status_lines_between_trial_lines_and_a_steady_eta(ray_local: None, tracking_uri: str, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sweep.console.STATUS_EVERY_S", 1.0)
    sweep = {"name": "slow", "grid": {"model.embedding_dim": [8, 16]}, "seeds": [0, 1, 2],
             "baseline": {"model.embedding_dim": 8}, "mlflow": {"tracking_uri": tracking_uri}}
    # Slow trials: 4 evaluated epochs of 40 steps each (several seconds per trial on 2 CPUs).
    train = {"epochs": 4, "eval_every": 1, "iterations_per_epoch": 40, "num_threads": 1}
    out = TimedLines()
    with contextlib.redirect_stdout(out):
        outcome = run_sweep(load_plan(write_yaml(tmp_path / "slow.yaml", sweep, train=train)), tmp_path / "sweep")
    assert outcome.status == FINISHED
    lines = out.lines
    trial = [i for i, (_, line) in enumerate(lines) if re.match(r"\[ ?\d/6\] final ", line)]
    status = [i for i, (_, line) in enumerate(lines) if re.match(r"\[ ?\d/6\] \.\.\. ", line)]
    assert len(trial) == 6, [line for _, line in lines]
    # Status lines while the first trials run (before any ended) and between trial lines.
    assert status and status[0] < trial[0]
    assert any(trial[0] < i < trial[-1] for i in status), [line for _, line in lines]
    first = lines[status[0]][1]
    assert re.search(r"running \d, pending \d · slowest ms?.*· s\d epoch \d/4 \(\d+ s\)", first) or \
        re.search(r"running \d, pending \d", first), first
    # Every trial line but the last carries an ETA; between two trial lines of the same second it
    # changes by at most 1.5x.
    with_eta = [(t, etas(line)) for t, line in (lines[i] for i in trial[:-1])]
    assert all(e for _, e in with_eta), [lines[i][1] for i in trial]
    for (t0, (a,)), (t1, (b,)) in zip(with_eta, with_eta[1:]):
        if t1 - t0 < 1.0 and min(a, b) > 0:
            assert max(a, b) / min(a, b) <= 1.5, [lines[i][1] for i in trial]
