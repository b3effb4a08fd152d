"""Human-readable names for what a sweep shows: cells, trials, metrics and numbers.

Cell ids (`arm=ee,expansion.n_inner_pts=2`) stay the keys of the ledger, the tables and MLflow
tags; the console, the MLflow run names and the report show labels instead: the arm name from the
YAML, then each varying grid axis as `short=value` (`ee n=2`). Labels are a function of the plan's
cells alone, so the report rebuilds the same ones from `plan.json`.
"""
from __future__ import annotations

import math
import re
from typing import Any, Iterable

from dml_core.evaluation.names import recall_k

# Short names of common ablation keys; any other key shows its last dotted part.
_SHORT_KEYS = {
    "expansion.n_inner_pts": "n",
    "expansion.name": "exp",
    "model.embedding_dim": "dim",
    "model.backbone": "net",
    "data.batch.classes_per_batch": "P",
    "data.batch.samples_per_class": "K",
    "optimizer.lr": "lr",
    "optimizer.weight_decay": "wd",
    "loss.name": "loss",
}

# Display names of the trainer's metrics; whether a value is a fraction shown as a percentage.
_METRIC_NAMES = {"map_at_r": "MAP@R", "r_precision": "RP", "nmi": "NMI", "f1": "F1", "loss": "loss"}
_NOT_FRACTIONS = {"loss", "time_s", "epoch"}


def metric_label(metric: str) -> str:
    """`recall_at_1` -> `R@1`, `map_at_r` -> `MAP@R`; unknown names unchanged."""
    k = recall_k(metric)
    return f"R@{k}" if k is not None else _METRIC_NAMES.get(metric, metric)


def is_fraction(metric: str) -> bool:
    """Retrieval and clustering scores live in [0, 1] and read as percentages."""
    return metric not in _NOT_FRACTIONS


def fmt_value(x: Any) -> str:
    """A config value for people: floats with 3 significant digits (`0.00354`), the rest as is."""
    if isinstance(x, bool) or x is None:
        return str(x)
    if isinstance(x, float):
        return "nan" if math.isnan(x) else f"{x:.3g}"
    return str(x)


def fmt_params(params: dict[str, Any]) -> str:
    """`{"optimizer.lr": 0.0035384}` -> `lr 0.00354`."""
    return ", ".join(f"{_short(k)} {fmt_value(v)}" for k, v in params.items()) or "-"


def fmt_metric(metric: str, x: Any, digits: int = 1) -> str:
    """A metric value: fractions as percentages (`96.2`), others with 3 significant digits."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    return f"{100 * x:.{digits}f}" if is_fraction(metric) else f"{x:.3g}"


def fmt_points(metric: str, x: float, digits: int = 1) -> str:
    """A difference of a metric, signed: `+1.3` (percentage points for fractions)."""
    if not math.isfinite(x):
        return "-"
    return f"{100 * x:+.{digits}f}" if is_fraction(metric) else f"{x:+.3g}"


def fmt_duration(seconds: float) -> str:
    """`8 s`, `1:05` (m:ss), `1:02:03` (h:mm:ss)."""
    if not math.isfinite(seconds):
        return "-"
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    h, rest = divmod(s, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


def _short(key: str) -> str:
    return _SHORT_KEYS.get(key, key.rsplit(".", 1)[-1])


def cell_labels(cells: Iterable[dict[str, Any]], arms: dict[str, dict[str, Any]] | None = None) -> dict[str, str]:
    """Cell id -> label, for the cells of a plan (`{"id", "arm", "coords"}` each).

    Only axes whose value differs between cells are named; an axis an arm pins (its overrides set
    it) is left out of that arm's label. Two axes with the same short name keep their full keys.
    """
    cells = list(cells)
    arms = arms or {}
    axes = [k for k in dict.fromkeys(k for c in cells for k in c["coords"])
            if len({repr(c["coords"].get(k)) for c in cells}) > 1]
    shorts = [_short(k) for k in axes]
    names = {k: (s if shorts.count(s) == 1 else k) for k, s in zip(axes, shorts)}
    labels = {}
    for c in cells:
        pinned = arms.get(c["arm"] or "", {})
        parts = [c["arm"]] if c["arm"] is not None else []
        parts += [f"{names[k]}={fmt_value(c['coords'][k])}" for k in axes if k in c["coords"] and k not in pinned]
        labels[c["id"]] = " ".join(parts) or "base"
    if len(set(labels.values())) < len(labels):  # e.g. two arms pinning different values of one axis
        return {c["id"]: c["id"] for c in cells}
    return labels


def slug(label: str) -> str:
    """A label inside an MLflow metric name or a file name (letters, digits, `_ . -`)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", label).strip("_") or "base"
