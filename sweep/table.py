"""The paper's table from any set of sweeps: `dml-report table`.

    dml-report table sweeps/quickstart sweeps/quickstart_dim32 \\
        --rows expansion.n_inner_pts --cols model.embedding_dim --metrics recall_at_1,map_at_r \\
        --baseline expansion.n_inner_pts=0 --format latex

Rows and columns are chosen by config keys (dotted, as in a sweep's `grid`), `arm`, or `sweep`
(the sweep's name), and labelled the way the sweeps label their cells (`MS`, `MS+EE n=2`;
`--labels keys` for the raw keys and values), in the order the sweeps (command-line order) and
their YAMLs give them. Each table cell is one experiment -- trials whose result fields
(`dml_core.identity.result_config`), results version, what they are scored on and which
evaluation their sweep reports agree once the seed is set aside -- with mean +- 95 % Student-t
half-width over its seeds and the number of seeds. A result is its *stored* content key: the same
key in several sweeps is counted once, and two different numbers for one key and seed (or two keys
for one experiment and seed) are an error naming both sweeps, never a silent choice. Two
*different* experiments landing in one cell (e.g. a different learning rate) is an error naming
the differing key: add it to --rows or --cols.

Bold marks the best mean of a column only when a paired test over the seeds it shares with the
runner-up separates them (a paired t-test with p < 0.05, or the seed policy's repeated CI when the
two are one of its comparisons); never a lone cell. With `--baseline key=value`, each cell is
compared, paired by seed, with the cell of the baseline row in its column, when the two are the
same experiment up to the row keys (and searched parameters, tuned per cell): † marks a paired
t-test with p < 0.05 (its 95 % interval excludes 0); ‡ the same by a seed policy's repeated CI,
used when both cells are one comparison of one seed policy sweep; seeds a policy added adaptively
are never fed to a plain t-test (the cell is printed without a mark, and the legend says why);
≈ the interval lies inside +-`--margin` points (TOST). Columns whose sweeps ran another protocol
(per-cell search or fixed hyperparameters, adaptive or fixed seeds, which evaluation is reported)
get a footnote. The legend counts the trials used and those left out, and why.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from collections import Counter
from pathlib import Path
from typing import Any, Optional

from dml_core.evaluation.names import ordered
from dml_core.io import PathError
from sweep.labels import fmt_value, method_of, metric_label, short_key, slug
from sweep.plan import plan_of
from sweep.spec import SweepError
from sweep.stats import mean_ci
from sweep.table_compare import bold_best, compare_with_baseline
from sweep.table_data import (ARM_KEY, SWEEP_KEY, Entry, Sweep, Table, TableCell, TableError, Trial, canon, check_results,
                              differing, load_sweep, sweep_names, value_of, value_text, values_text)
from sweep.table_render import WRITERS


FORMATS = ("md", "latex", "csv")
LABELS = ("method", "keys")


def build_table(sweep_dirs: list[Path], rows: list[str], cols: list[str], metrics: Optional[list[str]] = None,
                baseline: Optional[dict[str, Any]] = None, margin: Optional[float] = None, labels: str = "method",
                label: Optional[str] = None, caption: str = "") -> Table:
    if margin is not None and not (math.isfinite(margin) and margin > 0):
        raise TableError(f"--margin: {margin:g} is not a finite number of points > 0")
    if margin is not None and not baseline:
        raise TableError("--margin: needs --baseline (the margin is for the comparison with the baseline row)")
    if labels not in LABELS:
        raise TableError(f"--labels: {labels!r} is not one of {', '.join(LABELS)}")
    sweeps, loaded = _load(sweep_dirs, [*rows, *cols, *(baseline or {})])
    metrics = metrics or [sweeps[0].plan.spec.metric]
    for m in metrics:
        if not any(m in t.metrics for t in loaded):
            raise TableError(f"--metrics: {m!r} is not reported by these trials (they have "
                             f"{', '.join(ordered({k for t in loaded for k in t.metrics} - {'epoch', 'time_s'}))})")
    dropped = check_results(loaded)
    table = _assemble(_cells(loaded, rows, cols), loaded, rows, cols, metrics, baseline, margin, [s.name for s in sweeps])
    _name_rows_and_cols(table, labels)
    bold_best(table, sweeps)
    if baseline:
        compare_with_baseline(table, sweeps, baseline, margin)
    table.notes = _accounting(table, sweeps, dropped)
    if margin is not None:
        table.post_hoc = [s.name for s in sweeps if s.plan.spec.equivalence_margin != margin]
    table.label = label or "tab:" + slug("-".join(s.plan.name for s in sweeps)).lower().replace("_", "-")
    table.caption = caption
    return table


def _load(sweep_dirs: list[Path], keys: list[str]) -> tuple[list[Sweep], list[Trial]]:
    """The sweeps (each directory once) and their finished final trials; every key in `keys` must
    be a config key of some trial."""
    dirs = list(dict.fromkeys(Path(d) for d in sweep_dirs))
    plans = [plan_of(d) for d in dirs]
    sweeps = [load_sweep(d, i, n, p) for i, (d, n, p) in enumerate(zip(dirs, sweep_names(plans, dirs), plans))]
    loaded = [t for s in sweeps for t in s.trials]
    if not loaded:
        raise TableError(f"{', '.join(map(str, sweep_dirs))}: no finished final trial")
    for key in keys:
        if not any(key in t.config for t in loaded):
            raise TableError(f"--rows/--cols/--baseline: {key!r} is not a config key of these trials (nor `arm` or `sweep`)")
    return sweeps, loaded


def _place(t: Trial, rows: list[str], cols: list[str]) -> tuple[str, str]:
    return canon([value_of(t, k) for k in rows]), canon([value_of(t, k) for k in cols])


def _cells(loaded: list[Trial], rows: list[str], cols: list[str]) -> dict[tuple[str, str], TableCell]:
    """Group by (row, col): one experiment per cell, each result once, in command-line and plan order."""
    groups: dict[tuple[str, str], dict[str, dict[str, Trial]]] = {}
    policy_sweeps: dict[tuple[str, str], set[str]] = {}
    for t in loaded:
        key = _place(t, rows, cols)
        groups.setdefault(key, {}).setdefault(t.experiment, {}).setdefault(t.result, t)
        if t.adaptive:
            policy_sweeps.setdefault(key, set()).add(t.sweep)
    cells: dict[tuple[str, str], TableCell] = {}
    for (rk, ck), experiments in groups.items():
        if len(experiments) > 1:
            a, b = (next(iter(e.values())) for e in list(experiments.values())[:2])
            diff = differing(a, b, set())
            where = ", ".join(f"{k}={v}" for k, v in zip([*rows, *cols], [*json.loads(rk), *json.loads(ck)]))
            hint = diff[0] if diff and diff[0] in a.config else SWEEP_KEY
            raise TableError(f"cell {where}: holds different experiments ({a.sweep}/{a.cell} vs {b.sweep}/{b.cell} differ in "
                             f"{', '.join(diff[:3]) or 'the seed list'}); add {hint} to --rows or --cols")
        (pooled,) = experiments.values()
        members = sorted(pooled.values(), key=lambda t: (t.seed, t.order))
        cells[(rk, ck)] = TableCell(tuple(json.loads(rk)), tuple(json.loads(ck)), members,
                                    frozenset(policy_sweeps.get((rk, ck), ())))
    return cells


def _assemble(cells: dict[tuple[str, str], TableCell], loaded: list[Trial], rows: list[str], cols: list[str],
              metrics: list[str], baseline: Optional[dict[str, Any]], margin: Optional[float], names: list[str]) -> Table:
    """The table's rows and columns in the order their trials first appear, an entry per cell and
    metric, and which protocol footnotes its columns (or cells) get."""
    first_seen = {}
    for t in loaded:  # already in command-line, plan and seed order
        first_seen.setdefault(_place(t, rows, cols), t.order)
    row_order = list(dict.fromkeys(rk for rk, _ in sorted(cells, key=lambda k: first_seen[k])))
    col_order = list(dict.fromkeys(ck for _, ck in sorted(cells, key=lambda k: first_seen[k])))
    table = Table([tuple(json.loads(r)) for r in row_order], [tuple(json.loads(c)) for c in col_order], rows, cols,
                  metrics, {}, baseline, margin, names)
    for cell in cells.values():
        for m in metrics:
            table.entries[(cell.row, cell.col, m)] = Entry(cell, m, mean_ci(list(cell.by_seed(m).values())))
    table.protocols = list(dict.fromkeys(p for cell in cells.values() for p in cell.protocols))
    by_col = {c: list(dict.fromkeys(p for cell in cells.values() if cell.col == c for p in cell.protocols)) for c in table.cols}
    table.by_column = all(len(ps) == 1 for ps in by_col.values())
    table.col_marks = {c: table.protocol_marks(ps) if table.by_column else "" for c, ps in by_col.items()}
    return table


# --------------------------------------------------------------------------- names


def _key_value(key: str, value: Any) -> str:
    """`dim=16`; `arm` and `sweep` by their value alone (`ee`, `quick16`)."""
    return value_text(value) if key in (ARM_KEY, SWEEP_KEY) else f"{short_key(key)}={fmt_value(value)}"


def _name_rows_and_cols(t: Table, how: str) -> None:
    """Row and column labels. `keys`: the raw values. `method`: a row reads the label its sweeps
    gave its cells when they all agree (`MS+EE n=2`); else the method its trials run and the
    row's key values (`MS+EE lr=0.01`); a column reads its key values (`dim=16`, a sweep's name)."""
    t.keys = how == "keys"
    if t.keys:
        t.row_labels = {r: values_text(r) for r in t.rows}
        t.col_labels = {c: values_text(c) for c in t.cols}
        t.row_header = ", ".join(t.row_keys)
        return
    trials = {r: [tr for (rr, _, _), e in t.entries.items() if rr == r for tr in e.cell.trials] for r in t.rows}
    # `base`: a sweep of one cell names nothing by it
    own = {r: next(iter(ls)) if len(ls := {tr.label for tr in trials[r]}) == 1 and ls != {"base"} else None for r in t.rows}
    taken = Counter(own.values())
    labels, methods = {}, False
    for r in t.rows:
        if own[r] is not None and taken[own[r]] == 1:
            labels[r], methods = own[r], True
            continue
        found = [method_of(tr.config, {}) for tr in trials[r]]
        # an arm's name is already the sweep's name for its method
        method, absorbed = found[0] if len({m for m, _ in found}) == 1 and ARM_KEY not in t.row_keys else ("", set())
        methods |= bool(method)
        parts = [method] if method else []
        parts += [_key_value(k, v) for k, v in zip(t.row_keys, r) if k not in absorbed and v is not None]
        labels[r] = " ".join(parts) or "–"
    if len(set(labels.values())) < len(labels):  # not unique: the raw values say it
        labels, methods = {r: values_text(r) for r in t.rows}, False
    t.row_labels = labels
    t.row_header = "method" if methods else ", ".join(short_key(k) for k in t.row_keys)
    cols = {c: ", ".join(_key_value(k, v) for k, v in zip(t.col_keys, c) if v is not None) or "–" for c in t.cols}
    t.col_labels = cols if len(set(cols.values())) == len(cols) else {c: values_text(c) for c in t.cols}


def _accounting(t: Table, sweeps: list[Sweep], dropped: Counter[str]) -> list[str]:
    """Every trial of the sweeps: how many the table uses, which it leaves out and why."""
    used = len({(tr.result, tr.experiment) for e in t.entries.values() for tr in e.cell.trials})
    left = Counter(dropped)
    for s in sweeps:
        left.update(s.left_out)
    for m in t.metrics:
        missing = sum(1 for (_, _, mm), e in t.entries.items() if mm == m for tr in e.cell.trials
                      if not math.isfinite(tr.metrics.get(m, math.nan)))
        if missing:
            left[f"without a finite {metric_label(m)} (left out of that metric only)"] += missing
    search = sum(s.search_trials for s in sweeps)
    text = f"Trials: {used} final trial{'s' * (used != 1)} used"
    text += "; left out: " + ", ".join(f"{n} {why}" for why, n in left.items()) if left else "; none left out"
    if search:
        text += f"; {search} search trial{'s' * (search != 1)} not shown (they chose hyperparameters)"
    notes = [text + "."]
    why = list(dict.fromkeys(e.note for e in t.entries.values() if e.note))
    notes += [f"Some cells {n}." for n in why[:3]] + ([f"({len(why) - 3} more reasons: see the csv format.)"] if len(why) > 3 else [])
    return notes


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


def _margin(text: Optional[str]) -> Optional[float]:
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        raise TableError(f"--margin: {text!r} is not a number (points of the metric)") from None
    if not (math.isfinite(value) and value > 0):
        raise TableError(f"--margin: {text} is not a finite number of points > 0")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dml-report table", description="The paper's table from one or more sweeps.")
    parser.add_argument("sweep_dirs", nargs="+", type=Path)
    parser.add_argument("--rows", required=True, help="comma-separated config keys (or arm, sweep) naming the rows")
    parser.add_argument("--cols", default="", help="comma-separated config keys naming the columns")
    parser.add_argument("--metrics", default="", help="comma-separated metrics (default: the first sweep's metric)")
    parser.add_argument("--baseline", nargs="*", default=[], help="key=value of the baseline row, e.g. expansion.n_inner_pts=0")
    parser.add_argument("--margin", default=None, help="equivalence margin in points of the metric (TOST), finite and > 0")
    parser.add_argument("--labels", choices=LABELS, default="method",
                        help="method: rows named as the sweeps name their cells (MS+EE n=2); keys: the raw config values")
    parser.add_argument("--label", default=None, help=r"the LaTeX \label (default: tab:<sweep names>)")
    parser.add_argument("--caption", default="", help="the caption's first sentence (LaTeX), before the legend")
    parser.add_argument("--format", choices=FORMATS, default="md")
    parser.add_argument("--out", type=Path, default=None, help="write here instead of stdout")
    args = parser.parse_args(argv)
    try:
        table = build_table(args.sweep_dirs, _keys(args.rows), _keys(args.cols), _keys(args.metrics) or None,
                            _baseline(args.baseline) or None, _margin(args.margin), args.labels, args.label, args.caption)
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
