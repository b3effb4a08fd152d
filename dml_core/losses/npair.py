"""Multi-class N-pair loss: Sohn, "Improved Deep Metric Learning with Multi-class N-pair Loss
Objective", NeurIPS 2016.

The batch is N (anchor, positive) pairs of N different classes; with anchors x_i, positives
x_i^+ and dot-product similarities f,

    L = 1/N sum_i log(1 + sum_{j != i} exp(f(x_i, x_j^+) - f(x_i, x_i^+)))

i.e. a softmax cross-entropy over the anchors x positives similarity matrix. Here rows
(2m, 2m+1) are anchor and positive (the P x K sampler with even K, the same layout EE uses);
with K > 2 a class has several pairs and positives of the anchor's own class are left out of
the denominator. With K = 2 this is pytorch-metric-learning's `NPairsLoss` (which keeps one
pair per class when K > 2). ``l2_reg`` adds Sohn's penalty on the squared embedding norms
(constant for L2-normalised embeddings, hence 0 by default).
"""
from __future__ import annotations

from torch import Tensor

from dml_core.expansion import check_pair_layout
from dml_core.losses.base import PairBasedLoss
from dml_core.losses.pairs import masked_logsumexp
from dml_core.params.losses import NPairParams


class NPairLoss(PairBasedLoss):
    metric = "similarity"

    params: NPairParams

    def check_batch(self, labels: Tensor) -> None:
        check_pair_layout(labels, who=self.params.component)

    def pair_loss(self, matrix: Tensor, pos_mask: Tensor, neg_mask: Tensor) -> Tensor:
        logits = matrix[0::2, 1::2]  # anchors x positives
        negatives = neg_mask[0::2, 1::2]
        margins = logits - logits.diagonal().unsqueeze(1)
        loss = self.reduce_anchors(masked_logsumexp(margins, negatives, dim=1, add_one=True))
        if self.params.l2_reg:
            # ||f||^2 is the matrix diagonal; the mean over rows covers anchors and positives.
            loss = loss + self.params.l2_reg * matrix.diagonal().mean()
        return loss
