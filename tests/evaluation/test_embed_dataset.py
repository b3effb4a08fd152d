"""`embed_dataset`: order, eval mode without autograd, mode restored."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from dml_core.evaluation import embed_dataset


class TinyEmbedder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Dropout(0.5))
        self.calls_with_grad = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls_with_grad += torch.is_grad_enabled()
        return nn.functional.normalize(self.net(x), dim=1)


def test_embeds_in_order_in_eval_mode_and_restores_training():
    torch.manual_seed(0)
    x, y = torch.randn(11, 4), torch.arange(11) % 3
    model = TinyEmbedder().train()
    running_mean = model.net[1].running_mean.clone()

    emb, labels = embed_dataset(model, TensorDataset(x, y), batch_size=4, device="cpu")

    assert emb.dtype == np.float32 and emb.shape == (11, 6)
    assert labels.dtype == np.int64 and labels.tolist() == y.tolist()
    assert model.training and model.calls_with_grad == 0
    # eval mode: batch-norm statistics untouched, dropout off -> equals one eval-mode forward pass
    assert torch.equal(model.net[1].running_mean, running_mean)
    with torch.no_grad():
        expected = model.eval()(x).numpy()
    np.testing.assert_allclose(emb, expected, rtol=1e-6, atol=1e-6)


def test_mode_is_restored_when_the_model_fails():
    class Broken(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise RuntimeError("boom")

    model = Broken().train()
    with pytest.raises(RuntimeError, match="boom"):
        embed_dataset(model, TensorDataset(torch.zeros(2, 1), torch.zeros(2, dtype=torch.long)), 2, "cpu")
    assert model.training
