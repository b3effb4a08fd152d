"""`embed_dataset`: run a model over a dataset once and collect (embeddings, labels)."""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset


def embed_dataset(
    model: torch.nn.Module,
    dataset: Dataset,
    batch_size: int,
    device: str | torch.device,
    num_workers: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Embed every item of `dataset` in order: ``(float32 (N, D) array, int64 (N,) labels)``.

    `dataset[i]` yields ``(input, label)`` and ``model(inputs)`` returns (B, D) embeddings. The
    model runs in eval mode (batch-norm statistics frozen, dropout off) without autograd, and its
    previous train/eval mode is restored afterwards, so the trainer can call this mid-training.
    """
    device = torch.device(device)
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
    )
    n = len(dataset)
    embeddings: np.ndarray | None = None
    labels = np.empty(n, dtype=np.int64)
    was_training = model.training
    model.eval()
    try:
        start = 0
        with torch.no_grad():
            for inputs, targets in loader:
                out = model(inputs.to(device, non_blocking=True)).float().cpu().numpy()
                if embeddings is None:
                    # Filled in place: a list of batches plus np.concatenate would briefly hold
                    # the whole test set twice.
                    embeddings = np.empty((n, out.shape[1]), dtype=np.float32)
                stop = start + len(out)
                embeddings[start:stop] = out
                labels[start:stop] = np.asarray(targets)
                start = stop
    finally:
        model.train(was_training)
    if embeddings is None or start != n:
        raise ValueError(f"dataset: yielded {start} items but len(dataset) is {n}")
    return embeddings, labels
