"""Metric-learning losses, pair-based and proxy-based, with EE / SEE expansion built in.

``build_loss(name, num_classes=..., embedding_dim=..., expansion=cfg.expansion.as_dict(),
**cfg.loss.params)`` is how the trainer gets its loss; ``check_loss_config`` is the same check
without building, run when a config file is loaded.

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

import inspect
from typing import Any, Callable, Mapping, Optional

from dml_core.losses import (  # noqa: F401  (importing registers the losses)
    contrastive,
    hphn_triplet,
    lifted_structure,
    multi_similarity,
    npair,
    proxy_anchor,
    proxy_nca,
    triplet,
)
from dml_core.losses.base import (
    BaseMetricLoss,
    ExpansionSpec,
    LossConfigError,
    PairBasedLoss,
    ProxyBasedLoss,
    parse_expansion,
)
from dml_core.losses.registry import LOSSES
from dml_core.registry import UnknownNameError, check_kwargs

__all__ = [
    "LOSSES",
    "BaseMetricLoss",
    "LossConfigError",
    "PairBasedLoss",
    "ProxyBasedLoss",
    "build_loss",
    "check_loss_config",
]

# Filled in by build_loss / the trainer, never by the `loss:` config block.
_RESERVED = ("num_classes", "embedding_dim", "expansion")


def _loss_class(name: str) -> type[BaseMetricLoss]:
    try:
        return LOSSES.get(name)
    except UnknownNameError as e:
        raise LossConfigError(f"loss.name: {e}") from None


def _check_params(cls: type[BaseMetricLoss], params: Mapping[str, Any]) -> None:
    for key in _RESERVED:
        if key in params:
            source = "the expansion: block" if key == "expansion" else "the data and model config"
            raise LossConfigError(f"loss.{key}: not a loss parameter; it comes from {source}")
    # Check against the constructor's user-facing parameters only, so the "accepted" list in
    # the error does not advertise the reserved ones.
    signature = inspect.signature(cls.__init__)
    user = [p for n, p in signature.parameters.items() if n not in _RESERVED]
    user_facing: Callable[..., None] = lambda **kwargs: None  # noqa: E731
    user_facing.__signature__ = signature.replace(parameters=user)  # type: ignore[attr-defined]
    check_kwargs(user_facing, dict(params), "loss")


def build_loss(
    name: str,
    *,
    num_classes: Optional[int] = None,
    embedding_dim: Optional[int] = None,
    expansion: ExpansionSpec = None,
    **params: Any,
) -> BaseMetricLoss:
    """The loss registered as ``name``; ``num_classes``/``embedding_dim`` reach proxy losses only.

    ``expansion`` is the `expansion:` config block as a dict (or None / ``{"name": "none"}``).
    Raises `LossConfigError` (a ValueError) with a one-line message naming the field.
    """
    cls = _loss_class(name)
    _check_params(cls, params)
    if issubclass(cls, ProxyBasedLoss):
        if num_classes is None or embedding_dim is None:
            raise LossConfigError(f"loss.name: {name} is proxy-based; build_loss needs num_classes and embedding_dim")
        return cls(num_classes=num_classes, embedding_dim=embedding_dim, expansion=expansion, **params)
    return cls(expansion=expansion, **params)


def check_loss_config(name: str, params: Mapping[str, Any], expansion: ExpansionSpec = None) -> None:
    """Validate a `loss:` block and its `expansion:` block without training anything.

    Unknown loss or parameter, bad parameter values, and an expansion the loss cannot take
    (EE on a proxy loss, SEE around proxies for a pair loss, ...) raise a one-line
    `LossConfigError` such as ``loss.name: unknown loss 'tripplet' (did you mean 'triplet'?)``.
    """
    cls = _loss_class(name)
    _check_params(cls, params)
    settings = parse_expansion(expansion)
    if issubclass(cls, ProxyBasedLoss):
        # Tiny stand-in sizes: the real ones come from the data and model at build time.
        build_loss(name, num_classes=2, embedding_dim=settings.n_inner_pts + 2, expansion=settings, **params)
    else:
        build_loss(name, expansion=settings, **params)
