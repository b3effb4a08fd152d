"""Proxy-NCA loss: Movshovitz-Attias et al., "No Fuss Distance Metric Learning using Proxies",
ICCV 2017.

With L2-normalised samples x and proxies p, squared Euclidean distances d and scale s:

    L = mean_x -log( exp(-s d(x, p_y)) / sum_p exp(-s d(x, p)) )

a softmax cross-entropy over -s d. As in pytorch-metric-learning's `ProxyNCALoss` (its
``softmax_scale``, default 1) and ProxyNCA++ (Teh et al., ECCV 2020, which recommends
s = 9, a temperature of 1/9), the positive proxy is in the denominator; the original paper
leaves it out, which lets the loss go negative.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from dml_core.losses.base import ProxyBasedLoss
from dml_core.params.losses import ProxyNCAParams


class ProxyNCALoss(ProxyBasedLoss):
    params: ProxyNCAParams

    def proxy_loss(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        cos = F.normalize(embeddings, dim=-1) @ F.normalize(self.proxies, dim=-1).T
        squared_distance = (2 - 2 * cos).clamp_min(0)  # both sides unit-norm
        return F.cross_entropy(-self.params.softmax_scale * squared_distance, labels)
