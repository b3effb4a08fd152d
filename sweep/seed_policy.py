"""The typed `sweep.seeds`: a list of seeds, or a seed policy (start, max, step, stop rule,
spending) that `sweep.sequential` runs in rounds."""
from __future__ import annotations

from typing import Annotated, Any, Literal, Optional, Union

from pydantic import Discriminator, Field, Tag, model_validator

from dml_core.registry import Strict


class StopRule(Strict):
    """When a seed policy stops adding seeds to a comparison (any rule that is set suffices)."""

    # Every comparison with its baseline decided: better, worse, or (with
    # `sweep.equivalence_margin`) equivalent within the margin.
    decided: bool = False
    # The comparison's interval (a cell's own, for a cell compared with nothing) is at most this
    # wide on each side, in points of the metric (percentage points for recall, MAP@R, NMI).
    ci_half_width: Optional[float] = Field(None, gt=0, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, v: Any) -> Any:
        if isinstance(v, str):
            if v != "decided":
                raise ValueError(f"{v!r}: write `decided` or a mapping like {{ci_half_width: 1.0}}")
            return {"decided": True}
        return v

    @model_validator(mode="after")
    def _some_rule(self) -> "StopRule":
        if not self.decided and self.ci_half_width is None:
            raise ValueError("set `decided` or `ci_half_width` (or write `until: decided`)")
        return self


MAX_POLICY_SEEDS = 10_000


class SeedPolicy(Strict):
    """Seeds added in rounds until the answer is clear (`sweep.sequential`): `start` seeds per
    cell, then `step` more per round where a comparison is still open, at most `max`. The seeds
    are 0, 1, ..., max - 1, the same in every cell (paired)."""

    start: int = Field(3, ge=2, description="seeds of the first round (a t-interval needs 2)")
    # The plan lists every seed a policy may run (cells x max trials): a max of 2**33 was a
    # MemoryError in list(range(max)) instead of a message.
    max: int = Field(ge=2, le=MAX_POLICY_SEEDS)
    step: int = Field(1, ge=1, description="seeds added per round")
    until: StopRule
    # How the error rate alpha is spread over the planned looks (Lan & DeMets 1983 spending
    # functions): pocock spends it evenly-ish (early stops come easier), obrien_fleming keeps
    # most for the last looks, bonferroni splits it equally.
    spending: Literal["pocock", "obrien_fleming", "bonferroni"] = "pocock"

    @model_validator(mode="after")
    def _range(self) -> "SeedPolicy":
        if self.max < self.start:
            raise ValueError(f"max ({self.max}) is below start ({self.start})")
        return self

    @property
    def seeds(self) -> list[int]:
        return list(range(self.max))

    @property
    def looks(self) -> list[int]:
        """Seeds per cell at each planned look: start, start + step, ..., max."""
        return [*range(self.start, self.max, self.step), self.max]


# A mapping is a policy, anything else a list: errors then name the policy's own field
# (`sweep.seeds.max`), not both readings of a union.
SeedsField = Annotated[
    # numpy, torch and Python's random take seeds 0 .. 2**32 - 1 (others crashed every trial)
    Union[Annotated[list[Annotated[int, Field(ge=0, lt=2**32)]], Field(min_length=1), Tag("list")],
          Annotated[SeedPolicy, Tag("policy")]],
    Discriminator(lambda v: "policy" if isinstance(v, (dict, SeedPolicy)) else "list"),
]
