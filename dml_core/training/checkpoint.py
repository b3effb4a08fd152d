"""Checkpoints and run-directory files.

A run directory is never left looking finished when it is not: every file is written atomically
(`dml_core.io`) and `metrics.json` carries `status: running|finished|failed`.

A checkpoint holds only tensors, numbers, strings and containers of them (RNG states included,
as tensors), and is read with `torch.load(weights_only=True)`: unpickling arbitrary objects would
let whoever can write a run or sweep folder run code in every process that loads it.
"""
from __future__ import annotations

import pickle
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dml_core.errors import first_line
from dml_core.io import atomic_write_bytes, atomic_write_json

CHECKPOINT_NAME = "checkpoint.pt"
METRICS_NAME = "metrics.json"
CONFIG_NAME = "config.yaml"

# What every checkpoint written by the trainer holds; a file without them is not one of ours.
REQUIRED_KEYS = ("epoch", "model", "loss", "optimizer", "scheduler", "config", "in_channels", "rng")


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: unreadable, unsafe, foreign, or not fitting the config."""


def write_json(path: Path, data: Any) -> None:
    atomic_write_json(path, data, indent=2)


def rng_state() -> dict[str, Any]:
    version, mt, gauss_next = random.getstate()
    _, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    state = {
        "python": {"version": version, "mt": torch.tensor(mt, dtype=torch.int64), "gauss_next": gauss_next},
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss),
                  "cached_gaussian": float(cached_gaussian)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    py, npy = state["python"], state["numpy"]
    random.setstate((py["version"], tuple(py["mt"].tolist()), py["gauss_next"]))
    np.random.set_state(("MT19937", npy["keys"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"],
                         npy["cached_gaussian"]))
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def save_checkpoint(path: Path, **payload: Any) -> None:
    atomic_write_bytes(path, lambda f: torch.save(payload, f))


def checkpoint_file(path: str | Path) -> Path:
    """The checkpoint file meant by `path`: itself, or the `checkpoint.pt` of a run directory."""
    path = Path(path)
    return path / CHECKPOINT_NAME if path.is_dir() else path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """A trainer checkpoint (file, or run directory holding `checkpoint.pt`), or a one-line error."""
    path = checkpoint_file(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        text = str(e)
        unsafe = re.search(r"GLOBAL (\S+) was not an allowed global", text)
        if unsafe:
            raise CheckpointError(f"{path}: refused to load: unpickling it would call {unsafe.group(1)} (a checkpoint "
                                  "holds only tensors, numbers and strings; this one is foreign or tampered with)") from None
        why = next((line.strip() for line in text.splitlines() if line.strip().startswith("Unsupported")), first_line(e))
        raise CheckpointError(f"{path}: not a readable checkpoint, damaged or not written by dml_core.train ({why})") from None
    except Exception as e:  # truncated zip, random bytes, a text file: torch raises many types
        raise CheckpointError(f"{path}: not a readable checkpoint, damaged or not written by dml_core.train "
                              f"({type(e).__name__}: {first_line(e)})") from None
    missing = [k for k in REQUIRED_KEYS if not isinstance(ckpt, dict) or k not in ckpt]
    if missing:
        raise CheckpointError(f"{path}: not a dml_core.train checkpoint (no {', '.join(missing)})")
    return ckpt


def restore(path: str | Path, what: str, load: Any, state: Any) -> None:
    """`load(state)` (a `load_state_dict`), with a mismatch as one line naming the checkpoint."""
    try:
        load(state)
    except (RuntimeError, ValueError, KeyError, TypeError) as e:
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        # load_state_dict: "Error(s) in loading state_dict for X:" then one line per problem
        detail = lines[1] if len(lines) > 1 and lines[0].startswith("Error(s)") else (lines[0] if lines else repr(e))
        raise CheckpointError(f"{path}: its {what} does not fit this config ({detail}); "
                              "resume with the config it was trained with") from None
