"""Triplet margin loss with in-batch mining.

Weinberger & Saul, "Distance Metric Learning for Large Margin Nearest Neighbor
Classification", JMLR 2009; Schroff et al., "FaceNet", CVPR 2015 (semi-hard negatives);
Hermans et al., "In Defense of the Triplet Loss for Person Re-Identification", 2017 (batch-all,
batch-hard).

Per triplet (a, p, n): max(0, d_ap - d_an + margin), Euclidean distances.
- ``batch_all``: every valid triplet in the batch;
- ``batch_hard``: per anchor, its farthest positive and closest negative;
- ``semi_hard``: every triplet with d_ap < d_an <= d_ap + margin (negatives farther than the
  positive but inside the margin).
The result is the mean over triplets with a non-zero loss, as pytorch-metric-learning's
`TripletMarginLoss` reduces (with `TripletMarginMiner` / `BatchHardMiner` for the last two).
batch_all and semi_hard cost O(B^3) time; memory is bounded by blocks of anchors.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from dml_core.losses.base import PairBasedLoss
from dml_core.losses.pairs import hardest_positive_negative, mean_of_positive
from dml_core.params.losses import TripletParams

_CUBE_BUDGET = 2**24  # numbers in one block of the triplet cube (64 MiB of float32)


class TripletLoss(PairBasedLoss):
    metric = "distance"

    params: TripletParams

    def pair_loss(self, matrix: Tensor, pos_mask: Tensor, neg_mask: Tensor) -> Tensor:
        if self.params.mining == "batch_hard":
            d_ap, d_an, valid = hardest_positive_negative(matrix, pos_mask, neg_mask)
            return mean_of_positive(F.relu(d_ap[valid] - d_an[valid] + self.params.margin))
        # The (anchor, positive, negative) cube is B^3; build it a block of anchors at a time
        # so an SEE-enlarged batch (~1000 rows) stays within _CUBE_BUDGET numbers per block.
        total, active = matrix.new_zeros(()), matrix.new_zeros((), dtype=torch.long)
        block = max(1, _CUBE_BUDGET // matrix.shape[0] ** 2)
        for rows in torch.split(torch.arange(matrix.shape[0], device=matrix.device), block):
            d = matrix[rows]
            gap = d.unsqueeze(1) - d.unsqueeze(2)  # [a, p, n] = d_an - d_ap
            valid = pos_mask[rows].unsqueeze(2) & neg_mask[rows].unsqueeze(1)
            if self.params.mining == "semi_hard":
                valid = valid & (gap > 0) & (gap <= self.params.margin)
            losses = F.relu(self.params.margin - gap[valid])
            total, active = total + losses.sum(), active + (losses > 0).sum()
        return total / active.clamp_min(1)
