"""Base classes: a metric loss is a pair-based or a proxy-based `nn.Module`.

`PairBasedLoss` subclasses are written as a function of one B x B matrix (Euclidean distance
or dot-product similarity, `metric`) and the positive / negative masks. `ProxyBasedLoss`
subclasses own `proxies` (num_classes x embedding_dim) and implement
`proxy_loss(embeddings, labels)`. Expansion plugs in through the hooks of an
`ExpansionStrategy` (`dml_core.expansion.strategy`), never by name: pair losses let it add rows
and rewrite the matrix, proxy losses add its extra term.

A loss is built from its validated parameter model (`dml_core.params.losses`); `build_loss`
is the way in.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar, Literal, Mapping, Union

import torch
from torch import Tensor, nn

from dml_core.expansion.strategy import ExpansionStrategy
from dml_core.losses.pairs import Metric, label_masks, pairwise_matrix
from dml_core.params.expansions import ExpansionConfig
from dml_core.params.losses import LossConfig

ExpansionSpec = Union[ExpansionConfig, Mapping[str, Any], None]


class LossConfigError(ValueError):
    """A loss or expansion setting is invalid; the message names the config field."""


def zero_loss(like: Tensor) -> Tensor:
    """A zero that stays connected to the graph, so backward() works on degenerate batches."""
    return like.sum() * 0.0


class BaseMetricLoss(nn.Module, ABC):
    """``forward(embeddings (B, D), labels (B,)) -> scalar``; labels are 0..num_classes-1."""

    family: ClassVar[Literal["pair", "proxy"]]

    def __init__(self, params: LossConfig, expansion: ExpansionStrategy) -> None:
        super().__init__()
        self.params = params
        self.expansion = expansion
        self.epoch, self.total_epochs = 0, 1

    @property
    def name(self) -> str:
        """The registered name (``loss.name``)."""
        return self.params.name

    def set_epoch(self, epoch: int, total_epochs: int) -> None:
        """Called by the trainer at the start of each (0-based) epoch; SEE schedules on it."""
        self.epoch, self.total_epochs = epoch, total_epochs

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


class PairBasedLoss(BaseMetricLoss):
    """A loss over one B x B matrix of `metric` values and the label masks."""

    family = "pair"
    metric: ClassVar[Metric]

    def check_batch(self, labels: Tensor) -> None:
        """Hook for losses that need a batch structure (N-pair: row pairs)."""

    @abstractmethod
    def pair_loss(self, matrix: Tensor, pos_mask: Tensor, neg_mask: Tensor) -> Tensor:
        """The loss from the matrix; pos_mask excludes the diagonal."""

    def reduce_anchors(self, per_anchor: Tensor) -> Tensor:
        """The per-anchor losses reduced by `loss.reduction` (mean, or EE's reference sum);
        a graph-connected 0 when no anchor has a term."""
        if not per_anchor.numel():
            return zero_loss(per_anchor)
        return per_anchor.sum() if getattr(self.params, "reduction", "mean") == "sum" else per_anchor.mean()

    def expanded_loss(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        embeddings, labels = self.expansion.extend_pair_batch(self, embeddings, labels)
        self.check_batch(labels)
        matrix = pairwise_matrix(embeddings, self.metric)
        pos_mask, neg_mask = label_masks(labels)
        matrix = self.expansion.rewrite_pair_matrix(embeddings, labels, matrix, self.metric)
        return self.pair_loss(matrix, pos_mask, neg_mask)


class ProxyBasedLoss(BaseMetricLoss):
    """A loss between samples and learnable class proxies (trainer gives them their own lr)."""

    family = "proxy"

    def __init__(self, params: LossConfig, expansion: ExpansionStrategy, num_classes: int, embedding_dim: int) -> None:
        super().__init__(params, expansion)
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
        extra = self.expansion.proxy_term(self, embeddings, labels)
        return loss if extra is None else loss + extra


__all__ = ["BaseMetricLoss", "ExpansionSpec", "LossConfigError", "PairBasedLoss", "ProxyBasedLoss",
           "zero_loss"]
