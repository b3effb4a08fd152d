"""What a dataset holds, as one digest: the data's part of a result's content key (`dml_core.identity`).

Two configs whose data has the same fingerprint train and test on the same data, wherever it lies:
the fingerprint looks at what the files hold, never at where they are, so the same data copied to
another node or folder (another ``DML_DATA``) keeps it, and other labels, images or splits under
the same path change it. The rule:

- **Data on disk** (the dataset's data roots, `DataConfig.data_roots()`: ``root``, ``train_root``,
  ``test_root``, ``${DML_DATA}`` expanded): every regular file under each root, hidden ones
  skipped (as the datasets skip them: download locks, ``.DS_Store``), links followed (a linked
  folder already in the tree once), as its path relative to the root, its size in bytes and a
  BLAKE2b digest of its content: all of it for annotation and split files (every file that is not
  an image: CUB's ``images.txt``, Cars' ``cars_annos.mat``, SOP's ``Ebay_train.txt``), the first
  `IMAGE_HEAD_BYTES` for images (the whole of an Omniglot PNG; a JPEG's headers, tables and first
  scan lines). Class folders are paths, so a label moved to another folder changes it. Not seen:
  an image rewritten in place with the same size and the same first 4 KiB.
- **In-memory data** (no data root: scikit-learn's digits): a digest of the arrays the dataset
  builds (each split's images, labels and class names), so another scikit-learn release's
  digits would not pass for these.
- A root that is a URL is its string (nothing here can look inside it).

Reading every file's head costs one open and read per file, about 0.1 ms (Omniglot's 2,720 files
in 0.4 s, 20,000 files in 2-3 s, on a loaded 2-core machine); `Fingerprints` keeps each root's
digest, so a sweep's driver reads a dataset once per session, not per trial. Imports neither torch
nor torchvision: the sweep driver computes it (tests/sweep/test_checks_no_torch.py).
"""
from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np

from dml_core.data.base import DatasetError
from dml_core.data.layout import IMAGE_EXTENSIONS
from dml_core.data.roots import resolve_data_paths
from dml_core.params.datasets import DATASETS, DataConfig

IMAGE_HEAD_BYTES = 4096
_CHUNK = 1 << 20


def _digest() -> Any:
    return hashlib.blake2b(digest_size=16)


def _content_digest(path: str, limit: Optional[int]) -> str:
    """BLAKE2b of the file's first `limit` bytes (all of it for None)."""
    h = _digest()
    with open(path, "rb") as f:
        if limit is not None:
            h.update(f.read(limit))
        else:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
    return h.hexdigest()


def _files(root: str) -> Iterator[tuple[str, str, int]]:
    """(relative POSIX path, absolute path, size) of every non-hidden regular file under `root`;
    a folder reached twice through links is read once."""
    seen = {os.path.realpath(root)}
    stack = [(root, "")]
    while stack:
        folder, rel = stack.pop()
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as e:
            raise DatasetError(f"{folder}: cannot read this folder ({e.strerror or e})") from None
        for entry in entries:
            if entry.name.startswith("."):
                continue
            name = f"{rel}{entry.name}"
            try:
                st = entry.stat()  # follows links
            except OSError:
                if entry.is_symlink():  # a dangling link: the dataset's own reader names it
                    continue
                raise
            if stat.S_ISDIR(st.st_mode):
                real = os.path.realpath(entry.path)
                if real not in seen:
                    seen.add(real)
                    stack.append((entry.path, f"{name}/"))
            elif stat.S_ISREG(st.st_mode):
                yield name, entry.path, st.st_size


def tree_fingerprint(root: str | Path) -> str:
    """The digest of what the folder `root` holds (module docstring); hex, 32 characters."""
    root = str(root)
    if not os.path.isdir(root):
        raise DatasetError(f"{root}: not a folder; a data root's fingerprint needs the data")
    h = _digest()
    for rel, path, size in sorted(_files(root)):
        try:
            image = os.path.splitext(rel)[1].lower() in IMAGE_EXTENSIONS
            content = _content_digest(path, IMAGE_HEAD_BYTES if image else None)
        except OSError as e:
            raise DatasetError(f"{path}: cannot read this file ({e.strerror or e})") from None
        h.update(f"{json.dumps(rel)} {size} {content}\n".encode("utf-8"))
    return h.hexdigest()


def _array_digest(h: Any, array: np.ndarray) -> None:
    array = np.ascontiguousarray(array)
    h.update(json.dumps([array.dtype.str, list(array.shape)]).encode("utf-8"))
    h.update(array.tobytes())


def memory_fingerprint(cfg: DataConfig) -> str:
    """The digest of the arrays an in-memory dataset builds (each split's images, labels, class names)."""
    splits = DATASETS.build(cfg)
    h = _digest()
    for name, ds in (("train", splits.train), *splits.eval_splits().items()):
        images = getattr(ds, "images", None)
        if images is None:
            raise DatasetError(f"data.name: {cfg.name} has no data root and no in-memory images to fingerprint")
        h.update(json.dumps([name, list(ds.class_names)]).encode("utf-8"))
        _array_digest(h, np.asarray(images))
        _array_digest(h, np.asarray(ds.labels))
    return h.hexdigest()


class Fingerprints:
    """Data fingerprints, each computed once per holder: a sweep's driver keeps one per session,
    so its trials share one read of each data root."""

    def __init__(self, known: Optional[dict[str, str]] = None) -> None:
        self._known = {} if known is None else known  # the holder's own dict, filled in place

    def _once(self, key: str, compute: Any) -> str:
        if key not in self._known:
            self._known[key] = compute()
        return self._known[key]

    def of(self, cfg: DataConfig) -> str:
        """The fingerprint of the data `cfg` reads (module docstring); hex, 32 characters."""
        data = resolve_data_paths(cfg)
        roots = {f: getattr(data, f) for f in data.data_roots() if getattr(data, f) is not None}
        if not roots:
            selection = json.dumps(data.selection(), sort_keys=True)
            return self._once(f"memory:{selection}", lambda: memory_fingerprint(data))
        parts = {}
        for field, path in sorted(roots.items()):
            if "://" in path:
                parts[field] = path
                continue
            absolute = os.path.abspath(path)
            parts[field] = self._once(f"tree:{absolute}", lambda p=absolute: tree_fingerprint(p))
        h = _digest()
        h.update(json.dumps(parts, sort_keys=True).encode("utf-8"))
        return h.hexdigest()


def data_fingerprint(cfg: DataConfig) -> str:
    """The fingerprint of the data `cfg` reads, computed afresh (`Fingerprints` to keep it)."""
    return Fingerprints().of(cfg)
