"""The paper's table from any set of sweeps: `dml-report table`.

    dml-report table sweeps/quickstart sweeps/quickstart_dim32 \\
        --rows expansion.n_inner_pts --cols model.embedding_dim --metrics recall_at_1,map_at_r \\
        --baseline expansion.n_inner_pts=0 --format latex

Rows and columns are named by config keys (dotted, as in a sweep's `grid`), `arm`, or `sweep`
(the sweep's name). Each table cell is one experiment -- trials whose content keys
(`dml_core.identity`) agree once the seed is set aside -- with mean +- 95 % Student-t half-width
over its seeds and the number of seeds; the
best mean of each column is bold. The same experiment met in several sweeps is one cell: its
trials are pooled, a result that two sweeps share (the same content key, e.g. one reused from
the trial store) counted once. Two *different* experiments landing in one cell (e.g. a different
learning rate) is an error naming the differing key: add it to --rows or --cols.

With `--baseline key=value`, each cell is compared, paired by seed, with the cell of the baseline
row in its column, when the two are the same experiment up to the row keys (and searched
parameters, tuned per cell): † marks a paired t-test with p < 0.05 (its 95 % interval excludes 0);
‡ the same by a seed policy's repeated CI, used when both cells are one comparison of one seed
policy sweep (whose seeds were added adaptively; a plain t-test on them would not hold);
≈ equivalent within +-`--margin` points (TOST). Only final trials that finished enter, each with
its last evaluation.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from dml_core.evaluation.names import ordered
from dml_core.identity import content_key, result_config
from dml_core.io import PathError
from sweep.labels import fmt_metric, is_fraction, metric_label
from sweep.pending import flatten_config
from sweep.plan import FINAL, SweepPlan, TrialSpec, load_plan, trial_config
from sweep.records import FINISHED
from sweep.store import load_records
from sweep.sequential import PolicyView, points
from sweep.spec import SweepError
from sweep.stats import CONFIDENCE, PAIRED_T, MeanCI, PairedComparison, mean_ci, paired_comparison, verdict

FORMATS = ("md", "latex", "csv")
SWEEP_KEY, ARM_KEY = "sweep", "arm"  # pseudo config keys
SIGNIFICANT = {PAIRED_T: "†", "repeated CI": "‡"}
EQUIVALENT_MARK = "≈"


class TableError(ValueError):
    """A table that cannot be built as asked; the message is one line."""


def _canon(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


@dataclass(frozen=True)
class Trial:
    """One finished final trial as the table sees it."""

    sweep: str  # the sweep's name
    sweep_dir: Path
    cell: str
    seed: int
    config: dict[str, Any]  # the resolved config, flattened (+ `arm`, `sweep`): what rows and columns name
    result_fields: dict[str, Any]  # the fields that determine its numbers, flattened, but the seed
    experiment: str  # the content key the trial would have at seed 0: one experiment, any seed
    result: str  # the result's identity: its content key
    metrics: dict[str, float]
    searched: frozenset[str]  # keys its sweep searched per cell


@dataclass
class Sweep:
    plan: SweepPlan
    sweep_dir: Path
    trials: list[Trial]
    policy: Optional[PolicyView]
    records: list[Any]


def load_sweep(sweep_dir: Path) -> Sweep:
    """A sweep directory's finished final trials with their resolved configs."""
    if not (sweep_dir / "sweep.yaml").is_file():
        raise TableError(f"{sweep_dir}: not a sweep directory (no sweep.yaml)")
    plan = load_plan(sweep_dir / "sweep.yaml")
    cells = {c.id: c for c in plan.cells}
    searched = frozenset(plan.spec.search.params) if plan.spec.search else frozenset()
    records = load_records(sweep_dir).final()
    trials = []
    for r in records:
        if r.phase != FINAL or r.status != FINISHED or r.cell not in cells:
            continue
        cell = cells[r.cell]
        config = r.config
        if not config:  # a record migrated from an old ledger.json: rebuild what it ran
            spec = TrialSpec(FINAL, cell.id, cell.arm, dict(cell.coords), r.seed, dict(cell.overrides), dict(r.params))
            config = trial_config(plan.base, spec, None, plan.source).to_dict()
            config.pop("sweep", None)
        flat = {**flatten_config(config), ARM_KEY: cell.arm, SWEEP_KEY: plan.name}
        fields = {k: v for k, v in flatten_config(result_config(config)).items() if k != "seed"}
        trials.append(Trial(plan.name, sweep_dir, r.cell, r.seed, flat, fields, content_key({**config, "seed": 0}),
                            r.content_key or content_key(config), {k: float(v) for k, v in r.metrics.items()}, searched))
    policy = PolicyView.of(plan.spec.policy, plan.cells, plan.spec.baseline, plan.spec.metric,
                           plan.spec.equivalence_margin) if plan.spec.policy else None
    return Sweep(plan, sweep_dir, trials, policy, records)


# --------------------------------------------------------------------------- the table


@dataclass
class TableCell:
    row: tuple[Any, ...]
    col: tuple[Any, ...]
    trials: list[Trial]  # pooled: one per result identity

    @property
    def config(self) -> dict[str, Any]:
        return self.trials[0].config

    @property
    def sources(self) -> set[tuple[Path, str]]:
        return {(t.sweep_dir, t.cell) for t in self.trials}

    def by_seed(self, metric: str) -> dict[int, float]:
        return {t.seed: t.metrics[metric] for t in self.trials if math.isfinite(t.metrics.get(metric, math.nan))}


@dataclass
class Entry:
    """One number of the table: a cell's metric, its interval, and its comparison."""

    cell: TableCell
    metric: str
    ci: MeanCI
    best: bool = False
    comparison: Optional[PairedComparison] = None
    word: str = ""  # verdict of the comparison
    mark: str = ""
    note: str = ""  # why there is no comparison


@dataclass
class Table:
    rows: list[tuple[Any, ...]]
    cols: list[tuple[Any, ...]]
    row_keys: list[str]
    col_keys: list[str]
    metrics: list[str]
    entries: dict[tuple[tuple[Any, ...], tuple[Any, ...], str], Entry]
    baseline: Optional[dict[str, Any]] = None
    margin: Optional[float] = None  # points
    sweeps: list[str] = field(default_factory=list)


def _value(t: Trial, key: str) -> Any:
    if key not in t.config:
        # a key no trial has (a typo) is caught in `build_table`; a key one component lacks reads None
        return None
    return t.config[key]


def _differing(a: Trial, b: Trial, ignore: set[str]) -> list[str]:
    """The result fields (not the seed) in which two trials' experiments differ."""
    keys = (set(a.result_fields) | set(b.result_fields)) - ignore
    return sorted(k for k in keys if _canon(a.result_fields.get(k)) != _canon(b.result_fields.get(k)))


def _mode(metric: str, sweeps: list[Sweep]) -> str:
    for s in sweeps:
        if s.plan.spec.metric == metric:
            return s.plan.spec.mode
    return "min" if metric == "loss" else "max"


def build_table(sweep_dirs: list[Path], rows: list[str], cols: list[str], metrics: Optional[list[str]] = None,
                baseline: Optional[dict[str, Any]] = None, margin: Optional[float] = None) -> Table:
    sweeps = [load_sweep(Path(d)) for d in sweep_dirs]
    trials = [t for s in sweeps for t in s.trials]
    if not trials:
        raise TableError(f"{', '.join(map(str, sweep_dirs))}: no finished final trial")
    for key in [*rows, *cols, *(baseline or {})]:
        if not any(key in t.config for t in trials):
            raise TableError(f"--rows/--cols/--baseline: {key!r} is not a config key of these trials (nor `arm` or `sweep`)")
    metrics = metrics or [sweeps[0].plan.spec.metric]
    for m in metrics:
        if not any(m in t.metrics for t in trials):
            raise TableError(f"--metrics: {m!r} is not reported by these trials (they have {', '.join(ordered({k for t in trials for k in t.metrics} - {'epoch', 'time_s'}))})")

    # Group by (row, col): one experiment per cell, each result once.
    groups: dict[tuple[tuple[Any, ...], tuple[Any, ...]], dict[str, dict[str, Trial]]] = {}
    for t in trials:
        key = (tuple(_value(t, k) for k in rows), tuple(_value(t, k) for k in cols))
        groups.setdefault((_canon(key[0]), _canon(key[1])), {}).setdefault(t.experiment, {}).setdefault(t.result, t)
    cells: dict[tuple[str, str], TableCell] = {}
    for (rk, ck), experiments in groups.items():
        if len(experiments) > 1:
            a, b = (next(iter(e.values())) for e in list(experiments.values())[:2])
            diff = _differing(a, b, set())
            where = ", ".join(f"{k}={v}" for k, v in zip([*rows, *cols], [*json.loads(rk), *json.loads(ck)]))
            raise TableError(f"cell {where}: holds different experiments ({a.sweep}/{a.cell} vs {b.sweep}/{b.cell} differ in "
                             f"{', '.join(diff[:3]) or 'the seed list'}); add {diff[0] if diff else 'sweep'} to --rows or --cols")
        (pooled,) = experiments.values()
        members = sorted(pooled.values(), key=lambda t: (t.seed, str(t.sweep_dir)))
        cells[(rk, ck)] = TableCell(tuple(json.loads(rk)), tuple(json.loads(ck)), members)

    row_order = list(dict.fromkeys(rk for rk, _ in cells))
    col_order = list(dict.fromkeys(ck for _, ck in cells))
    row_order.sort(key=_sort_key)
    col_order.sort(key=_sort_key)
    table = Table([tuple(json.loads(r)) for r in row_order], [tuple(json.loads(c)) for c in col_order], rows, cols,
                  metrics, {}, baseline, margin, [s.plan.name for s in sweeps])
    for (rk, ck), cell in cells.items():
        for m in metrics:
            table.entries[(cell.row, cell.col, m)] = Entry(cell, m, mean_ci(list(cell.by_seed(m).values())))
    for m in metrics:
        sign = 1 if _mode(m, sweeps) == "max" else -1
        for col in table.cols:
            column = [e for (r, c, mm), e in table.entries.items() if c == col and mm == m and math.isfinite(e.ci.mean)]
            if column:
                top = max(sign * e.ci.mean for e in column)
                for e in column:
                    e.best = sign * e.ci.mean == top
    if baseline:
        _compare(table, sweeps, baseline, margin)
    return table


def _sort_key(canon: str) -> list[tuple[int, Any]]:
    """Numbers in numeric order, None first, the rest as text."""
    out = []
    for v in json.loads(canon):
        if v is None:
            out.append((0, 0))
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out.append((1, v))
        else:
            out.append((2, str(v)))
    return out


def _policy_comparison(a: TableCell, b: TableCell, sweeps: list[Sweep], metric: str) -> Optional[PairedComparison]:
    """The repeated CI of a seed policy when `a` vs `b` is one of its comparisons."""
    if len(a.sources) != 1 or len(b.sources) != 1:
        return None
    (dir_a, cell_a), (dir_b, cell_b) = next(iter(a.sources)), next(iter(b.sources))
    sweep = next((s for s in sweeps if s.sweep_dir == dir_a), None)
    if dir_a != dir_b or sweep is None or sweep.policy is None:
        return None
    for assessment in sweep.policy.assess(sweep.records, metric):
        if (assessment.quantity.cell, assessment.quantity.ref) == (cell_a, cell_b):
            return assessment.comparison
    return None


def _compare(table: Table, sweeps: list[Sweep], baseline: dict[str, Any], margin: Optional[float]) -> None:
    for key in baseline:
        if key not in table.row_keys:
            raise TableError(f"--baseline: {key} is not one of --rows {table.row_keys}")
    matching = [r for r in table.rows if all(_canon(r[table.row_keys.index(k)]) == _canon(v) for k, v in baseline.items())]
    if not matching:
        raise TableError(f"--baseline: no row has {', '.join(f'{k}={v}' for k, v in baseline.items())}")
    ignore = set(table.row_keys)
    for (row, col, m), e in table.entries.items():
        ref_row = next((r for r in matching if all(_canon(r[i]) == _canon(row[i]) for i, k in enumerate(table.row_keys)
                                                   if k not in baseline)), None)
        ref = table.entries.get((ref_row, col, m)) if ref_row is not None else None
        if ref is None or ref_row == row:
            continue
        differ = _differing(e.cell.trials[0], ref.cell.trials[0], ignore | e.cell.trials[0].searched | ref.cell.trials[0].searched)
        if differ:
            e.note = f"not compared: differs from the baseline in {', '.join(differ[:3])}"
            continue
        c = _policy_comparison(e.cell, ref.cell, sweeps, m) or paired_comparison(e.cell.by_seed(m), ref.cell.by_seed(m))
        raw_margin = None if margin is None else points(m, margin)
        e.comparison = c
        e.word = verdict(c, _mode(m, sweeps), margin=raw_margin,
                         margin_text=None if margin is None else f"{margin:g}" + " points" * is_fraction(m))
        if e.word.startswith("equivalent"):
            e.mark = EQUIVALENT_MARK
        elif e.word in ("better", "worse"):
            e.mark = SIGNIFICANT[c.procedure]


# --------------------------------------------------------------------------- writers


def _fmt(value: Any) -> str:
    return "–" if value is None else str(value)


def _label(keys: list[str], values: tuple[Any, ...]) -> str:
    return ", ".join(_fmt(v) for v in values)


def _number(e: Optional[Entry]) -> tuple[str, str, str]:
    """(mean, half-width, n) as text."""
    if e is None or e.ci.n == 0:
        return "", "", ""
    half = "" if not math.isfinite(e.ci.low) else fmt_metric(e.metric, e.ci.half_width)
    return fmt_metric(e.metric, e.ci.mean), half, str(e.ci.n)


def _headers(t: Table) -> list[tuple[tuple[Any, ...], str]]:
    return [(c, m) for c in t.cols for m in t.metrics]


def _unit(metric: str) -> str:
    return f"{metric_label(metric)} (%)" if is_fraction(metric) else metric_label(metric)


def _legend(t: Table, latex: bool = False) -> list[str]:
    marks = {e.mark for e in t.entries.values() if e.mark}
    base = ", ".join(f"{k}={v}" for k, v in (t.baseline or {}).items())
    lines = [f"Mean ± {CONFIDENCE:.0%} Student-t half-width over seeds (number of seeds in parentheses); "
             "bold: the best mean in its column."]
    if "†" in marks or (t.baseline and not marks):
        lines.append(f"† differs from the baseline ({base}) in the same column: paired t-test over the shared seeds, "
                     "p < 0.05 (its 95 % interval of the difference excludes 0).")
    if "‡" in marks:
        lines.append(f"‡ differs from the baseline ({base}): a seed policy's repeated 95 % CI (Jennison & Turnbull; "
                     "valid under its optional stopping) excludes 0.")
    if EQUIVALENT_MARK in marks:
        unit = " points" if all(is_fraction(m) for m in t.metrics) else ""
        lines.append(f"≈ equivalent to the baseline within ±{t.margin:g}{unit}: the 95 % interval of the paired "
                     "difference lies inside the margin (two one-sided tests, TOST).")
    notes = sorted({e.note for e in t.entries.values() if e.note})
    lines += [f"Some cells {n}." for n in notes[:1]]
    lines.append(f"Sweeps: {', '.join(t.sweeps)}.")
    return lines


def to_markdown(t: Table) -> str:
    def cell_text(e: Optional[Entry]) -> str:
        mean, half, n = _number(e)
        if not mean:
            return "–"
        mean = f"**{mean}**" if e.best else mean
        return f"{mean} ± {half} ({n}){e.mark}" if half else f"{mean} ({n}){e.mark}"

    header = [*(k for k in t.row_keys)] + [
        (f"{_label(t.col_keys, c)} · {_unit(m)}" if len(t.metrics) > 1 else _label(t.col_keys, c)) if t.col_keys else _unit(m)
        for c, m in _headers(t)]
    title = (f"{', '.join(t.col_keys)} →" if t.col_keys else "") + (f" {_unit(t.metrics[0])}" if len(t.metrics) == 1 and t.col_keys else "")
    lines = [f"**{title.strip()}**", ""] if title.strip() else []
    lines += ["| " + " | ".join(_md(h) for h in header) + " |", "| " + " | ".join(["---"] * len(t.row_keys) + [":---:"] * len(_headers(t))) + " |"]
    for r in t.rows:
        cells = [_fmt(v) for v in r] + [cell_text(t.entries.get((r, c, m))) for c, m in _headers(t)]
        lines.append("| " + " | ".join(_md(x) for x in cells) + " |")
    return "\n".join(lines + [""] + [f"{line}  " for line in _legend(t)]) + "\n"


def _md(x: str) -> str:
    return str(x).replace("|", "\\|").replace("\n", " ")


_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
        "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "–": "--", "±": r"$\pm$", "≈": r"$^{\approx}$", "†": r"$^\dagger$",
        "‡": r"$^\ddagger$", "→": r"$\rightarrow$", "·": r"$\cdot$", "<": r"$<$", ">": r"$>$"}


def tex(text: str) -> str:
    return "".join(_TEX.get(ch, ch) for ch in str(text))


def to_latex(t: Table) -> str:
    """A booktabs `table` (needs `\\usepackage{booktabs}`)."""
    nr, heads = len(t.row_keys), _headers(t)
    spec = "l" * nr + "c" * len(heads)
    lines = [r"\begin{table}[t]", r"\centering", rf"\begin{{tabular}}{{{spec}}}", r"\toprule"]
    if t.col_keys:
        groups = [(c, len(t.metrics)) for c in t.cols]
        top = [""] * nr + [rf"\multicolumn{{{n}}}{{c}}{{{tex(_label(t.col_keys, c))}}}" if n > 1 else tex(_label(t.col_keys, c))
                           for c, n in groups]
        lines.append(rf"\multicolumn{{{nr}}}{{l}}{{}} & \multicolumn{{{len(heads)}}}{{c}}{{{tex(', '.join(t.col_keys))}}} \\"
                     if nr else "")
        lines.append(rf"\cmidrule(lr){{{nr + 1}-{nr + len(heads)}}}")
        if len(t.metrics) > 1:
            lines.append(" & ".join(top[:nr] + top[nr:]) + r" \\")
            start = nr + 1
            lines.append(" ".join(rf"\cmidrule(lr){{{start + i * n}-{start + i * n + n - 1}}}" for i, (_, n) in enumerate(groups)))
            lines.append(" & ".join([tex(k) for k in t.row_keys] + [tex(_unit(m)) for _, m in heads]) + r" \\")
        else:
            lines.append(" & ".join([tex(k) for k in t.row_keys] + top[nr:]) + r" \\")
    else:
        lines.append(" & ".join([tex(k) for k in t.row_keys] + [tex(_unit(m)) for _, m in heads]) + r" \\")
    lines = [line for line in lines if line]
    lines.append(r"\midrule")
    for r in t.rows:
        cells = [tex(_fmt(v)) for v in r]
        for c, m in heads:
            e = t.entries.get((r, c, m))
            mean, half, n = _number(e)
            if not mean:
                cells.append("--")
                continue
            mean = rf"\textbf{{{mean}}}" if e.best else mean
            body = rf"{mean} $\pm$ {half}" if half else mean
            cells.append(rf"{body} {{\scriptsize ({n})}}{tex(e.mark)}")
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    caption = " ".join(tex(line) for line in _legend(t))
    metric = "" if len(t.metrics) > 1 else f"{tex(_unit(t.metrics[0]))}. "
    lines += [rf"\caption{{{metric}{caption}}}", r"\end{table}"]
    return "\n".join(lines) + "\n"


CSV_FIELDS = ["row", "col", "metric", "n", "mean", "ci_low", "ci_high", "best", "seeds", "mark", "test", "verdict",
              "diff", "diff_low", "diff_high", "p_value", "sources"]


def to_csv(t: Table) -> str:
    out = io.StringIO()
    w = csv.DictWriter(out, CSV_FIELDS + t.row_keys + t.col_keys)
    w.writeheader()
    for (r, c, m), e in sorted(t.entries.items(), key=lambda kv: (t.rows.index(kv[0][0]), t.cols.index(kv[0][1]), t.metrics.index(kv[0][2]))):
        comp = e.comparison
        w.writerow({"row": _label(t.row_keys, r), "col": _label(t.col_keys, c), "metric": m, "n": e.ci.n, "mean": e.ci.mean,
                    "ci_low": e.ci.low, "ci_high": e.ci.high, "best": e.best, "seeds": json.dumps(sorted(e.cell.by_seed(m))),
                    "mark": e.mark, "test": comp.procedure if comp else "", "verdict": e.word or e.note,
                    "diff": comp.mean_diff if comp else "", "diff_low": comp.low if comp else "",
                    "diff_high": comp.high if comp else "", "p_value": comp.p_value if comp else "",
                    "sources": ";".join(sorted(f"{d.name}/{cell}" for d, cell in e.cell.sources)),
                    **dict(zip(t.row_keys, r)), **dict(zip(t.col_keys, c))})
    return out.getvalue()


WRITERS = {"md": to_markdown, "latex": to_latex, "csv": to_csv}


# --------------------------------------------------------------------------- command line


def _keys(text: str) -> list[str]:
    return [k.strip() for k in text.split(",") if k.strip()]


def _baseline(items: list[str]) -> dict[str, Any]:
    import yaml

    out = {}
    for item in items:
        if "=" not in item:
            raise TableError(f"--baseline {item!r}: expected key=value")
        key, value = item.split("=", 1)
        out[key.strip()] = yaml.safe_load(value)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dml-report table", description="The paper's table from one or more sweeps.")
    parser.add_argument("sweep_dirs", nargs="+", type=Path)
    parser.add_argument("--rows", required=True, help="comma-separated config keys (or arm, sweep) naming the rows")
    parser.add_argument("--cols", default="", help="comma-separated config keys naming the columns")
    parser.add_argument("--metrics", default="", help="comma-separated metrics (default: the first sweep's metric)")
    parser.add_argument("--baseline", nargs="*", default=[], help="key=value of the baseline row, e.g. expansion.n_inner_pts=0")
    parser.add_argument("--margin", type=float, default=None, help="equivalence margin in points of the metric (TOST)")
    parser.add_argument("--format", choices=FORMATS, default="md")
    parser.add_argument("--out", type=Path, default=None, help="write here instead of stdout")
    args = parser.parse_args(argv)
    try:
        table = build_table(args.sweep_dirs, _keys(args.rows), _keys(args.cols), _keys(args.metrics) or None,
                            _baseline(args.baseline) or None, args.margin)
    except (TableError, SweepError, PathError, OSError) as e:  # PathError, OSError: a sweep's store missing or not one
        from dml_core.errors import first_line

        print(f"error: {first_line(e)}", file=sys.stderr)
        return 2
    text = WRITERS[args.format](table)
    if args.out:
        try:
            args.out.write_text(text)
        except OSError as e:  # a directory, a path under a file, a read-only folder
            print(f"error: --out {args.out}: cannot write it ({e.strerror or type(e).__name__})", file=sys.stderr)
            return 2
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
