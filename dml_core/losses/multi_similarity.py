"""Multi-similarity loss with its pair miner: Wang et al., "Multi-Similarity Loss with General
Pair Weighting for Deep Metric Learning", CVPR 2019.

Cosine similarities S (dot products of the L2-normalised embeddings). Mining (eq. 5-6): for
anchor i keep a negative k if S_ik > min_{positives} S_ij - epsilon and a positive j if
S_ij < max_{negatives} S_ik + epsilon. Loss (eq. 9), averaged over all anchors:

    1/alpha log(1 + sum_{kept j} exp(-alpha (S_ij - base))) + 1/beta log(1 + sum_{kept k} exp(beta (S_ik - base)))

Equal to pytorch-metric-learning's `MultiSimilarityLoss` fed by `MultiSimilarityMiner`.
Mining uses the (EE-effective) matrix the loss sees, so EE's hard negatives are mined too.
"""
from __future__ import annotations

import torch
from torch import Tensor

from dml_core.losses.base import ExpansionSpec, PairBasedLoss, check_number
from dml_core.losses.pairs import masked_logsumexp
from dml_core.losses.registry import register_loss


@register_loss("multi_similarity")
class MultiSimilarityLoss(PairBasedLoss):
    metric = "similarity"

    def __init__(
        self,
        alpha: float = 2.0,
        beta: float = 50.0,
        base: float = 0.5,
        epsilon: float = 0.1,
        expansion: ExpansionSpec = None,
    ) -> None:
        super().__init__(expansion)
        self.alpha = check_number("alpha", alpha, gt=0)
        self.beta = check_number("beta", beta, gt=0)
        self.base = check_number("base", base)
        self.epsilon = check_number("epsilon", epsilon, ge=0)

    def pair_loss(self, matrix: Tensor, pos_mask: Tensor, neg_mask: Tensor) -> Tensor:
        with torch.no_grad():
            hardest_neg = matrix.masked_fill(~neg_mask, float("-inf")).amax(1, keepdim=True)
            easiest_pos = matrix.masked_fill(~pos_mask, float("inf")).amin(1, keepdim=True)
            pos_kept = pos_mask & (matrix - self.epsilon < hardest_neg)
            neg_kept = neg_mask & (matrix + self.epsilon > easiest_pos)
        pos = masked_logsumexp(-self.alpha * (matrix - self.base), pos_kept, add_one=True) / self.alpha
        neg = masked_logsumexp(self.beta * (matrix - self.base), neg_kept, add_one=True) / self.beta
        return (pos + neg).mean()
