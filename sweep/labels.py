"""Human-readable names for what a sweep shows: cells, trials, metrics and numbers.

Cell ids (`arm=ee,expansion.n_inner_pts=2`) stay the keys of the ledger, the tables and MLflow
tags; the console, the MLflow run names, the plots and the report show labels that name the
method instead:

- with arms, the arm name from the YAML, then each varying grid axis as `short=value` (`ee dim=16`);
- without arms, when the cells run different methods (loss + active expansion), the method's
  short name, then the varying axes that still mean something for it: a grid over EE's
  `n_inner_pts` [0, 2] on multi-similarity reads `MS` (0 interior points: EE is off) and
  `MS+EE n=2`; SEE's `n_expan` the same way (`PA`, `PA+SEE n=8`);
- otherwise the varying axes alone (`dim=16`).

Labels are a function of the plan (cells, arms, base config) alone, so the report rebuilds the
same ones from the sweep directory.
"""
from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Any, Iterable

from dml_core.config import get_dotted
from dml_core.evaluation.names import recall_k
from dml_core.params import EXPANSIONS, LOSSES

if TYPE_CHECKING:
    from sweep.plan import SweepPlan

# Short names of common ablation keys; any other key shows its last dotted part.
_SHORT_KEYS = {
    "expansion.n_inner_pts": "n",
    "expansion.n_expan": "n",
    "expansion.name": "exp",
    "model.embedding_dim": "dim",
    "model.backbone": "net",
    "data.batch.classes_per_batch": "P",
    "data.batch.samples_per_class": "K",
    "optimizer.lr": "lr",
    "optimizer.weight_decay": "wd",
    "loss.name": "loss",
    "data.name": "data",  # `data=cub`, not `name=cub`: a table column per dataset
}

# The method is named by its components' own `short_name`s (declared on their parameter classes in
# dml_core/params/, so a new loss or expansion is labelled without an edit here).
_METHOD_KEYS = ("loss.name", "expansion.name")

# Display names of the trainer's metrics (their units: `sweep.units`).
_METRIC_NAMES = {"map_at_r": "MAP@R", "r_precision": "RP", "nmi": "NMI", "f1": "F1", "loss": "loss"}


def metric_label(metric: str) -> str:
    """`recall_at_1` -> `R@1`, `map_at_r` -> `MAP@R`; unknown names unchanged."""
    k = recall_k(metric)
    return f"R@{k}" if k is not None else _METRIC_NAMES.get(metric, metric)


def fmt_value(x: Any) -> str:
    """A config value for people: floats with 3 significant digits (`0.00354`), the rest as is."""
    if isinstance(x, bool) or x is None:
        return str(x)
    if isinstance(x, float):
        return "nan" if math.isnan(x) else f"{x:.3g}"
    return str(x)


def fmt_params(params: dict[str, Any]) -> str:
    """`{"optimizer.lr": 0.0035384}` -> `lr 0.00354`."""
    return ", ".join(f"{short_key(k)} {fmt_value(v)}" for k, v in params.items()) or "-"


def fmt_duration(seconds: float) -> str:
    """`8 s`, `1:05` (m:ss), `1:02:03` (h:mm:ss)."""
    if not math.isfinite(seconds):
        return "-"
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    h, rest = divmod(s, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


# Readable names of common ablation axes, for figure axes and tables (`sweep.axes.<key>.label`
# overrides); any other key shows as written.
_AXIS_LABELS = {
    "expansion.n_inner_pts": "interior points per pair n (EE)",
    "expansion.n_expan": "synthetic points per sample n (SEE)",
    "model.embedding_dim": "embedding dimension",
    "data.num_classes": "training classes",
    "data.batch.classes_per_batch": "classes per batch P",
    "data.batch.samples_per_class": "samples per class K",
    "optimizer.lr": "learning rate",
    "optimizer.weight_decay": "weight decay",
    "arm": "method",
}


def axis_label(key: str, label: str | None = None) -> str:
    """`model.embedding_dim` -> `embedding dimension`; `label` (the YAML's own) wins."""
    return label or _AXIS_LABELS.get(key, key)


def short_key(key: str) -> str:
    return _SHORT_KEYS.get(key, key.rsplit(".", 1)[-1])


def count_keys() -> dict[str, str]:
    """Expansion name -> the dotted key of the count whose 0 switches it off
    (`{"ee": "expansion.n_inner_pts", "see": "expansion.n_expan"}`), from the registry."""
    return {c.name: f"{EXPANSIONS.section}.{c.params.count_field}" for c in EXPANSIONS if c.params.count_field}


def method_of(settings: dict[str, Any], base: dict[str, Any]) -> tuple[str, set[str]]:
    """The method a cell runs, e.g. `MS+EE`, and the grid keys that are part of its name or
    inert for it (an expansion's count when the expansion is off)."""
    def get(key: str) -> Any:
        return settings[key] if key in settings else get_dotted(base, key)

    loss, expansion = get("loss.name"), get("expansion.name")
    name = LOSSES.label(loss) if loss is not None else ""
    absorbed = set(_METHOD_KEYS) | set(count_keys().values())
    count_key = count_keys().get(str(expansion))
    count = get(count_key) if count_key else None
    if expansion not in (None, EXPANSIONS.default) and count != 0:
        name += "+" + EXPANSIONS.label(expansion)
        absorbed.discard(count_key)  # its count stays in the label: `MS+EE n=2`
    return name, absorbed


def cell_labels(cells: Iterable[dict[str, Any]], arms: dict[str, dict[str, Any]] | None = None,
                base: dict[str, Any] | None = None) -> dict[str, str]:
    """Cell id -> label, for the cells of a plan (`{"id", "arm", "coords"}` each); `base` is the
    plan's base config (without it, no method names).

    Only axes whose value differs between cells are named; an axis an arm pins (its overrides set
    it) is left out of that arm's label. Two axes with the same short name keep their full keys.
    """
    cells = list(cells)
    arms = arms or {}
    axes = [k for k in dict.fromkeys(k for c in cells for k in c["coords"])
            if len({repr(c["coords"].get(k)) for c in cells}) > 1]
    shorts = [short_key(k) for k in axes]
    names = {k: (s if shorts.count(s) == 1 else k) for k, s in zip(axes, shorts)}
    methods = {c["id"]: method_of(c["coords"], base) for c in cells} if base is not None and not arms else {}
    by_method = len({m for m, _ in methods.values()}) > 1
    labels = {}
    for c in cells:
        pinned = arms.get(c["arm"] or "", {})
        parts = [c["arm"]] if c["arm"] is not None else []
        skip = set(pinned)
        if by_method:
            method, absorbed = methods[c["id"]]
            parts.append(method)
            skip |= absorbed
        parts += [f"{names[k]}={fmt_value(c['coords'][k])}" for k in axes if k in c["coords"] and k not in skip]
        labels[c["id"]] = " ".join(parts) or "base"
    if len(set(labels.values())) < len(labels):  # e.g. two arms pinning different values of one axis
        return {c["id"]: c["id"] for c in cells}
    return labels


def plan_labels(plan: "SweepPlan") -> dict[str, str]:
    """Cell id -> label for the cells of a typed plan (`cell_labels` of its cells, arms and base)."""
    return cell_labels([{"id": c.id, "arm": c.arm, "coords": c.coords} for c in plan.cells], plan.spec.arms, plan.base)


def comparison_label(cell: str, baseline: str) -> str:
    """`MS+EE n=2 vs MS`: what a comparison compares, in its headline, table row, plot and MLflow."""
    return f"{cell} vs {baseline}"


def slug(label: str) -> str:
    """A label inside an MLflow metric name or a file name (letters, digits, `_ . -`)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", label).strip("_") or "base"
