"""Frozen-backbone feature cache: compute pooled backbone features once, train only the head.

With `model.freeze_backbone: true` and `data.cache_features: true`, every trial of a sweep that
shares the dataset, backbone (and its weights) and test transform reuses one Arrow/parquet file
per split instead of running the backbone again. Features are taken with the deterministic test
transform: a cached trial trains without image augmentation, which is the usual price of
linear-probe style experiments and is why the cache is opt-in.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Optional

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from dml_core.config import ExperimentConfig
from dml_core.data import DatasetSplits
from dml_core.data.loading import resolve_num_workers
from dml_core.data.fingerprint import data_fingerprint
from dml_core.data.roots import resolve_data_paths
from dml_core.evaluation import embed_dataset
from dml_core.io import atomic_write_bytes, make_dir


class FeatureDataset(torch.utils.data.Dataset):
    """Pooled backbone features with their labels; quacks like a DMLDataset for the sampler."""

    def __init__(self, features: np.ndarray, labels: np.ndarray, class_names: list[str]) -> None:
        self.features = torch.from_numpy(np.array(features, dtype=np.float32))  # own, writable copy
        self.labels = np.asarray(labels, dtype=np.int64)
        self.class_names = class_names
        self.paths = None
        self.num_channels = 0

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.features[i], int(self.labels[i])


def default_cache_dir() -> Path:
    return Path(os.environ.get("DML_CACHE_DIR", Path.home() / ".cache" / "dml_core")) / "features"


def cache_key(cfg: ExperimentConfig, device: Optional[torch.device] = None) -> str:
    """Everything that changes the features: data selection and content, test transform, backbone
    weights, the device type computing them."""
    # Expanded: `${DML_DATA}/x` names other data on every machine that sets DML_DATA otherwise.
    d, m = resolve_data_paths(cfg.data), cfg.model
    parts = {
        # The fields the dataset declares as selecting its images (the data index's key too),
        # then the test transform's.
        "data": [d.selection(), d.image_size, d.resize_size, d.test_transform, d.interpolation],
        # Other labels or images under the same paths are other features (the content key's rule).
        "content": data_fingerprint(cfg.data),
        "device": None if device is None else device.type,
        "model": [m.backbone, m.pretrained, m.pooling, m.backbone_params()],
        # A randomly initialised backbone differs per seed; pretrained weights do not.
        "seed": None if m.pretrained else cfg.seed,
        "version": 4,  # 2: the data selection as its declared fields; 3: test geometry and resampling; 4: content, device
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def vector_column(rows: np.ndarray) -> pa.FixedSizeListArray:
    """(N, D) float array -> an Arrow column of N fixed-size float32 lists (features, embeddings)."""
    rows = np.ascontiguousarray(rows, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(rows.reshape(-1), pa.float32()), rows.shape[1])


def _write(path: Path, feats: np.ndarray, labels: np.ndarray) -> None:
    table = pa.table({"label": pa.array(labels, pa.int64()), "feature": vector_column(feats)})
    # Concurrent trials may fill the same file: each writes its own temporary, the last rename wins.
    atomic_write_bytes(path, lambda f: pq.write_table(table, f))


def _read(path: Path) -> tuple[np.ndarray, np.ndarray]:
    table = pq.read_table(path)
    col = table.column("feature").combine_chunks()
    dim = col.type.list_size
    feats = col.flatten().to_numpy(zero_copy_only=False).reshape(-1, dim)
    return feats, table.column("label").to_numpy()


def cached_feature_splits(splits: DatasetSplits, model: torch.nn.Module, cfg: ExperimentConfig,
                          device: torch.device, cache_dir: Optional[Path] = None) -> DatasetSplits:
    """Replace each split's images by cached backbone features (computing them on a miss)."""
    root = Path(cfg.data.cache_dir) if cfg.data.cache_dir else (cache_dir or default_cache_dir())
    make_dir(root)
    key = cache_key(cfg, device)
    eval_split = splits.test if splits.test is not None else splits.query
    test_transform = eval_split.transform
    out = {}
    for name in ("train", "test", "query", "gallery"):
        ds = getattr(splits, name)
        if ds is None:
            out[name] = None
            continue
        path = root / f"{key}-{name}.parquet"
        if path.is_file():
            feats, labels = _read(path)
        else:
            feats, labels = embed_dataset(model.feature_extractor(), ds.with_transform(test_transform), cfg.data.eval_batch_size,
                                          device, resolve_num_workers(cfg.data.num_workers, ds))
            _write(path, feats, labels)
        out[name] = FeatureDataset(feats, labels, ds.class_names)
    return dataclasses.replace(splits, **out)
