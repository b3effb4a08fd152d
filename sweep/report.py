"""The results of a sweep, from its directory alone (`plan.json` + `ledger.json`).

    python sweep/report.py sweeps/<name>          # rewrite the report of a (running) sweep

Writes into the sweep directory:

- `trials.parquet`: every trial (search and final), its cell, seed, status, error, searched params
  and final metrics -- failed trials included, with their error message;
- `cells.parquet`: per cell and metric, mean and 95 % Student-t interval over seeds (final
  phase, finished trials only);
- `comparisons.parquet`: per cell and metric, the paired difference to its baseline cell (paired
  by seed), its 95 % interval and the paired t-test p-value;
- `report.md`: the same as tables, with the small-n caveats;
- `plot_<axis>.png`: the primary metric against each ablation axis, one line per arm (and per
  value of the other axes), error bars = 95 % intervals.
"""
from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # `python sweep/report.py`: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import json
import math
import re
from collections import defaultdict
from typing import Any, Optional

import pyarrow as pa
import pyarrow.parquet as pq

from dml_core.evaluation.names import ordered
from sweep.ledger import FINISHED, PLAN_FILE, Ledger
from sweep.plan import FINAL, SEARCH, Cell, reference_cell
from sweep.stats import CONFIDENCE, MeanCI, mean_ci, paired_comparison, t_multiplier

def load_sweep(sweep_dir: str | Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    sweep_dir = Path(sweep_dir)
    plan_file = sweep_dir / PLAN_FILE
    if not plan_file.is_file():
        raise FileNotFoundError(f"{sweep_dir}: not a sweep directory (no {PLAN_FILE})")
    return json.loads(plan_file.read_text()), Ledger(sweep_dir).trials()


def _cells(plan: dict[str, Any]) -> list[Cell]:
    return [Cell(c["arm"], c["coords"], {}) for c in plan["cells"]]


def summary_metrics(records: list[dict[str, Any]]) -> list[str]:
    """Metric names present in finished trials, recall@K first (by K), then the rest."""
    return ordered({k for r in records for k in r.get("metrics", {})} - {"epoch"})


def _by_seed(records: list[dict[str, Any]], cell_id: str, metric: str) -> dict[int, float]:
    return {
        r["seed"]: float(r["metrics"][metric])
        for r in records
        if r.get("phase") == FINAL and r.get("cell") == cell_id and r.get("status") == FINISHED and metric in r.get("metrics", {})
    }


# --------------------------------------------------------------------------- tables


def _column(values: list[Any]) -> pa.Array:
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # mixed types (e.g. an axis of ints and strings)
        return pa.array([None if v is None else v if isinstance(v, str) else json.dumps(v) for v in values])


def _table(rows: list[dict[str, Any]]) -> pa.Table:
    columns: dict[str, list[Any]] = {}
    for row in rows:
        for key in row:
            columns.setdefault(key, [])
    return pa.table({k: _column([row.get(k) for row in rows]) for k in columns})


def trials_rows(plan: dict[str, Any], records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    order = {c["id"]: i for i, c in enumerate(plan["cells"])}
    metrics = summary_metrics(records)
    rows = []
    for r in sorted(records, key=lambda r: (r.get("phase") != SEARCH, order.get(r.get("cell"), 1e9), r.get("seed", 0), r.get("key", ""))):
        row = {"key": r.get("key"), "phase": r.get("phase"), "cell": r.get("cell"), "arm": r.get("arm")}
        row |= {axis: (r.get("coords") or {}).get(axis) for axis in plan["axes"]}
        row |= {"seed": r.get("seed"), "status": r.get("status"), "error": r.get("error"), "attempts": r.get("attempts"),
                "epochs": _int_or_none(r.get("metrics", {}).get("epoch")), "params": json.dumps(r.get("params") or {}, sort_keys=True)}
        row |= {m: r.get("metrics", {}).get(m) for m in metrics}
        row |= {"trial_id": r.get("trial_id"), "mlflow_run_id": r.get("mlflow_run_id")}
        rows.append(row)
    return rows


def _int_or_none(x: Any) -> Optional[int]:
    return None if x is None else int(x)


def cell_rows(plan: dict[str, Any], records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for cell in _cells(plan):
        for metric in summary_metrics(records):
            ci = mean_ci(list(_by_seed(records, cell.id, metric).values()))
            rows.append({"cell": cell.id, "arm": cell.arm, **cell.coords, "metric": metric, "n": ci.n, "mean": ci.mean,
                         "ci_low": ci.low, "ci_high": ci.high})
    return rows


def comparison_rows(plan: dict[str, Any], records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    if not plan.get("baseline"):
        return []
    cells = _cells(plan)
    rows = []
    for cell in cells:
        ref = reference_cell(cell, cells, plan["baseline"])
        if ref is None:
            continue
        for metric in summary_metrics(records):
            c = paired_comparison(_by_seed(records, cell.id, metric), _by_seed(records, ref.id, metric))
            rows.append({"cell": cell.id, "baseline": ref.id, "metric": metric, "n": c.n, "seeds": json.dumps(c.seeds),
                         "mean_diff": c.mean_diff, "ci_low": c.low, "ci_high": c.high, "p_value": c.p_value})
    return rows


# --------------------------------------------------------------------------- markdown


def _f(x: Any, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def _ci_text(ci: MeanCI) -> str:
    if ci.n == 0:
        return "-"
    return f"{ci.mean:.4f} (n=1)" if ci.n == 1 else f"{ci.mean:.4f} ± {ci.half_width:.4f}"


def _md_table(header: list[str], rows: list[list[Any]]) -> str:
    def clean(x: Any) -> str:
        return str(x).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(clean(x) for x in row) + " |" for row in rows]
    return "\n".join(lines)


def render_markdown(plan: dict[str, Any], records: list[dict[str, Any]], best: dict[str, Any], plots: list[Path]) -> str:
    counts: dict[str, int] = defaultdict(int)
    for r in records:
        counts[str(r.get("status"))] += 1
    out = [f"# Sweep `{plan['name']}`", "",
           f"Source: `{plan['source']}`; seeds {plan['seeds']}; primary metric `{plan['metric']}` ({plan['mode']}).",
           "Trials: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) + ".", ""]
    out += _cells_section(plan, records)
    if plan.get("baseline"):
        out += _comparison_section(plan, records)
    if plan.get("search"):
        out += _search_section(plan, records, best)
    if plots:
        out += ["## Plots", ""] + [f"![{p.stem}]({p.name})" for p in plots] + [""]
    out += _trials_section(plan, records)
    return "\n".join(out)


def _cells_section(plan: dict[str, Any], records: list[dict[str, Any]]) -> list[str]:
    metric, metrics = plan["metric"], summary_metrics(records)
    shown = [m for m in metrics if m.startswith("recall_at_")][:2] + [m for m in ("map_at_r", "nmi") if m in metrics]
    shown = [metric] + [m for m in shown if m != metric] if metric in metrics else shown
    rows = [[cell.id] + [_ci_text(mean_ci(list(_by_seed(records, cell.id, m).values()))) for m in shown]
            for cell in _cells(plan)]
    return [f"## Per cell: mean ± {CONFIDENCE:.0%} Student-t interval over seeds (final phase)", "",
            _md_table(["cell", *shown], rows), ""]


def _comparison_section(plan: dict[str, Any], records: list[dict[str, Any]]) -> list[str]:
    metric, n = plan["metric"], len(plan["seeds"])
    caveat = (f"With {n} seeds the interval is the mean difference ± {t_multiplier(n):.2f} standard errors: wide, "
              "and the test has little power" if n >= 2 else "With one seed there is no interval and no test")
    rows = [[c["cell"], c["baseline"], c["n"], _f(c["mean_diff"]), f"[{_f(c['ci_low'])}, {_f(c['ci_high'])}]", _f(c["p_value"], 3)]
            for c in comparison_rows(plan, records) if c["metric"] == metric]
    return [f"## Paired comparison with the baseline {plan['baseline']} on `{metric}`", "",
            "Differences are cell - baseline, paired by seed; p from a two-sided paired t-test "
            f"(`scipy.stats.ttest_rel`). {caveat}; p-values are not corrected for the number of cells compared.", "",
            _md_table(["cell", "baseline", "n", "mean diff", f"{CONFIDENCE:.0%} CI", "p"], rows), ""]


def _search_section(plan: dict[str, Any], records: list[dict[str, Any]], best: dict[str, Any]) -> list[str]:
    """What the search chose per cell (the runner's choice, kept in the ledger)."""
    rows = []
    for cell in _cells(plan):
        tried = [r for r in records if r.get("phase") == SEARCH and r.get("cell") == cell.id]
        finished = sum(r.get("status") == FINISHED for r in tried)
        chosen = best.get(cell.id)
        rows.append([cell.id, f"{finished}/{len(tried)}", json.dumps(chosen["params"]) if chosen else "-",
                     _f(chosen["value"]) if chosen else "-"])
    metric = (plan["search"] or {}).get("metric") or plan["metric"]
    return ["## Search (per cell, on held-out training classes)", "",
            _md_table(["cell", "finished", "best params", f"{metric} (held-out)"], rows), ""]


def _trials_section(plan: dict[str, Any], records: list[dict[str, Any]]) -> list[str]:
    metric = plan["metric"]
    rows = [[r["key"], r["phase"], r["status"], _f(r.get(metric)), "-" if r["epochs"] is None else r["epochs"],
             "" if r["params"] == "{}" else r["params"], (r["error"] or "")[:200]] for r in trials_rows(plan, records)]
    return ["## Trials", "", _md_table(["trial", "phase", "status", metric, "epochs", "params", "error"], rows), ""]


# --------------------------------------------------------------------------- plots


def plot_axes(plan: dict[str, Any], records: list[dict[str, Any]], out_dir: Path) -> list[Path]:
    """Primary metric vs each ablation axis (categorical x: axes like 0,1,2,4,8 read best evenly)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric, cells = plan["metric"], _cells(plan)
    axes = plan["axes"] or (["arm"] if plan["arms"] else [])
    paths = []
    for axis in axes:
        values = list(dict.fromkeys(json.dumps(c.get(axis)) for c in cells))
        lines: dict[str, list[tuple[int, MeanCI]]] = defaultdict(list)
        for cell in cells:
            others = [("arm", cell.arm)] * (axis != "arm" and cell.arm is not None)
            others += [(k, v) for k, v in cell.coords.items() if k != axis]
            label = ", ".join(f"{v}" if k == "arm" else f"{k}={v}" for k, v in others) or metric
            ci = mean_ci(list(_by_seed(records, cell.id, metric).values()))
            if ci.n:
                lines[label].append((values.index(json.dumps(cell.get(axis))), ci))
        fig, ax = plt.subplots(figsize=(6, 4))
        for i, (label, points) in enumerate(lines.items()):
            points.sort(key=lambda p: p[0])
            dodge = 0.05 * (i - (len(lines) - 1) / 2)  # lines sharing an x stay visible
            xs = [p[0] + dodge for p in points]
            ys = [p[1].mean for p in points]
            err = [0.0 if math.isnan(p[1].half_width) else p[1].half_width for p in points]
            ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=label)
        ax.set_xticks(range(len(values)), [json.loads(v) for v in values])
        ax.set_xlabel(axis)
        ax.set_ylabel(f"{metric} (mean ± {CONFIDENCE:.0%} CI, {len(plan['seeds'])} seeds)")
        ax.set_title(plan["name"])
        ax.grid(alpha=0.3)
        if set(lines) != {metric}:
            ax.legend(fontsize=8)
        fig.tight_layout()
        path = out_dir / f"plot_{re.sub(r'[^A-Za-z0-9_.-]', '_', axis)}.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        paths.append(path)
    return paths


# --------------------------------------------------------------------------- entry points


def write_report(sweep_dir: str | Path) -> list[Path]:
    """Write tables, markdown and plots into `sweep_dir`; return the files written."""
    sweep_dir = Path(sweep_dir)
    plan, records = load_sweep(sweep_dir)
    files = []
    for name, rows in (("trials", trials_rows(plan, records)), ("cells", cell_rows(plan, records)),
                       ("comparisons", comparison_rows(plan, records))):
        if rows:
            path = sweep_dir / f"{name}.parquet"
            pq.write_table(_table(rows), path)
            files.append(path)
    plots = plot_axes(plan, records, sweep_dir)
    md = sweep_dir / "report.md"
    md.write_text(render_markdown(plan, records, Ledger(sweep_dir).get("best", {}), plots))
    return [md, *files, *plots]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write the report of a sweep directory.")
    parser.add_argument("sweep_dir", type=Path)
    args = parser.parse_args(argv)
    try:
        files = write_report(args.sweep_dir)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print((args.sweep_dir / "report.md").read_text())
    print("wrote " + ", ".join(str(f) for f in files))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
