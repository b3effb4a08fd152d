"""Lifted structured loss: Song et al., "Deep Metric Learning via Lifted Structured Feature
Embedding", CVPR 2016 (eq. 4, the smooth upper bound).

For each positive pair (i, j), with Euclidean distances D:

    J_ij = log( sum_{k in N(i)} exp(m - D_ik) + sum_{l in N(j)} exp(m - D_jl) ) + D_ij - pos_margin
    L = 1 / (2 |P|) * sum_{(i, j) in P} max(0, J_ij)^2

with P the unordered positive pairs and m = ``neg_margin`` (the paper's alpha = 1). This is
pytorch-metric-learning's `LiftedStructureLoss`; its `GeneralizedLiftedStructureLoss` is the
per-anchor variant of Hermans et al. (2017), a different loss.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from dml_core.losses.base import PairBasedLoss, zero_loss
from dml_core.losses.pairs import masked_logsumexp
from dml_core.params.losses import LiftedStructureParams


class LiftedStructureLoss(PairBasedLoss):
    metric = "distance"

    params: LiftedStructureParams

    def pair_loss(self, matrix: Tensor, pos_mask: Tensor, neg_mask: Tensor) -> Tensor:
        if not bool(pos_mask.any()) or not bool(neg_mask.any()):
            return zero_loss(matrix)
        # log sum_{k in N(i)} exp(m - D_ik) per row; a pair combines its two rows' terms.
        row_term = masked_logsumexp(self.params.neg_margin - matrix, neg_mask, dim=1)
        j = torch.logaddexp(row_term.unsqueeze(1), row_term.unsqueeze(0)) + matrix - self.params.pos_margin
        # Ordered pairs count each unordered pair twice: mean over them / 2 = 1/(2|P|) sum.
        return (F.relu(j[pos_mask]) ** 2).mean() / 2
