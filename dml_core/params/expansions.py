"""Expansion parameters: what `expansion:` accepts, per strategy (`expansion.name`).

``none``; ``ee`` (Ko & Gu, CVPR 2020: `n_inner_pts` interior points per positive pair, pair
losses only); ``see`` (Le & Woo, PAKDD 2024: `n_expan` synthetic points per expanded sample,
around proxies or batch centroids). The two counts used to share the name `n_inner_pts`; SEE's
is now `n_expan`, the name of its paper and reference code, and the old key under `see` fails
with a message naming the new one. `check` holds the compatibility rules between a strategy,
the loss, the embedding dimension and K, shared by config loading and `build_loss`.
"""
from __future__ import annotations

from typing import ClassVar, Literal, Optional

from pydantic import Field

from dml_core.params.losses import LossConfig
from dml_core.registry import ComponentParams, Kind

EXPANSIONS: Kind = Kind("expansion", section="expansion", discriminator="name")


class ExpansionConfig(ComponentParams):
    kind: ClassVar[Kind] = EXPANSIONS
    # The field whose 0 adds no synthetic point (the loss alone), if the strategy has one: labels
    # read `MS` for EE with 0 points, and an ablation over it has its baseline at 0.
    count_field: ClassVar[Optional[str]] = None
    name: str

    def check(self, loss: LossConfig, embedding_dim: Optional[int] = None, samples_per_class: Optional[int] = None) -> None:
        """Raise `ValueError` (one line naming the field) if this expansion cannot run with these."""


@EXPANSIONS.register("none", builder="dml_core.expansion.strategy:ExpansionStrategy", default=True)
class NoExpansion(ExpansionConfig):
    pass


@EXPANSIONS.register("ee", builder="dml_core.expansion.strategy:EmbeddingExpansion")
class EEParams(ExpansionConfig):
    """Embedding Expansion: hard negative pair mining over interpolated points."""

    short_name: ClassVar[str] = "EE"
    count_field: ClassVar[Optional[str]] = "n_inner_pts"
    n_inner_pts: int = Field(2, ge=0, description="interior points per positive pair")
    l2_norm: bool = True
    # Which points of a positive pair stand for row i in hard negative pair mining:
    # `anchor` = {e_i, s^1..s^n}, the anchor and the synthetic points (the reference code's
    # HPHN-triplet); `pair` = {e_i, e_partner(i), s^1..s^n}, the whole pair set {x_i, x_j,
    # synthetic} of the paper's text.
    mining_scope: Literal["anchor", "pair"] = "anchor"

    def check(self, loss: LossConfig, embedding_dim: Optional[int] = None, samples_per_class: Optional[int] = None) -> None:
        if loss.family != "pair":
            raise ValueError(f"expansion.name: {self.name!r} needs a pair-based loss; {loss.name} is proxy-based")
        if samples_per_class is not None and samples_per_class % 2:
            raise ValueError(
                f"data.batch.samples_per_class: EE pairs rows (2m, 2m+1) of each class, so K must be even (got {samples_per_class})"
            )


@EXPANSIONS.register("see", builder="dml_core.expansion.strategy:SphericalEmbeddingExpansion")
class SEEParams(ExpansionConfig):
    """Spherical Embedding Expansion: points on a sphere cap around the class centre."""

    short_name: ClassVar[str] = "SEE"
    count_field: ClassVar[Optional[str]] = "n_expan"
    renamed: ClassVar[dict[str, str]] = {
        "n_inner_pts": "SEE's synthetic points per sample are expansion.n_expan (n_inner_pts is EE's points per pair)",
    }
    n_expan: int = Field(2, ge=0, description="synthetic points per expanded sample")
    lam: float = Field(0.2, ge=0)
    threshold_type: Literal[0, 1] = 1
    threshold_max: float = 0.4
    threshold_min: float = 0.04
    threshold_lower_bound: float = 0.0
    detach: bool = True
    center: Literal["auto", "proxy", "centroid"] = "auto"

    def resolved_center(self, loss: LossConfig | str) -> Literal["proxy", "centroid"]:
        family = loss if isinstance(loss, str) else loss.family
        if self.center == "auto":
            return "proxy" if family == "proxy" else "centroid"
        return self.center

    def check(self, loss: LossConfig, embedding_dim: Optional[int] = None, samples_per_class: Optional[int] = None) -> None:
        if self.resolved_center(loss) == "proxy" and loss.family != "proxy":
            raise ValueError(
                f"expansion.center: 'proxy' needs a proxy-based loss; {loss.name} is pair-based (use 'centroid' or 'auto')"
            )
        if loss.row_pairs and self.n_expan % 2:
            # Each sample's synthetic rows must form whole (anchor, positive) pairs.
            raise ValueError(f"expansion.n_expan: {loss.name} with SEE needs an even n_expan (got {self.n_expan})")
        if embedding_dim is not None and embedding_dim < self.n_expan + 2:
            # n_expan + 1 simplex points around the centre span n_expan + 1 directions off it.
            raise ValueError(
                f"model.embedding_dim: SEE with n_expan={self.n_expan} needs embedding_dim >= {self.n_expan + 2} (got {embedding_dim})"
            )
