"""`sweep.stats.verdict`: every claim the interval supports is in the words (issue 25, item 7)."""
from __future__ import annotations

import math

import pytest

from sweep.stats import PairedComparison, verdict


def comparison(low: float, high: float) -> PairedComparison:
    return PairedComparison([0, 1, 2], (low + high) / 2, low, high, math.nan)


@pytest.mark.parametrize(("low", "high", "mode", "margin", "words"), [
    # a clear difference that is also inside the margin: both are true, both are said
    (0.1, 0.3, "max", 0.5, "better, within ±0.5"),
    (-0.3, -0.1, "max", 0.5, "worse, within ±0.5"),
    (0.1, 0.3, "min", 0.5, "worse, within ±0.5"),  # a higher loss is worse
    # an interval containing 0 and inside the margin: equivalence alone
    (-0.1, 0.3, "max", 0.5, "equivalent within ±0.5"),
    (0.0, 0.0, "max", 0.5, "equivalent within ±0.5"),  # identical on every seed
    # past the margin: no equivalence claim
    (0.1, 0.7, "max", 0.5, "better"),
    (-0.7, 0.3, "max", 0.5, "inconclusive"),
    # without a margin, as before
    (0.1, 0.3, "max", None, "better"),
    (-0.1, 0.3, "max", None, "inconclusive"),
])
def test_verdict_says_every_true_claim(low: float, high: float, mode: str, margin: float | None, words: str) -> None:
    assert verdict(comparison(low, high), mode, margin=margin) == words


def test_margin_text_is_used_in_both_wordings() -> None:
    assert verdict(comparison(0.001, 0.003), "max", margin=0.005, margin_text="0.5 points") == "better, within ±0.5 points"
    assert verdict(comparison(-0.001, 0.003), "max", margin=0.005, margin_text="0.5 points") == "equivalent within ±0.5 points"
