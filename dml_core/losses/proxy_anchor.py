"""Proxy-Anchor loss: Kim et al., "Proxy Anchor Loss for Deep Metric Learning", CVPR 2020.

Each class has a proxy p; with cosine similarities s(x, p), P+ the proxies with a positive in
the batch, X_p+ / X_p- the batch samples of / not of p's class (eq. 4):

    L = 1/|P+| sum_{p in P+} log(1 + sum_{x in X_p+} exp(-alpha (s(x, p) - delta)))
      + 1/|P|  sum_{p in P}  log(1 + sum_{x in X_p-} exp( alpha (s(x, p) + delta)))

Defaults alpha = 32, delta = 0.1 (the paper's, also SEE's). Equal to pytorch-metric-learning's
`ProxyAnchorLoss` (its ``margin`` is delta).
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from dml_core.losses.base import ProxyBasedLoss
from dml_core.losses.pairs import masked_logsumexp
from dml_core.params.losses import ProxyAnchorParams


class ProxyAnchorLoss(ProxyBasedLoss):
    params: ProxyAnchorParams

    def proxy_loss(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        cos = F.normalize(embeddings, dim=-1) @ F.normalize(self.proxies, dim=-1).T  # (B, C)
        pos_mask = F.one_hot(labels, self.num_classes).bool()
        pos = masked_logsumexp(-self.params.alpha * (cos - self.params.delta), pos_mask, dim=0, add_one=True)
        neg = masked_logsumexp(self.params.alpha * (cos + self.params.delta), ~pos_mask, dim=0, add_one=True)
        num_with_pos = pos_mask.any(0).sum()
        return pos.sum() / num_with_pos + neg.sum() / self.num_classes
