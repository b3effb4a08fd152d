"""Units of the metrics a sweep shows: which is a percentage, its range, and how values and differences print.

One rule for every writer (console, report, tables, plots, MLflow): a metric that is a fraction
(recall, MAP@R, NMI, ...) is logged in [0, 1], shown in % and its differences in percentage
points, its interval clipped to [0, 100] % (a difference to [-100, +100] points). Other metrics
(loss) are shown as they are, unclipped. Which way a metric improves is the registry's
(`dml_core.evaluation.names.direction`), not decided here.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from sweep.labels import metric_label

# What the trainer logs that is not a score in [0, 1].
_NOT_FRACTIONS = {"loss", "time_s", "epoch"}


def is_fraction(metric: str) -> bool:
    """Retrieval and clustering scores live in [0, 1] and read as percentages."""
    return metric not in _NOT_FRACTIONS


def metric_range(metric: str, difference: bool = False) -> tuple[float, float]:
    """The values `metric` (or a difference of it) can take, as the trials log it."""
    if not is_fraction(metric):
        return -math.inf, math.inf
    return (-1.0, 1.0) if difference else (0.0, 1.0)


def unit_of(metric: str, difference: bool = False) -> str:
    """`%` / `points` for fractions, "" for the rest."""
    if not is_fraction(metric):
        return ""
    return "points" if difference else "%"


def points_suffix(metric: str) -> str:
    """What follows a difference or a margin of `metric` in prose: ` points`, or nothing."""
    return " points" if is_fraction(metric) else ""


def in_unit(metric: str, x: float) -> float:
    """A raw value in the unit the report shows (fractions x 100)."""
    return 100.0 * x if is_fraction(metric) else x


def from_points(metric: str, x: float) -> float:
    """Points of a metric (what YAML margins and widths are written in) -> its raw units."""
    return x / 100.0 if is_fraction(metric) else x


def heading(metric: str, difference: bool = False) -> str:
    """A column or axis heading: `R@1 (%)`, `loss`; of a difference, `R@1 difference (points)`."""
    unit = unit_of(metric, difference)
    return f"{metric_label(metric)}{' difference' if difference else ''}" + (f" ({unit})" if unit else "")


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


@dataclass(frozen=True)
class MetricUnit:
    """How one metric reads in the report, worked out once: its names, units and ranges, and the
    factor from logged values to shown ones (a plot multiplies by `scale`; `in_unit` is the rule)."""

    metric: str
    label: str  # `R@1`
    heading: str  # `R@1 (%)`
    diff_heading: str  # `R@1 difference (points)`
    unit: str  # `%` or ""
    diff_unit: str  # `points` or ""
    suffix: str  # ` points` or "": after a difference in prose
    scale: float  # 100.0 for fractions, 1.0 for the rest
    range: tuple[float, float]  # as logged
    shown_range: tuple[float, float]  # in the report's unit
    shown_diff_range: tuple[float, float]  # of a difference, in the report's unit


def metric_unit(metric: str) -> MetricUnit:
    """Every unit rule of this module applied to `metric`, once."""
    low, high = metric_range(metric)
    d_low, d_high = metric_range(metric, difference=True)
    return MetricUnit(metric, metric_label(metric), heading(metric), heading(metric, True), unit_of(metric),
                      unit_of(metric, True), points_suffix(metric), in_unit(metric, 1.0), (low, high),
                      (in_unit(metric, low), in_unit(metric, high)), (in_unit(metric, d_low), in_unit(metric, d_high)))
