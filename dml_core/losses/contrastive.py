"""Contrastive loss: Hadsell, Chopra & LeCun, "Dimensionality Reduction by Learning an
Invariant Mapping", CVPR 2006.

Positive pairs are pulled within ``pos_margin``, negative pairs pushed beyond ``neg_margin``
(Euclidean distance, not squared). Each of the two terms is averaged over its pairs with a
non-zero loss, then the terms are added -- the convention of pytorch-metric-learning's
`ContrastiveLoss`, which the tests cross-check.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from dml_core.losses.base import PairBasedLoss
from dml_core.losses.pairs import mean_of_positive
from dml_core.params.losses import ContrastiveParams


class ContrastiveLoss(PairBasedLoss):
    metric = "distance"

    params: ContrastiveParams

    def pair_loss(self, matrix: Tensor, pos_mask: Tensor, neg_mask: Tensor) -> Tensor:
        pos = F.relu(matrix - self.params.pos_margin)[pos_mask]
        neg = F.relu(self.params.neg_margin - matrix)[neg_mask]
        return mean_of_positive(pos) + mean_of_positive(neg)
