"""Checkpoints and run-directory files, written atomically.

A run directory is never left looking finished when it is not: files are written to a temporary
name and renamed, and `metrics.json` carries `status: running|finished|failed`.
"""
from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

CHECKPOINT_NAME = "checkpoint.pt"
METRICS_NAME = "metrics.json"
CONFIG_NAME = "config.yaml"


def atomic_write_bytes(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


def write_json(path: Path, data: Any) -> None:
    atomic_write_bytes(path, lambda p: p.write_text(json.dumps(data, indent=2, default=float)))


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: Path, **payload: Any) -> None:
    atomic_write_bytes(path, lambda p: torch.save(payload, p))


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    # Our checkpoints hold RNG states and config dicts, not only tensors.
    return torch.load(path, map_location=map_location, weights_only=False)
