"""Expansion strategies: what a loss calls to add synthetic embeddings to its batch.

A strategy is built from its parameter model (`dml_core.params.expansions`, where each is
registered with its name) and offers the
hooks the two loss families need; the losses call them without knowing which strategy runs:

- pair-based losses: `extend_pair_batch` may append synthetic rows labelled with their class
  (SEE around batch centroids; this project's extension), and `rewrite_pair_matrix` may
  replace entries of the B x B matrix (EE's hard negative pair mining);
- proxy-based losses: `proxy_term` may return an extra term (SEE: ``lam * proxy_loss(points)``).

The defaults do nothing, so `none` is the base class itself.
"""
from __future__ import annotations

from typing import Optional, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

from dml_core.expansion.ee import Metric, hard_negative_pair_mining
from dml_core.expansion.see import class_centroids, expand_around_centers, see_threshold
from dml_core.params.expansions import EXPANSIONS, EEParams, ExpansionConfig, SEEParams


class LossState(Protocol):
    """What a strategy reads of the loss calling it (`dml_core.losses.base`, which imports this
    module): the epoch, for SEE's schedule."""

    epoch: int
    total_epochs: int


class ProxyLoss(LossState, Protocol):
    """A proxy-based loss, as SEE's extra term uses it."""

    proxies: Tensor

    def proxy_loss(self, embeddings: Tensor, labels: Tensor) -> Tensor: ...


class ExpansionStrategy:
    """No expansion: every hook leaves the batch as it is."""

    def __init__(self, params: ExpansionConfig) -> None:
        self.params = params

    @property
    def name(self) -> str:
        return self.params.name

    def extend_pair_batch(self, loss: LossState, embeddings: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """Rows to add to a pair-based loss's batch, before its matrix is computed."""
        return embeddings, labels

    def rewrite_pair_matrix(self, embeddings: Tensor, labels: Tensor, matrix: Tensor, metric: Metric) -> Tensor:
        """The matrix a pair-based loss sees, given the plain one."""
        return matrix

    def proxy_term(self, loss: ProxyLoss, embeddings: Tensor, labels: Tensor) -> Optional[Tensor]:
        """An extra term added to a proxy-based loss, or None."""
        return None


class EmbeddingExpansion(ExpansionStrategy):
    """Ko & Gu 2020: each negative entry becomes the hardest pair of the two rows' augmented sets."""

    params: EEParams

    def rewrite_pair_matrix(self, embeddings: Tensor, labels: Tensor, matrix: Tensor, metric: Metric) -> Tensor:
        p = self.params
        return hard_negative_pair_mining(embeddings, labels, matrix, n_inner_pts=p.n_inner_pts, l2_norm=p.l2_norm, metric=metric,
                                         scope=p.mining_scope)


class SphericalEmbeddingExpansion(ExpansionStrategy):
    """Le & Woo 2024: synthetic points on a sphere cap around the class proxy (or batch centroid)."""

    params: SEEParams

    def points(self, loss: LossState, embeddings: Tensor, labels: Tensor, centers: Tensor) -> tuple[Tensor, Tensor]:
        """SEE synthetic points for the loss's epoch threshold (detached per `detach`)."""
        p = self.params
        z = F.normalize(embeddings, dim=-1)
        if p.detach:
            z, centers = z.detach(), centers.detach()
        threshold = see_threshold(
            loss.epoch, loss.total_epochs, p.threshold_type, p.threshold_max, p.threshold_min, p.threshold_lower_bound,
        )
        return expand_around_centers(z, centers, labels, p.n_expan, threshold, p.threshold_type)

    def extend_pair_batch(self, loss: LossState, embeddings: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        # The loss runs on the enlarged batch; `lam` does not apply (no separate synthetic term).
        centers = class_centroids(F.normalize(embeddings, dim=-1), labels)
        points, point_labels = self.points(loss, embeddings, labels, centers)
        return torch.cat([embeddings, points]), torch.cat([labels, point_labels])

    def proxy_term(self, loss: ProxyLoss, embeddings: Tensor, labels: Tensor) -> Optional[Tensor]:
        p = self.params
        if p.lam == 0:
            return None
        if p.resolved_center("proxy") == "proxy":
            centers = F.normalize(loss.proxies, dim=-1)[labels]
        else:
            centers = class_centroids(F.normalize(embeddings, dim=-1), labels)
        points, point_labels = self.points(loss, embeddings, labels, centers)
        if points.shape[0] == 0:
            return None
        return p.lam * loss.proxy_loss(points, point_labels)


def build_strategy(params: ExpansionConfig | dict | None) -> ExpansionStrategy:
    """The strategy for an `expansion:` block (params, a dict, or None for no expansion)."""
    if not isinstance(params, ExpansionConfig):
        params = ExpansionConfig.of(**dict(params or {}))
    return EXPANSIONS.build(params)


__all__ = ["EmbeddingExpansion", "ExpansionStrategy", "SphericalEmbeddingExpansion",
           "build_strategy"]
