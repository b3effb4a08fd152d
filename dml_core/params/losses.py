"""Loss parameters: what `loss:` accepts, per loss (`loss.name`). See `dml_core.losses` for the
losses themselves; each registers its torch class against the parameter model here.
"""
from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field

from dml_core.registry import ComponentParams, ParamRegistry

LOSS_PARAMS: ParamRegistry = ParamRegistry("loss", section="loss", discriminator="name", default="multi_similarity")


class LossConfig(ComponentParams):
    registry: ClassVar[ParamRegistry] = LOSS_PARAMS
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


@LOSS_PARAMS.register()
class ContrastiveParams(LossConfig):
    name: Literal["contrastive"] = "contrastive"
    pos_margin: float = Field(0.0, ge=0)
    neg_margin: float = Field(1.0, ge=0)


@LOSS_PARAMS.register()
class TripletParams(LossConfig):
    name: Literal["triplet"] = "triplet"
    margin: float = Field(0.2, ge=0)
    mining: Literal["batch_all", "batch_hard", "semi_hard"] = "batch_all"


@LOSS_PARAMS.register()
class HPHNTripletParams(AnchorReducedParams):
    name: Literal["hphn_triplet"] = "hphn_triplet"
    margin: float = Field(1e-5, ge=0)
    soft_margin: bool = False


@LOSS_PARAMS.register()
class LiftedStructureParams(LossConfig):
    name: Literal["lifted_structure"] = "lifted_structure"
    neg_margin: float = 1.0
    pos_margin: float = 0.0


@LOSS_PARAMS.register()
class NPairParams(AnchorReducedParams):
    row_pairs: ClassVar[bool] = True
    name: Literal["npair"] = "npair"
    l2_reg: float = Field(0.0, ge=0)


@LOSS_PARAMS.register()
class MultiSimilarityParams(AnchorReducedParams):
    name: Literal["multi_similarity"] = "multi_similarity"
    alpha: float = Field(2.0, gt=0)
    beta: float = Field(50.0, gt=0)
    base: float = 0.5
    epsilon: float = Field(0.1, ge=0)


@LOSS_PARAMS.register()
class ProxyAnchorParams(LossConfig):
    family: ClassVar[Literal["pair", "proxy"]] = "proxy"
    name: Literal["proxy_anchor"] = "proxy_anchor"
    alpha: float = Field(32.0, gt=0)
    delta: float = 0.1


@LOSS_PARAMS.register()
class ProxyNCAParams(LossConfig):
    family: ClassVar[Literal["pair", "proxy"]] = "proxy"
    name: Literal["proxy_nca"] = "proxy_nca"
    softmax_scale: float = Field(1.0, gt=0)
