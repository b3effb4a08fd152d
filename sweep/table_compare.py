"""Which entries of the paper's table a paired test separates: a column's best in bold, marks against the baseline row."""
from __future__ import annotations

import math
from typing import Any, Optional

from sweep.stats import PAIRED_T, PairedComparison, paired_comparison, verdict
from sweep.units import from_points, points_suffix
from sweep.table_data import Sweep, Table, TableCell, TableError, canon, differing, mode_of


SIGNIFICANT = {PAIRED_T: "†", "repeated CI": "‡"}
EQUIVALENT_MARK = "≈"


# --------------------------------------------------------------------------- bold and comparisons


def _policy_comparison(a: TableCell, b: TableCell, sweeps: list[Sweep], metric: str) -> Optional[PairedComparison]:
    """The repeated CI of a seed policy when `a` vs `b` is one of its comparisons."""
    if len(a.sources) != 1 or len(b.sources) != 1:
        return None
    (dir_a, cell_a), (dir_b, cell_b) = next(iter(a.sources)), next(iter(b.sources))
    sweep = next((s for s in sweeps if s.sweep_dir == dir_a), None)
    if dir_a != dir_b or sweep is None or sweep.policy is None:
        return None
    if metric not in sweep.assessed:
        sweep.assessed[metric] = {(a.quantity.cell, a.quantity.ref): a.comparison
                                  for a in sweep.policy.assess(sweep.records, metric)}
    return sweep.assessed[metric].get((cell_a, cell_b))


def _test(a: TableCell, b: TableCell, sweeps: list[Sweep], metric: str) -> tuple[Optional[PairedComparison], str]:
    """`a` - `b` paired by seed, by the procedure their seeds allow; or why there is none."""
    c = _policy_comparison(a, b, sweeps, metric)
    if c is not None:
        return c, ""
    c = _policy_comparison(b, a, sweeps, metric)
    if c is not None:  # the policy compares b with a: the same interval, negated
        return PairedComparison(c.seeds, -c.mean_diff, -c.high, -c.low, c.p_value, c.procedure), ""
    adaptive = a.policy_sweeps | b.policy_sweeps
    if adaptive:
        return None, (f"not tested: seeds added adaptively by the seed policy of {', '.join(sorted(adaptive))} "
                      "outside one of its own comparisons (a plain t-test on them would not hold)")
    return paired_comparison(a.by_seed(metric), b.by_seed(metric)), ""


def bold_best(t: Table, sweeps: list[Sweep]) -> None:
    """Bold the best of a column only when a test separates it from the runner-up."""
    for m in t.metrics:
        sign, mode = (1 if mode_of(m, sweeps) == "max" else -1), mode_of(m, sweeps)
        for col in t.cols:
            column = [e for (_, c, mm), e in t.entries.items() if c == col and mm == m and math.isfinite(e.ci.mean)]
            if len(column) < 2:
                continue  # a lone cell is best of nothing
            first, second = sorted(column, key=lambda e: -sign * e.ci.mean)[:2]
            if first.ci.mean == second.ci.mean:
                continue
            c, _ = _test(first.cell, second.cell, sweeps, m)
            first.best = c is not None and verdict(c, mode) == "better"


def baseline_rows(t: Table, baseline: dict[str, Any]) -> list[tuple[Any, ...]]:
    return [r for r in t.rows if all(canon(r[t.row_keys.index(k)]) == canon(v) for k, v in baseline.items())]


def compare_with_baseline(table: Table, sweeps: list[Sweep], baseline: dict[str, Any], margin: Optional[float]) -> None:
    for key in baseline:
        if key not in table.row_keys:
            raise TableError(f"--baseline: {key} is not one of --rows {table.row_keys}")
    matching = baseline_rows(table, baseline)
    if not matching:
        raise TableError(f"--baseline: no row has {', '.join(f'{k}={v}' for k, v in baseline.items())}")
    ignore = set(table.row_keys)
    for (row, col, m), e in table.entries.items():
        ref_row = next((r for r in matching if all(canon(r[i]) == canon(row[i]) for i, k in enumerate(table.row_keys)
                                                   if k not in baseline)), None)
        ref = table.entries.get((ref_row, col, m)) if ref_row is not None else None
        if ref is None or ref_row == row:
            continue
        differ = differing(e.cell.trials[0], ref.cell.trials[0], ignore | e.cell.trials[0].searched | ref.cell.trials[0].searched)
        if differ:
            e.note = f"not compared: differs from the baseline in {', '.join(differ[:3])}"
            continue
        c, why = _test(e.cell, ref.cell, sweeps, m)
        if c is None:
            e.note = why
            continue
        raw_margin = None if margin is None else from_points(m, margin)
        e.comparison = c
        e.word = verdict(c, mode_of(m, sweeps), margin=raw_margin,
                         margin_text=None if margin is None else f"{margin:g}" + points_suffix(m))
        if e.word.startswith("equivalent"):
            e.mark = EQUIVALENT_MARK
        elif e.word.split(",")[0] in ("better", "worse"):
            e.mark = SIGNIFICANT[c.procedure] + (EQUIVALENT_MARK if "within" in e.word else "")


