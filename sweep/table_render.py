"""The paper's table as markdown, LaTeX and CSV, with the legend that says what its numbers and marks mean."""
from __future__ import annotations

import csv
import io
import json
import math
import string
from typing import Any, Optional

from sweep.stats import CONFIDENCE
from sweep.units import fmt_metric, heading, in_unit, is_fraction, unit_of
from sweep.table_compare import EQUIVALENT_MARK, baseline_rows
from sweep.table_data import Entry, Table


def _number(e: Optional[Entry]) -> tuple[str, str, str]:
    """(mean, half-width, n) as text."""
    if e is None or e.ci.n == 0:
        return "", "", ""
    half = "" if not math.isfinite(e.ci.low) else fmt_metric(e.metric, e.ci.half_width)
    return fmt_metric(e.metric, e.ci.mean), half, str(e.ci.n)


def _headers(t: Table) -> list[tuple[tuple[Any, ...], str]]:
    return [(c, m) for c in t.cols for m in t.metrics]


def _cell_marks(t: Table, e: Entry) -> str:
    """Protocol footnote letters on a cell, when its column mixes protocols."""
    return "" if t.by_column else t.protocol_marks(e.cell.protocols)


def _col_marks(t: Table, col: tuple[Any, ...]) -> str:
    return t.col_marks.get(col, "")


def _legend(t: Table) -> list[str]:
    marks = {ch for e in t.entries.values() for ch in e.mark}
    base = ", ".join(f"{k}={v}" for k, v in (t.baseline or {}).items())
    if t.baseline and not t.keys:  # the baseline rows by their labels (`MS`)
        base = ", ".join(t.row_labels[r] for r in baseline_rows(t, t.baseline)) or base
    lines = [f"Mean ± {CONFIDENCE:.0%} Student-t half-width over seeds (number of seeds in parentheses), in % for "
             "retrieval and clustering scores. Bold: the best mean in its column when a paired test over the seeds it "
             "shares with the runner-up separates them (a paired t-test with p < 0.05, or a seed policy's repeated 95 % CI "
             "when the two are one of its comparisons); never a cell alone in its column."]
    if "†" in marks or (t.baseline and not marks):
        lines.append(f"† differs from the baseline ({base}) in the same column: paired t-test over the shared seeds, "
                     "p < 0.05 (its 95 % interval of the difference excludes 0).")
    if "‡" in marks:
        lines.append(f"‡ differs from the baseline ({base}): a seed policy's repeated 95 % CI (Jennison & Turnbull; "
                     "valid under its optional stopping) excludes 0.")
    if EQUIVALENT_MARK in marks:
        unit = " points" if all(is_fraction(m) for m in t.metrics) else ""
        lines.append(f"≈ within ±{t.margin:g}{unit} of the baseline: the 95 % interval of the paired difference lies "
                     "inside the margin (two one-sided tests, TOST); with † or ‡ it also excludes 0."
                     + (f" The margin is this table's, not in the design of {', '.join(t.post_hoc)} (post hoc)."
                        if t.post_hoc else ""))
    if len(t.protocols) == 1:
        lines.append(f"Protocol: {t.protocols[0]}.")
    elif t.protocols:
        where = "columns" if t.by_column else "cells"
        lines.append(f"The {where} differ in protocol: "
                     + "; ".join(f"({string.ascii_lowercase[i]}) {p}" for i, p in enumerate(t.protocols)) + ".")
    lines += t.notes
    lines.append(f"Sweeps: {', '.join(t.sweeps)}.")
    return lines


def to_markdown(t: Table) -> str:
    def cell_text(e: Optional[Entry]) -> str:
        mean, half, n = _number(e)
        if not mean:
            return "–"
        mean = f"**{mean}**" if e.best else mean
        sup = f"<sup>{marks}</sup>" if (marks := _cell_marks(t, e)) else ""
        return (f"{mean} ± {half} ({n}){e.mark}" if half else f"{mean} ({n}){e.mark}") + sup

    def col_text(c: tuple[Any, ...], m: str) -> str:
        sup = f"<sup>{marks}</sup>" if (marks := _col_marks(t, c)) else ""
        name = t.col_labels[c] + sup
        return (f"{name} · {heading(m)}" if len(t.metrics) > 1 else name) if t.col_keys else heading(m) + sup

    header = [t.row_header] + [col_text(c, m) for c, m in _headers(t)]
    keys = f"{', '.join(t.col_keys)} → " if t.col_keys and t.keys else ""
    title = keys + (heading(t.metrics[0]) if len(t.metrics) == 1 and t.col_keys else "")
    lines = [f"**{title.strip()}**", ""] if title.strip() else []
    lines += ["| " + " | ".join(_md(h) for h in header) + " |", "| " + " | ".join(["---"] + [":---:"] * len(_headers(t))) + " |"]
    for r in t.rows:
        cells = [t.row_labels[r]] + [cell_text(t.entries.get((r, c, m))) for c, m in _headers(t)]
        lines.append("| " + " | ".join(_md(x) for x in cells) + " |")
    return "\n".join(lines + [""] + [f"{line}  " for line in _legend(t)]) + "\n"


def _md(x: str) -> str:
    return str(x).replace("|", "\\|").replace("\n", " ")


_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
        "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "–": "--", "±": r"$\pm$", "≈": r"$^{\approx}$", "†": r"$^\dagger$",
        "‡": r"$^\ddagger$", "→": r"$\rightarrow$", "·": r"$\cdot$", "<": r"$<$", ">": r"$>$"}


def tex(text: str) -> str:
    return "".join(_TEX.get(ch, ch) for ch in str(text))


def _sup(marks: str) -> str:
    return rf"\textsuperscript{{{marks}}}" if marks else ""


def to_latex(t: Table) -> str:
    """A booktabs `table` with a caption and a `\\label` (needs `\\usepackage{booktabs}`)."""
    heads = _headers(t)
    spec = "l" + "c" * len(heads)
    lines = [r"\begin{table}[t]", r"\centering", rf"\begin{{tabular}}{{{spec}}}", r"\toprule"]
    col_head = {c: tex(t.col_labels[c]) + _sup(_col_marks(t, c)) for c in t.cols}
    if t.col_keys:
        if t.keys:
            lines.append(rf" & \multicolumn{{{len(heads)}}}{{c}}{{{tex(', '.join(t.col_keys))}}} \\")
            lines.append(rf"\cmidrule(lr){{2-{1 + len(heads)}}}")
        if len(t.metrics) > 1:
            n = len(t.metrics)
            lines.append(" & ".join([""] + [rf"\multicolumn{{{n}}}{{c}}{{{col_head[c]}}}" for c in t.cols]) + r" \\")
            lines.append(" ".join(rf"\cmidrule(lr){{{2 + i * n}-{1 + i * n + n}}}" for i in range(len(t.cols))))
            lines.append(" & ".join([tex(t.row_header)] + [tex(heading(m)) for _, m in heads]) + r" \\")
        else:
            lines.append(" & ".join([tex(t.row_header)] + [col_head[c] for c, _ in heads]) + r" \\")
    else:
        lines.append(" & ".join([tex(t.row_header)] + [tex(heading(m)) + _sup(_col_marks(t, c)) for c, m in heads]) + r" \\")
    lines.append(r"\midrule")
    for r in t.rows:
        cells = [tex(t.row_labels[r])]
        for c, m in heads:
            e = t.entries.get((r, c, m))
            mean, half, n = _number(e)
            if not mean:
                cells.append("--")
                continue
            mean = rf"\textbf{{{mean}}}" if e.best else mean
            body = rf"{mean} $\pm$ {half}" if half else mean
            cells.append(rf"{body} {{\scriptsize ({n})}}{tex(e.mark)}{_sup(_cell_marks(t, e))}")
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    legend = " ".join(tex(line) for line in _legend(t))
    metric = "" if len(t.metrics) > 1 else f"{tex(heading(t.metrics[0]))}. "
    head = f"{tex(t.caption.rstrip('.'))}. " if t.caption else ""
    lines += [rf"\caption{{{head}{metric}{legend}}}", rf"\label{{{t.label}}}", r"\end{table}"]
    return "\n".join(lines) + "\n"


CSV_FIELDS = ["row", "col", "metric", "unit", "n", "mean", "ci_low", "ci_high", "best", "seeds", "mark", "test",
              "verdict", "diff", "diff_low", "diff_high", "p_value", "protocol", "sources"]


def _shown(metric: str, x: float) -> float | str:
    """A value in the unit every format shows (fractions in %, differences in points)."""
    return in_unit(metric, x) if math.isfinite(x) else ""


def to_csv(t: Table) -> str:
    out = io.StringIO()
    w = csv.DictWriter(out, CSV_FIELDS + t.row_keys + t.col_keys)
    w.writeheader()
    for (r, c, m), e in sorted(t.entries.items(), key=lambda kv: (t.rows.index(kv[0][0]), t.cols.index(kv[0][1]), t.metrics.index(kv[0][2]))):
        comp = e.comparison
        w.writerow({"row": t.row_labels[r], "col": t.col_labels[c], "metric": m, "unit": unit_of(m),
                    "n": e.ci.n, "mean": _shown(m, e.ci.mean), "ci_low": _shown(m, e.ci.low), "ci_high": _shown(m, e.ci.high),
                    "best": e.best, "seeds": json.dumps(sorted(e.cell.by_seed(m))), "mark": e.mark,
                    "test": comp.procedure if comp else "", "verdict": e.word or e.note,
                    "diff": _shown(m, comp.mean_diff) if comp else "", "diff_low": _shown(m, comp.low) if comp else "",
                    "diff_high": _shown(m, comp.high) if comp else "",
                    "p_value": comp.p_value if comp and math.isfinite(comp.p_value) else "",
                    "protocol": " | ".join(e.cell.protocols),
                    "sources": ";".join(sorted({f"{tr.sweep}/{tr.cell}" for tr in e.cell.trials})),
                    **dict(zip(t.row_keys, r)), **dict(zip(t.col_keys, c))})
    return out.getvalue()


WRITERS = {"md": to_markdown, "latex": to_latex, "csv": to_csv}


