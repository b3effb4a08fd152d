"""How far the console's ETA is from when the sweep really ends.

    .venv/bin/python benchmarks/bench_eta.py [CONFIG] [--set KEY=VALUE ...] [--keep DIR] [--log FILE]

Runs the sweep with the project's driver (`python sweep/run.py`, a fresh `--out` and trial store,
so nothing is reused), stamps every console line with the seconds since the command started, and
after the end compares each line's ETA with the real end (the last trial line's time):
error = predicted seconds left / real seconds left - 1. It prints the first line at or past 25 /
50 / 75 % of the trials and the first final trial's line, then the worst error from the first
final trial on (lines with under 10 s really left are skipped: a second of rounding is 10 % there).
Under a seed policy the line's `expected` value is the one compared (its `at most` bounds it).

The sweep runs on this machine with whatever else runs on it: quote the load average printed.
To compare two versions of the code at the same load, run this script from both checkouts at the
same time (each in its own checkout: `sweep/run.py` runs the code beside it).
"""
from __future__ import annotations

import argparse
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

REPO = Path(__file__).resolve().parents[1]
TARGET = 0.25
MIN_LEFT_S = 10.0
_COUNTER = re.compile(r"^\[\s*(\d+)/(\d+)\]\s+(\S+)")
_ETA = re.compile(r"ETA (?:at most )?~?([\d:]+(?: s)?)(?:, expected ~?([\d:]+(?: s)?))?")


@dataclass
class Line:
    t: float  # seconds since the command started
    done: int
    total: int
    kind: str  # search, final, ..., FAILED
    eta_s: Optional[float]
    text: str


def parse_duration(text: str) -> float:
    """`8 s`, `1:05`, `1:02:03` (sweep.labels.fmt_duration) -> seconds."""
    text = text.strip()
    if text.endswith(" s"):
        return float(text[:-2])
    seconds = 0.0
    for part in text.split(":"):
        seconds = seconds * 60 + float(part)
    return seconds


def parse_line(t: float, text: str) -> Optional[Line]:
    m = _COUNTER.match(text.strip())
    if m is None:
        return None
    eta = _ETA.search(text)
    eta_s = None if eta is None else parse_duration(eta.group(2) or eta.group(1))
    return Line(t, int(m.group(1)), int(m.group(2)), m.group(3), eta_s, text.strip())


def run(config: str, overrides: list[str], root: Path, log: Optional[Path]) -> tuple[list[Line], float]:
    cmd = [sys.executable, "-u", str(REPO / "sweep" / "run.py"), config, "--out", str(root / "sweep"),
           "--store", str(root / "store" / "trials.sqlite"),
           "--set", f"sweep.mlflow.tracking_uri=sqlite:///{root / 'mlflow.db'}", *overrides]
    started = time.monotonic()
    lines: list[Line] = []
    sink = open(log, "w") if log else None
    with subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
        for text in proc.stdout:  # type: ignore[union-attr]
            t = time.monotonic() - started
            if sink:
                sink.write(f"{t:8.1f}  {text}")
                sink.flush()
            if (line := parse_line(t, text)) is not None:
                lines.append(line)
        rc = proc.wait()
    if sink:
        sink.close()
    if rc != 0:
        raise SystemExit(f"bench_eta: the sweep failed (exit {rc}); its output: {log or 'rerun with --log FILE'}")
    return lines, time.monotonic() - started


def error(line: Line, end: float) -> float:
    return line.eta_s / (end - line.t) - 1 if end > line.t else math.nan


def table(lines: list[Line]) -> list[str]:
    trials = [x for x in lines if x.kind != "..."]
    end = trials[-1].t
    total = trials[-1].total
    rows = ["  at                    line  elapsed  predicted left  real left   error"]

    def row(what: str, x: Line) -> str:
        left = end - x.t
        return (f"  {what:<20}{x.done:>3}/{x.total:<3}{x.t:>8.0f} s{x.eta_s:>13.0f} s{left:>9.0f} s"
                f"{error(x, end):>+8.0%}")

    timed = [x for x in lines if x.eta_s is not None]
    for frac in (0.25, 0.5, 0.75):
        at = next((x for x in timed if x.kind != "..." and x.done >= math.ceil(frac * total)), None)
        if at is not None:
            rows.append(row(f"{frac:.0%} of trials", at))
    first_final = next((x for x in timed if x.kind == "final"), None)
    if first_final is not None:
        rows.append(row("first final trial", first_final))
        since = [x for x in timed if x.t >= first_final.t and end - x.t >= MIN_LEFT_S]
        if since:
            worst = max(since, key=lambda x: abs(error(x, end)))
            rows.append(row("worst from then on", worst))
            verdict = "meets" if abs(error(worst, end)) <= TARGET else "misses"
            rows.append(f"  {len(since)} ETA lines from the first final trial on (>= {MIN_LEFT_S:.0f} s left): "
                        f"worst {error(worst, end):+.0%}, {verdict} the target (within ±{TARGET:.0%})")
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("config", nargs="?", default=str(REPO / "experiments" / "quickstart.yaml"))
    p.add_argument("--set", nargs="*", default=[], dest="overrides")
    p.add_argument("--keep", default=None, help="a folder to keep the sweep in (default: a temporary one)")
    p.add_argument("--log", default=None, help="write the stamped console output here")
    p.add_argument("--all", action="store_true", help="print every ETA line with its error")
    args = p.parse_args(argv)
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-eta-") as tmp:
        root = Path(args.keep or tmp)
        lines, wall = run(args.config, args.overrides, root, Path(args.log) if args.log else None)
    print(f"bench_eta: {args.config} {' '.join(args.overrides)}: {lines[-1].total if lines else 0} trials, "
          f"command wall {wall:.0f} s, load average {load:.1f} before, {os.getloadavg()[0]:.1f} after")
    if not any(x.kind != "..." for x in lines):
        print("  no trial line was printed")
        return 1
    if args.all:
        end = [x for x in lines if x.kind != "..."][-1].t
        for x in lines:
            if x.eta_s is not None:
                print(f"  {x.t:7.0f} s  ETA {x.eta_s:6.0f} s  real {end - x.t:6.0f} s  {error(x, end):+6.0%}  {x.text}")
    print("\n".join(table(lines)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
