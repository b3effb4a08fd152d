"""Hard-positive hard-negative (HPHN) triplet loss, the reference loss of Embedding Expansion.

Ko & Gu, "Embedding Expansion", CVPR 2020 (after Hermans et al.'s batch-hard triplet, 2017).
Per anchor: d_ap = its farthest positive, d_an = its closest negative (Euclidean, squared
distance clipped at 1e-12), loss = mean (or, `reduction: sum`, the sum) over anchors of max(0, d_ap - d_an + margin), or
softplus(d_ap - d_an + margin) with ``soft_margin``. The reference run uses margin 1e-5.

Differs from `triplet` with ``mining=batch_hard`` only in the reduction (mean over all
anchors here, over non-zero triplets there) and the soft-margin option. With EE, d_an is the
smallest distance between the anchor's segment {e_i, s_i^1..s_i^n} and any other-class point.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from dml_core.losses.base import PairBasedLoss, zero_loss
from dml_core.losses.pairs import hardest_positive_negative
from dml_core.params.losses import HPHNTripletParams


class HPHNTripletLoss(PairBasedLoss):
    metric = "distance"

    params: HPHNTripletParams

    def per_anchor(self, matrix: Tensor, pos_mask: Tensor, neg_mask: Tensor) -> Tensor:
        """The loss of each anchor that has a positive and a negative in the batch."""
        d_ap, d_an, valid = hardest_positive_negative(matrix, pos_mask, neg_mask)
        violation = d_ap[valid] - d_an[valid] + self.params.margin
        return F.softplus(violation) if self.params.soft_margin else F.relu(violation)

    def pair_loss(self, matrix: Tensor, pos_mask: Tensor, neg_mask: Tensor) -> Tensor:
        losses = self.per_anchor(matrix, pos_mask, neg_mask)
        return self.reduce_anchors(losses) if losses.numel() else zero_loss(matrix)
