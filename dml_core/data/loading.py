"""How many DataLoader worker processes a run gets, and the loader options that go with them.

``data.num_workers: null`` (the default) means "what this run was given": a sweep trial gets
``resources_per_trial.cpu - 1`` (one core stays with the training loop; `sweep.resources` fills
it in before the trial starts), a single run the cores this process may use, capped at
`MAX_AUTO_WORKERS`. Data already in memory as tensors (the digits, cached features) decodes nothing, so it gets
no workers: extra processes would only copy batches. On CUDA the workers persist across epochs and
batches go to pinned memory, so the host-to-device copy overlaps the next batch.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the sweep driver counts cores here and imports no torch
    import torch
    from torch.utils.data import Dataset

# Past ~8 processes one trainer rarely gains (the GPU or the disk is the limit) and each worker
# holds a copy of the dataset's file list; a sweep trial is sized by its resources instead.
MAX_AUTO_WORKERS = 8


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity, which containers and Ray restrict)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def resolve_num_workers(requested: int | None, dataset: Dataset) -> int:
    """``requested`` when set; else 0 for in-memory data, else the usable cores capped."""
    if requested is not None:
        return requested
    if getattr(dataset, "paths", None) is None:  # in memory (digits, cached features): nothing to decode
        return 0
    return min(usable_cores(), MAX_AUTO_WORKERS)


def loader_options(num_workers: int, device: torch.device) -> dict[str, Any]:
    """DataLoader keyword arguments for ``num_workers`` workers feeding ``device``."""
    cuda = device.type == "cuda"
    return {"num_workers": num_workers, "pin_memory": cuda, "persistent_workers": cuda and num_workers > 0}
