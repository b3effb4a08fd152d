"""Metric-learning losses, pair-based and proxy-based, with EE / SEE expansion as strategies.

``build_loss(cfg.loss, num_classes=..., embedding_dim=..., expansion=cfg.expansion)`` is how the
trainer gets its loss (``build_loss("triplet", margin=0.1)`` works too). Each loss is registered
in `dml_core.params.losses` -- its name, its parameters (checked when a config is loaded, without
building anything) and its class here, imported when first built.

=================  ======  ==================================================
name               family  paper
=================  ======  ==================================================
contrastive        pair    Hadsell et al., CVPR 2006
triplet            pair    Weinberger & Saul 2009; FaceNet 2015; Hermans 2017
hphn_triplet       pair    Ko & Gu (EE), CVPR 2020
lifted_structure   pair    Song et al., CVPR 2016
npair              pair    Sohn, NeurIPS 2016
multi_similarity   pair    Wang et al., CVPR 2019
proxy_anchor       proxy   Kim et al., CVPR 2020
proxy_nca          proxy   Movshovitz-Attias et al., ICCV 2017
=================  ======  ==================================================
"""
from __future__ import annotations

from typing import Any, Optional, Union

from pydantic import ValidationError

from dml_core.errors import format_validation_error
from dml_core.expansion.strategy import build_strategy
from dml_core.losses.base import (
    BaseMetricLoss,
    ExpansionSpec,
    LossConfigError,
    PairBasedLoss,
    ProxyBasedLoss,
)
from dml_core.params import SECTIONS
from dml_core.params.expansions import ExpansionConfig
from dml_core.params.losses import LOSSES, LossConfig

__all__ = [
    "LOSSES",
    "BaseMetricLoss",
    "LossConfigError",
    "PairBasedLoss",
    "ProxyBasedLoss",
    "build_loss",
    "loss_params",
]

# Filled in by build_loss / the trainer, never by the `loss:` config block.
_RESERVED = {"num_classes": "the data and model config", "embedding_dim": "the data and model config",
             "expansion": "the expansion: block"}


def _parse(section: str, raw: dict[str, Any]) -> Any:
    try:
        return SECTIONS[section].adapter().validate_python(raw)
    except ValidationError as e:
        raise LossConfigError(format_validation_error(e, root=(section,), unions=SECTIONS)) from None


def loss_params(name: str, **params: Any) -> LossConfig:
    """The validated parameter model of loss ``name`` (one-line `LossConfigError` otherwise)."""
    for key, source in _RESERVED.items():
        if key in params:
            raise LossConfigError(f"loss.{key}: not a loss parameter; it comes from {source}")
    return _parse("loss", {"name": name, **params})


def build_loss(
    name: Union[str, LossConfig],
    *,
    num_classes: Optional[int] = None,
    embedding_dim: Optional[int] = None,
    expansion: ExpansionSpec = None,
    **params: Any,
) -> BaseMetricLoss:
    """The loss ``name`` (or a validated `LossConfig`) with the given expansion.

    ``num_classes``/``embedding_dim`` size a proxy loss's proxies; ``embedding_dim`` also
    checks SEE's dimension. ``expansion`` is the `expansion:` block (an `ExpansionConfig`, a
    dict, or None for none). Raises `LossConfigError` (a ValueError) naming the field.
    """
    cfg = name if isinstance(name, LossConfig) else loss_params(name, **params)
    exp = expansion if isinstance(expansion, ExpansionConfig) else _parse("expansion", dict(expansion or {}))
    try:
        exp.check(cfg, embedding_dim)
    except ValueError as e:
        raise LossConfigError(str(e)) from None
    cls = LOSSES.builder(cfg.component)
    strategy = build_strategy(exp)
    if issubclass(cls, ProxyBasedLoss):
        if num_classes is None or embedding_dim is None:
            raise LossConfigError(f"loss.name: {cfg.name} is proxy-based; build_loss needs num_classes and embedding_dim")
        return cls(cfg, strategy, num_classes=num_classes, embedding_dim=embedding_dim)
    return cls(cfg, strategy)
