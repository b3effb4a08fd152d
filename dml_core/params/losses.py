"""Loss parameters: what `loss:` accepts, per loss (`loss.name`), and the registration of every
loss (its name, these parameters and its torch class in `dml_core/losses/`).
"""
from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field

from dml_core.registry import Component, ComponentParams, Kind


def check_family(loss: Component) -> None:
    """A loss class's family is its parameters' family (what the config checks rely on)."""
    cls = loss.builder
    if cls.family != loss.params.family:
        raise TypeError(f"{cls.__name__} is {cls.family}-based but {loss.params.__name__}.family is {loss.params.family!r}")


LOSSES: Kind = Kind("loss", section="loss", discriminator="name", check=check_family)


class LossConfig(ComponentParams):
    kind: ClassVar[Kind] = LOSSES
    family: ClassVar[Literal["pair", "proxy"]] = "pair"
    # The loss reads rows (2m, 2m+1) as (anchor, positive) pairs (N-pair): K and any added
    # synthetic rows must come in pairs.
    row_pairs: ClassVar[bool] = False

    name: str

    @property
    def params(self) -> dict[str, Any]:
        """The constructor arguments (every key but `name`)."""
        return {k: v for k, v in self.model_dump().items() if k != "name"}


class AnchorReducedParams(LossConfig):
    """A loss that is one term per anchor, then reduced over the anchors."""

    # `mean` over anchors, or `sum` as EE's MXNet reference back-propagates its per-anchor loss
    # vector (the gradient of the sum; with weight decay 5e-4 this changes the balance of decay
    # and loss gradient by the batch size).
    reduction: Literal["mean", "sum"] = "mean"


@LOSSES.register("contrastive", builder="dml_core.losses.contrastive:ContrastiveLoss")
class ContrastiveParams(LossConfig):
    short_name: ClassVar[str] = "Contrastive"
    pos_margin: float = Field(0.0, ge=0)
    neg_margin: float = Field(1.0, ge=0)


@LOSSES.register("triplet", builder="dml_core.losses.triplet:TripletLoss")
class TripletParams(LossConfig):
    short_name: ClassVar[str] = "Triplet"
    margin: float = Field(0.2, ge=0)
    mining: Literal["batch_all", "batch_hard", "semi_hard"] = "batch_all"


@LOSSES.register("hphn_triplet", builder="dml_core.losses.hphn_triplet:HPHNTripletLoss")
class HPHNTripletParams(AnchorReducedParams):
    short_name: ClassVar[str] = "HPHN"
    margin: float = Field(1e-5, ge=0)
    soft_margin: bool = False


@LOSSES.register("lifted_structure", builder="dml_core.losses.lifted_structure:LiftedStructureLoss")
class LiftedStructureParams(LossConfig):
    short_name: ClassVar[str] = "LS"
    neg_margin: float = 1.0
    pos_margin: float = 0.0


@LOSSES.register("npair", builder="dml_core.losses.npair:NPairLoss")
class NPairParams(AnchorReducedParams):
    short_name: ClassVar[str] = "NPair"
    row_pairs: ClassVar[bool] = True
    l2_reg: float = Field(0.0, ge=0)


@LOSSES.register("multi_similarity", builder="dml_core.losses.multi_similarity:MultiSimilarityLoss", default=True)
class MultiSimilarityParams(AnchorReducedParams):
    short_name: ClassVar[str] = "MS"
    alpha: float = Field(2.0, gt=0)
    beta: float = Field(50.0, gt=0)
    base: float = 0.5
    epsilon: float = Field(0.1, ge=0)


@LOSSES.register("proxy_anchor", builder="dml_core.losses.proxy_anchor:ProxyAnchorLoss")
class ProxyAnchorParams(LossConfig):
    short_name: ClassVar[str] = "PA"
    family: ClassVar[Literal["pair", "proxy"]] = "proxy"
    alpha: float = Field(32.0, gt=0)
    delta: float = 0.1


@LOSSES.register("proxy_nca", builder="dml_core.losses.proxy_nca:ProxyNCALoss")
class ProxyNCAParams(LossConfig):
    short_name: ClassVar[str] = "ProxyNCA"
    family: ClassVar[Literal["pair", "proxy"]] = "proxy"
    softmax_scale: float = Field(1.0, gt=0)
