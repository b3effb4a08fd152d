"""Multi-similarity loss with its pair miner: Wang et al., "Multi-Similarity Loss with General
Pair Weighting for Deep Metric Learning", CVPR 2019.

Cosine similarities S (dot products of the L2-normalised embeddings). Mining (eq. 5-6): for
anchor i keep a negative k if S_ik > min_{positives} S_ij - epsilon and a positive j if
S_ij < max_{negatives} S_ik + epsilon. Loss (eq. 9), averaged (`reduction: sum`: summed) over all anchors:

    1/alpha log(1 + sum_{kept j} exp(-alpha (S_ij - base))) + 1/beta log(1 + sum_{kept k} exp(beta (S_ik - base)))

Equal to pytorch-metric-learning's `MultiSimilarityLoss` fed by `MultiSimilarityMiner`.
Mining uses the (EE-effective) matrix the loss sees, so EE's hard negatives are mined too.
"""
from __future__ import annotations

import torch
from torch import Tensor

from dml_core.losses.base import PairBasedLoss
from dml_core.losses.pairs import masked_logsumexp
from dml_core.params.losses import MultiSimilarityParams


class MultiSimilarityLoss(PairBasedLoss):
    metric = "similarity"

    params: MultiSimilarityParams

    def pair_loss(self, matrix: Tensor, pos_mask: Tensor, neg_mask: Tensor) -> Tensor:
        with torch.no_grad():
            hardest_neg = matrix.masked_fill(~neg_mask, float("-inf")).amax(1, keepdim=True)
            easiest_pos = matrix.masked_fill(~pos_mask, float("inf")).amin(1, keepdim=True)
            pos_kept = pos_mask & (matrix - self.params.epsilon < hardest_neg)
            neg_kept = neg_mask & (matrix + self.params.epsilon > easiest_pos)
        pos = masked_logsumexp(-self.params.alpha * (matrix - self.params.base), pos_kept, add_one=True) / self.params.alpha
        neg = masked_logsumexp(self.params.beta * (matrix - self.params.base), neg_kept, add_one=True) / self.params.beta
        return self.reduce_anchors(pos + neg)
