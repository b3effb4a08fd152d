"""Small-sample statistics for seeds: Student-t intervals and paired t-tests.

Computed with numpy and Student's t distribution from `scipy.special` (`stdtr`, `stdtrit`): the
same numbers as `scipy.stats.sem` / `t.ppf` / `ttest_rel`, at a microsecond a call instead of about
half a millisecond -- a sweep of 1,000 cells makes thousands of comparisons at its end, and the
time from its last trial to its report is part of what it costs (`benchmarks/bench_sweep_scale.py`).

A sweep typically has 3-5 seeds per cell. With n = 3 the 95 % t multiplier is 4.30, so intervals
are wide and the paired test has little power: read p-values as descriptive, and note that no
correction for comparing many cells against one baseline is applied. A seed policy (seeds added
until the answer is clear) needs intervals that hold under that optional stopping: those are in
`sweep.sequential` (the spending functions that spread alpha over its looks are here, beside the
seed forecast's use of them); `verdict` turns either kind into words, and `shape_note` flags a seed far
from the others beside it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import special

from sweep.units import fmt_points, metric_range, points_suffix

CONFIDENCE = 0.95
ALPHA = 1 - CONFIDENCE  # a verdict other than "inconclusive" needs p below this


@dataclass(frozen=True)
class MeanCI:
    n: int
    mean: float
    low: float  # NaN when n < 2: one seed says nothing about spread
    high: float

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2


def t_multiplier(n: int, confidence: float = CONFIDENCE) -> float:
    """Half-width of the interval in standard errors, e.g. 4.30 for n = 3 at 95 %."""
    return float(special.stdtrit(n - 1, (1 + confidence) / 2))


def mean_ci(values: list[float] | np.ndarray, confidence: float = CONFIDENCE) -> MeanCI:
    """Mean and Student-t confidence interval over seeds (NaN values are ignored)."""
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    n = len(x)
    if n == 0:
        return MeanCI(0, math.nan, math.nan, math.nan)
    mean = float(x.mean())
    if n < 2:
        return MeanCI(1, mean, math.nan, math.nan)
    half = t_multiplier(n, confidence) * _sem(x)
    return MeanCI(n, mean, mean - half, mean + half)


def _sem(x: np.ndarray) -> float:
    return float(x.std(ddof=1) / math.sqrt(len(x)))


def paired_t_p_value(diff: np.ndarray) -> float:
    """Two-sided p of the paired t-test on the differences (`scipy.stats.ttest_rel`'s): 0 when
    they are all equal and not 0, NaN when all are 0."""
    with np.errstate(divide="ignore", invalid="ignore"):  # constant differences: t = +-inf or NaN
        t = float(np.float64(diff.mean()) / np.float64(_sem(diff)))
    return float(2 * special.stdtr(len(diff) - 1, -abs(t)))


PAIRED_T = "paired t"  # the procedure of a fixed-seeds comparison


@dataclass(frozen=True)
class PairedComparison:
    seeds: list[int]  # seeds where both cells finished
    mean_diff: float  # cell - baseline
    low: float
    high: float
    p_value: float  # two-sided paired t-test; NaN for n < 2 or when every difference is 0
    # How the interval was made: PAIRED_T (a fixed number of seeds) or the sequential procedure
    # of a seed policy (`sweep.sequential`), whose interval holds under its optional stopping.
    procedure: str = PAIRED_T

    @property
    def n(self) -> int:
        return len(self.seeds)



def paired_comparison(cell: dict[int, float], baseline: dict[int, float], confidence: float = CONFIDENCE) -> PairedComparison:
    """Compare two cells seed by seed (the same seed = the same data order and initialisation)."""
    seeds = sorted(s for s in cell if s in baseline and math.isfinite(cell[s]) and math.isfinite(baseline[s]))
    a = np.array([cell[s] for s in seeds])
    b = np.array([baseline[s] for s in seeds])
    diff = mean_ci(a - b, confidence)
    p = paired_t_p_value(a - b) if len(seeds) >= 2 else math.nan
    return PairedComparison(seeds, diff.mean, diff.low, diff.high, p)


@dataclass(frozen=True)
class Estimate:
    """A mean with its 95 % interval, clipped to the metric's range (raw units)."""

    n: int
    mean: float
    low: float  # NaN when n < 2
    high: float
    clipped_low: bool = False  # the bound was clipped to the metric's range
    clipped_high: bool = False

    @classmethod
    def of(cls, n: int, mean: float, low: float, high: float, bounds: tuple[float, float]) -> "Estimate":
        lo, hi = bounds
        c_low = max(lo, low) if math.isfinite(low) else low
        c_high = min(hi, high) if math.isfinite(high) else high
        # A NaN bound (fewer than two seeds) is no interval, not a clipped one (NaN != NaN).
        return cls(n, mean, c_low, c_high, math.isfinite(low) and c_low != low, math.isfinite(high) and c_high != high)

    @property
    def clipped(self) -> bool:
        return self.clipped_low or self.clipped_high

    @property
    def has_interval(self) -> bool:
        return math.isfinite(self.low) and math.isfinite(self.high)



def cell_estimates(values: dict[str, dict[int, float]]) -> dict[str, Estimate]:
    """Per metric (metric -> seed -> value): the mean over seeds and its interval, clipped to the metric's range."""
    out = {}
    for metric, by_seed in values.items():
        ci = mean_ci(list(by_seed.values()))
        out[metric] = Estimate.of(ci.n, ci.mean, ci.low, ci.high, metric_range(metric))
    return out


def difference_estimate(test: PairedComparison, metric: str) -> Estimate:
    """A paired comparison's difference, its interval clipped to the range a difference of `metric` can take."""
    return Estimate.of(test.n, test.mean_diff, test.low, test.high, metric_range(metric, difference=True))


def spending(kind: str, t: np.ndarray, alpha: float = ALPHA) -> np.ndarray:
    """Cumulative alpha spent by information fraction `t` (0 < t <= 1), f(1) = alpha."""
    t = np.asarray(t, dtype=float)
    if kind == "pocock":
        return alpha * np.log1p((math.e - 1) * t)
    if kind == "obrien_fleming":
        return 2 - 2 * special.ndtr(special.ndtri(1 - alpha / 2) / np.sqrt(t))
    if kind == "bonferroni":
        return alpha * t  # with equal steps in look count, see `Design.from_policy`
    raise ValueError(f"unknown spending function {kind!r}")


def equivalent_words(margin_text: str) -> str:
    return f"equivalent within ±{margin_text}"


def verdict(c: PairedComparison, mode: str, *, margin: float | None = None, margin_text: str | None = None) -> str:
    """Plain words for one paired comparison; the one place a comparison becomes a word (console,
    report, MLflow and `dml-report table` all call it).

    The words follow the comparison's interval (a paired-t interval excludes 0 exactly when the
    paired t-test has p < ALPHA; a sequential interval has no single p-value):

    - "better"/"worse" (by the metric's `mode`): the interval excludes 0;
    - "equivalent within ±m" when `margin` m (same units as the differences) is given and the
      interval contains 0 and lies inside (-m, +m): two one-sided tests (TOST, Schuirmann 1987),
      each at half the interval's error rate, so the verdict never contradicts the interval shown;
    - "better, within ±m" / "worse, within ±m" when the interval excludes 0 *and* lies inside the
      margin: both claims hold, and saying only one would hide the other (a clear but small gain);
    - "inconclusive" otherwise. `margin_text` is how the margin reads (default `m:g`).
    """
    if c.n < 2:
        return "no test (fewer than 2 paired seeds)"
    if not (math.isfinite(c.low) and math.isfinite(c.high)):
        return "no test (no interval)"
    within = margin is not None and -margin < c.low and c.high < margin
    if c.low > 0 or c.high < 0:
        higher = c.mean_diff > 0
        word = "better" if higher == (mode == "max") else "worse"
        return f"{word}, within ±{margin_text or f'{margin:g}'}" if within else word
    if within:
        return equivalent_words(margin_text or f"{margin:g}")
    if c.low == c.high:  # every difference 0: the two cells scored the same on every seed
        return "no test (identical differences)"
    return "inconclusive"


# --------------------------------------------------------------------------- what the procedure assumes

# The intervals assume roughly normal paired differences. Heavy symmetric tails only make them
# conservative; skew does not: a seed that now and then collapses (left skew, mean 0) leaves
# 3-6 seeds that look like a clear gain when no collapse happens to be among them, and no
# procedure can see a collapse that is not in its data (docs/conclusions.md has the rates). What
# can be seen is flagged: a seed far from the others, by the Bonferroni outlier test on
# externally studentized differences (exact under normality: t with n - 2 df, Cook & Weisberg
# 1982, "Residuals and Influence in Regression", 2.2.1).
OUTLIER_ALPHA = 0.01


def outlier_test(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row of `values` (NaN: no value): the Bonferroni-adjusted p of its most outlying value
    (1 where fewer than 3 values, or all equal) and that value's column. Vectorised: the
    simulation test runs thousands of rows."""
    x = np.atleast_2d(np.asarray(values, dtype=float))
    finite = np.isfinite(x)
    n = finite.sum(axis=1)
    mean = np.where(finite, x, 0.0).sum(axis=1) / np.maximum(n, 1)
    d = np.where(finite, x - mean[:, None], 0.0)
    total = (d ** 2).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        # Leaving value i out: its distance to the others' mean is d_i n / (n - 1), their sum of
        # squares total - d_i^2 n / (n - 1), with n - 2 degrees of freedom.
        share = (n / np.maximum(n - 1, 1))[:, None]
        rest = np.maximum(total[:, None] - d ** 2 * share, 0.0) / np.maximum(n - 2, 1)[:, None]
        t = d * share / np.sqrt(rest * (1 + 1 / np.maximum(n - 1, 1))[:, None])
        p = 2 * special.stdtr(np.maximum(n - 2, 1)[:, None], -np.abs(t))
    p = np.where(finite & (d != 0) & (n >= 3)[:, None], p, 1.0)  # 0 / 0 (the others all equal it): not an outlier
    col = np.argmin(p, axis=1)
    return np.minimum(1.0, n * p[np.arange(len(p)), col]), col


def shape_note(metric: str, diffs: dict[int, float]) -> str:
    """One line beside a verdict when a seed's paired difference lies far from the others (the
    outlier test at OUTLIER_ALPHA), else "": the interval assumes roughly normal differences."""
    seeds = [s for s, v in diffs.items() if math.isfinite(v)]
    if len(seeds) < 3:
        return ""
    (p,), (i,) = outlier_test(np.array([[diffs[s] for s in seeds]]))
    if p >= OUTLIER_ALPHA:
        return ""
    unit = points_suffix(metric)
    return (f"Note: seed {seeds[i]} ({fmt_points(metric, diffs[seeds[i]])}{unit}) lies far from the other seeds "
            f"(outlier test p = {p:.2g}); the interval assumes roughly normal differences.")
