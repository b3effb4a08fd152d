"""Exact k-nearest-neighbour search in query chunks, with self-exclusion by index.

Two backends compute the same thing: faiss (`IndexFlat*`, CPU, or GPU where a faiss GPU build
loads) and torch (`torch_backend.py`: chunked matmul + `torch.topk` on any torch device, the
path for CUDA, which needs no faiss GPU build). ``backend="auto"`` picks torch when the device is
CUDA and faiss otherwise (`resolve_backend`). Both hand their raw (k + 1)-results to the same
`_drop_self`, so self-exclusion is identical; they differ only in the order of exact ties.

Two metrics, both exact (`IndexFlat*`, brute force; no approximation enters reported numbers):

- ``"cosine"``: rows are L2-normalised, then ranked by inner product (`IndexFlatIP`). This is the
  DML convention, and the models in `dml_core.models` already output unit vectors, which are
  used as they are (no copy) when every squared norm is within `UNIT_NORM_TOL` of 1.
- ``"l2"``: rows are ranked by squared Euclidean distance on the raw values (`IndexFlatL2`, as
  pytorch-metric-learning does). On unit vectors this gives the same order as ``"cosine"``,
  since ||a - b||^2 = 2 - 2 <a, b>, up to float rounding of near-ties.

Memory. The queries are searched `chunk_size` rows at a time and each chunk is handed to the
caller before the next is computed, so nothing of size N x N (nor even N x k, if the caller
reduces per chunk as `retrieval.py` does) is ever held. Faiss itself tiles the distance matrix
into 4096 x 1024 blocks. Peak memory is the gallery held by the index plus one chunk's results.
The torch backend forms each chunk's full (rows x gallery) score block, so its default chunk is
also capped so that block fits the same `CHUNK_BYTES` budget (`torch_backend.chunk_rows`).

Self-exclusion. Without a separate gallery every query is also in the gallery, so the search asks
for k + 1 neighbours and removes the query's own row index. It is removed by index and never by
distance == 0: an exact duplicate of the query is a legitimate neighbour (and a hit if it shares
the class), so dropping everything at distance 0 would be wrong. If the query itself is not among
its k + 1 results (more than k exact duplicates can outrank it in faiss's tie order) the last
result is dropped instead, which leaves k genuine other rows.
"""
from __future__ import annotations

from typing import Any, Iterator, Literal, Optional, get_args

import faiss
import numpy as np

from .inputs import EvaluationError

Metric = Literal["cosine", "l2"]
METRICS: tuple[str, ...] = get_args(Metric)
# "auto": torch on a CUDA device, faiss otherwise. Mirrored by config `eval.knn_backend`.
Backend = Literal["auto", "faiss", "torch"]
BACKENDS: tuple[str, ...] = get_args(Backend)

# A float32 unit vector's squared norm is 1 to within ~5e-7 (measured on 512-d rows from
# torch.nn.functional.normalize and faiss.normalize_L2); fp16/bf16 outputs miss by ~1e-3 and get
# re-normalised. Re-normalising rows that are already unit would only perturb the last bits.
UNIT_NORM_TOL = 1e-5

# faiss' GPU k-selection kernels stop at k = 2048 (GPU_MAX_SELECTION_K in
# faiss/gpu/utils/DeviceDefs.cuh); larger searches run on the CPU index instead.
GPU_MAX_K = 2048

# Budget for one chunk's result arrays and the per-chunk work on them in retrieval.py (scores,
# ids, labels, hit flags, cumulative sums: ~48 bytes per (query, neighbour) entry).
CHUNK_BYTES = 256 * 2**20
_BYTES_PER_ENTRY = 48


def gpu_available() -> bool:
    """True when the installed faiss was built with GPU support and sees at least one GPU."""
    return hasattr(faiss, "get_num_gpus") and faiss.get_num_gpus() > 0


def resolve_use_gpu(use_gpu: Optional[bool]) -> bool:
    """`None` -> use a GPU when faiss has one; `True` demands one; `False` forbids it."""
    if use_gpu is None:
        return gpu_available()
    if use_gpu and not gpu_available():
        raise EvaluationError(
            "use_gpu: True but faiss sees no GPU (faiss-cpu installed, or no visible CUDA device); "
            "pass use_gpu=None to pick automatically"
        )
    return bool(use_gpu)


def device_of(x: Any) -> Optional[str]:
    """The torch device of a tensor (e.g. ``"cuda:0"``), None for anything else."""
    return str(x.device) if type(x).__module__.startswith("torch") else None


def resolve_backend(backend: str, device: Any) -> str:
    """``"faiss"`` or ``"torch"`` for `backend` given the embeddings' `device` (str, torch.device
    or None = not a torch tensor); "auto" is torch exactly when the device is CUDA."""
    if backend not in BACKENDS:
        raise EvaluationError(f"backend: unknown {backend!r}; choose from {list(BACKENDS)}")
    if backend != "auto":
        return backend
    return "torch" if device is not None and str(device).startswith("cuda") else "faiss"


def prepare(x: np.ndarray, metric: Metric) -> np.ndarray:
    """Return the rows faiss should index for `metric` (a normalised copy only when needed)."""
    if metric not in METRICS:
        raise EvaluationError(f"metric: unknown {metric!r}; choose from {list(METRICS)}")
    if metric == "l2":
        return x
    sq_norms = np.einsum("ij,ij->i", x, x)
    if np.abs(sq_norms - 1.0).max() <= UNIT_NORM_TOL:
        return x
    x = x.copy()  # never normalise the caller's array in place
    faiss.normalize_L2(x)  # all-zero rows stay zero: similarity 0 to everything
    return x


def default_chunk_size(k: int) -> int:
    """Query rows per chunk so one chunk's (rows x k) working set fits `CHUNK_BYTES`."""
    return max(1, CHUNK_BYTES // (_BYTES_PER_ENTRY * (k + 1)))


def _build_index(gallery: np.ndarray, metric: Metric, k: int, use_gpu: bool) -> faiss.Index:
    d = gallery.shape[1]
    index = faiss.IndexFlatIP(d) if metric == "cosine" else faiss.IndexFlatL2(d)
    if use_gpu and k <= GPU_MAX_K:
        index = faiss.index_cpu_to_all_gpus(index)
    index.add(gallery)
    return index


def knn_chunks(
    queries: np.ndarray,
    gallery: Optional[np.ndarray],
    k: int,
    *,
    metric: Metric = "cosine",
    chunk_size: Optional[int] = None,
    use_gpu: Optional[bool] = None,
    backend: Backend = "faiss",
    device: Any = None,
) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Yield ``(start, scores, ids)`` for consecutive query chunks ``queries[start:start + c]``.

    `ids` (c, k) int64 index the gallery rows, nearest first; `scores` (c, k) float32 are inner
    products (``"cosine"``, descending) or squared L2 distances (``"l2"``, ascending).
    ``gallery=None`` searches the queries among themselves and excludes each query's own row (see
    the module docstring); a separate gallery excludes nothing. Inputs are float32 (n, d) arrays
    (see `inputs.as_embeddings`). `backend` "faiss" (with `use_gpu`) or "torch" on `device`
    (None: CUDA when torch sees it, else CPU); "auto" resolves by `device` (`resolve_backend`).
    """
    backend = resolve_backend(backend, device)
    exclude_self = gallery is None
    queries = prepare(queries, metric)
    gallery = queries if exclude_self else prepare(gallery, metric)
    if queries.shape[1] != gallery.shape[1]:
        raise EvaluationError(
            f"gallery: dimension {gallery.shape[1]} differs from the queries' {queries.shape[1]}"
        )
    available = gallery.shape[0] - int(exclude_self)
    if not 1 <= k <= available:
        raise EvaluationError(f"k: must be in [1, {available}] (the rows that can be neighbours), got {k}")
    if chunk_size is not None and chunk_size < 1:
        raise EvaluationError(f"chunk_size: must be >= 1, got {chunk_size}")

    k_search = k + int(exclude_self)
    if backend == "torch":
        from . import torch_backend  # torch is imported only when this backend is used

        if chunk_size is None:
            chunk_size = torch_backend.chunk_rows(gallery.shape[0], k, CHUNK_BYTES, _BYTES_PER_ENTRY)
        chunks = torch_backend.search_chunks(queries, gallery, k_search, metric=metric, chunk_size=chunk_size,
                                             device=torch_backend.resolve_device(device))
    else:
        chunks = _faiss_chunks(queries, gallery, k_search, metric, chunk_size or default_chunk_size(k), use_gpu)
    for start, scores, ids in chunks:
        if exclude_self:
            scores, ids = _drop_self(scores, ids, start)
        yield start, scores, ids


def _faiss_chunks(
    queries: np.ndarray, gallery: np.ndarray, k_search: int, metric: Metric, chunk_size: int, use_gpu: Optional[bool]
) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    index = _build_index(gallery, metric, k_search, resolve_use_gpu(use_gpu))
    for start in range(0, queries.shape[0], chunk_size):
        scores, ids = index.search(queries[start : start + chunk_size], k_search)
        yield start, scores, ids


def _drop_self(scores: np.ndarray, ids: np.ndarray, start: int) -> tuple[np.ndarray, np.ndarray]:
    """Remove each row's own index from k + 1 results (or, if absent, its last result)."""
    n, k_plus_1 = ids.shape
    drop = ids == np.arange(start, start + n)[:, None]
    drop[~drop.any(axis=1), -1] = True  # exactly one column dropped per row
    keep = ~drop
    return scores[keep].reshape(n, k_plus_1 - 1), ids[keep].reshape(n, k_plus_1 - 1)


def knn(
    queries: np.ndarray,
    gallery: Optional[np.ndarray],
    k: int,
    *,
    metric: Metric = "cosine",
    chunk_size: Optional[int] = None,
    use_gpu: Optional[bool] = None,
    backend: Backend = "faiss",
    device: Any = None,
) -> tuple[np.ndarray, np.ndarray]:
    """All chunks of `knn_chunks` stacked: ``(scores, ids)``, each (n_queries, k)."""
    parts = list(knn_chunks(queries, gallery, k, metric=metric, chunk_size=chunk_size, use_gpu=use_gpu,
                            backend=backend, device=device))
    return np.concatenate([p[1] for p in parts]), np.concatenate([p[2] for p in parts])
