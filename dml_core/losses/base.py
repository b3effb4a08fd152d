"""Base classes: a metric loss is a pair-based or a proxy-based `nn.Module`.

`PairBasedLoss` subclasses are written as a function of one B x B matrix (Euclidean distance
or dot-product similarity, `metric`) and the positive / negative masks. Expansion plugs in
without the loss knowing:

- EE (Ko & Gu 2020) transforms the matrix: `dml_core.expansion.hard_negative_pair_mining`
  replaces each negative entry by the hardest pair of the two rows' augmented sets;
- SEE around batch centroids (this project's extension; neither paper has it) appends the
  synthetic rows, labelled with their class, to the batch and the loss runs on the enlarged
  batch (``expansion.lam`` does not apply: there is no separate synthetic term).

`ProxyBasedLoss` subclasses own `proxies` (num_classes x embedding_dim) and implement
`proxy_loss(embeddings, labels)`; SEE (Le & Woo 2024) adds ``lam * proxy_loss(synthetic)``.
"""
from __future__ import annotations

import numbers
from abc import ABC, abstractmethod
from typing import Any, ClassVar, Literal, Mapping, Optional, Union

import torch
import torch.nn.functional as F
from pydantic import ValidationError
from torch import Tensor, nn

from dml_core.config import ExpansionConfig
from dml_core.expansion import (
    class_centroids,
    expand_around_centers,
    hard_negative_pair_mining,
    see_threshold,
)
from dml_core.losses.pairs import Metric, label_masks, pairwise_matrix

ExpansionSpec = Union[ExpansionConfig, Mapping[str, Any], None]


class LossConfigError(ValueError):
    """A loss or expansion setting is invalid; the message names the config field."""


def parse_expansion(expansion: ExpansionSpec) -> ExpansionConfig:
    """The `expansion:` block as a validated `ExpansionConfig` (None -> no expansion)."""
    if isinstance(expansion, ExpansionConfig):
        return expansion
    try:
        return ExpansionConfig.model_validate(dict(expansion or {}))
    except ValidationError as e:
        first = e.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        msg = "unknown key" if first["type"] == "extra_forbidden" else first["msg"]
        raise LossConfigError(f"expansion.{field}: {msg}") from None


def check_number(field: str, value: Any, *, ge: Optional[float] = None, gt: Optional[float] = None) -> float:
    """Validate a numeric loss parameter; raise a one-line error naming ``loss.<field>``.

    Numeric strings are accepted because YAML reads ``1e-5`` (no dot) as a string.
    """
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise LossConfigError(f"loss.{field}: expected a number, got {value!r}")
    if ge is not None and value < ge:
        raise LossConfigError(f"loss.{field}: must be >= {ge}, got {value}")
    if gt is not None and value <= gt:
        raise LossConfigError(f"loss.{field}: must be > {gt}, got {value}")
    return float(value)


def check_choice(field: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise LossConfigError(f"loss.{field}: must be one of {list(choices)}, got {value!r}")
    return value


def zero_loss(like: Tensor) -> Tensor:
    """A zero that stays connected to the graph, so backward() works on degenerate batches."""
    return like.sum() * 0.0


class BaseMetricLoss(nn.Module, ABC):
    """``forward(embeddings (B, D), labels (B,)) -> scalar``; labels are 0..num_classes-1."""

    family: ClassVar[Literal["pair", "proxy"]]
    name: ClassVar[str] = "<unregistered>"  # set by `register_loss`
    # Expansion settings every subclass shares; `resolved_center` says where SEE expands.
    expansion: ExpansionConfig

    def __init__(self, expansion: ExpansionSpec = None) -> None:
        super().__init__()
        self.expansion = parse_expansion(expansion)
        self.epoch, self.total_epochs = 0, 1

    def set_epoch(self, epoch: int, total_epochs: int) -> None:
        """Called by the trainer at the start of each (0-based) epoch; SEE schedules on it."""
        self.epoch, self.total_epochs = epoch, total_epochs

    @property
    def see_center(self) -> Literal["proxy", "centroid"]:
        center = self.expansion.center
        if center == "auto":
            return "proxy" if self.family == "proxy" else "centroid"
        return center

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        if embeddings.dim() != 2 or labels.shape != embeddings.shape[:1]:
            raise ValueError(
                f"{self.name}: expected embeddings (B, D) and labels (B,), got "
                f"{tuple(embeddings.shape)} and {tuple(labels.shape)}"
            )
        if embeddings.dtype in (torch.float16, torch.bfloat16):
            embeddings = embeddings.float()  # exp(alpha * s) and friends need float32 range
        return self.expanded_loss(embeddings, labels.long())

    @abstractmethod
    def expanded_loss(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        """The loss, with this module's expansion applied."""

    def _see_points(self, embeddings: Tensor, labels: Tensor, centers: Tensor) -> tuple[Tensor, Tensor]:
        """SEE synthetic points for this epoch's threshold (detached per `expansion.detach`)."""
        cfg = self.expansion
        z = F.normalize(embeddings, dim=-1)
        if cfg.detach:
            z, centers = z.detach(), centers.detach()
        threshold = see_threshold(
            self.epoch, self.total_epochs, cfg.threshold_type, cfg.threshold_max,
            cfg.threshold_min, cfg.threshold_lower_bound,
        )
        return expand_around_centers(z, centers, labels, cfg.n_inner_pts, threshold, cfg.threshold_type)


class PairBasedLoss(BaseMetricLoss):
    """A loss over one B x B matrix of `metric` values and the label masks."""

    family = "pair"
    metric: ClassVar[Metric]

    def __init__(self, expansion: ExpansionSpec = None) -> None:
        super().__init__(expansion)
        if self.expansion.name == "see" and self.see_center == "proxy":
            raise LossConfigError(
                f"expansion.center: 'proxy' needs a proxy-based loss; {self.name} is pair-based "
                "(use 'centroid' or 'auto')"
            )

    def check_batch(self, labels: Tensor) -> None:
        """Hook for losses that need a batch structure (N-pair: row pairs)."""

    @abstractmethod
    def pair_loss(self, matrix: Tensor, pos_mask: Tensor, neg_mask: Tensor) -> Tensor:
        """The loss from the matrix; pos_mask excludes the diagonal."""

    def expanded_loss(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        cfg = self.expansion
        if cfg.name == "see":
            centers = class_centroids(F.normalize(embeddings, dim=-1), labels)
            points, point_labels = self._see_points(embeddings, labels, centers)
            embeddings = torch.cat([embeddings, points])
            labels = torch.cat([labels, point_labels])
        self.check_batch(labels)
        matrix = pairwise_matrix(embeddings, self.metric)
        pos_mask, neg_mask = label_masks(labels)
        if cfg.name == "ee":
            matrix = hard_negative_pair_mining(
                embeddings, labels, matrix, n_inner_pts=cfg.n_inner_pts, l2_norm=cfg.l2_norm, metric=self.metric
            )
        return self.pair_loss(matrix, pos_mask, neg_mask)


class ProxyBasedLoss(BaseMetricLoss):
    """A loss between samples and learnable class proxies (trainer gives them their own lr)."""

    family = "proxy"

    def __init__(self, num_classes: int, embedding_dim: int, expansion: ExpansionSpec = None) -> None:
        super().__init__(expansion)
        if self.expansion.name == "ee":
            raise LossConfigError(f"expansion.name: 'ee' needs a pair-based loss; {self.name} is proxy-based")
        n = self.expansion.n_inner_pts
        if self.expansion.name == "see" and embedding_dim < n + 2:
            raise LossConfigError(
                f"expansion.n_inner_pts: SEE with n_inner_pts={n} needs embedding_dim >= {n + 2} (got {embedding_dim})"
            )
        self.num_classes, self.embedding_dim = num_classes, embedding_dim
        self.proxies = nn.Parameter(torch.empty(num_classes, embedding_dim))
        # Proxy-Anchor's initialisation (and PML's default for its proxy losses).
        nn.init.kaiming_normal_(self.proxies, mode="fan_out")

    @abstractmethod
    def proxy_loss(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        """The loss of a set of samples against all proxies."""

    def expanded_loss(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        if int(labels.max()) >= self.num_classes or int(labels.min()) < 0:
            raise ValueError(
                f"{self.name}: labels must lie in 0..{self.num_classes - 1} (num_classes), "
                f"got {int(labels.min())}..{int(labels.max())}"
            )
        loss = self.proxy_loss(embeddings, labels)
        cfg = self.expansion
        if cfg.name != "see" or cfg.lam == 0:
            return loss
        if self.see_center == "proxy":
            centers = F.normalize(self.proxies, dim=-1)[labels]
        else:
            centers = class_centroids(F.normalize(embeddings, dim=-1), labels)
        points, point_labels = self._see_points(embeddings, labels, centers)
        if points.shape[0] == 0:
            return loss
        return loss + cfg.lam * self.proxy_loss(points, point_labels)
