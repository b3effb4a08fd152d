"""The torch evaluation backend: exact kNN and k-means where the embeddings live (CUDA, or CPU).

Why it exists: the only faiss build with GPU kernels on PyPI (`faiss-gpu` 1.15.x) links the CUDA
12 runtime (`libcudart.so.12`, `libcublas.so.12`; its wheel requires `nvidia-cuda-runtime-cu12`),
while the pinned torch is built for CUDA 13. The GPU path therefore needs no faiss GPU build:
torch's own matmul and `topk` do the same exact work on the device torch already uses.

- `search_chunks`: brute-force inner products (cosine) or squared L2 distances of one query chunk
  against the whole gallery, then `torch.topk`. The chunk's (rows x gallery) score block is the
  only large temporary, so rows per chunk are sized to keep it within `knn.CHUNK_BYTES` (see
  `chunk_rows`); no N x N matrix is ever formed. Results go back to the host one chunk at a time,
  where `knn.py` excludes self by index exactly as on the faiss path.
- `kmeans_assign`: Lloyd k-means that replays faiss' `Clustering` step by step -- the same
  subsample (`max_points_per_centroid`), the same random initial centroids (faiss' `rand_perm`,
  reproduced bit for bit with numpy's MT19937, which shares `std::mt19937`'s integer seeding),
  the same empty-cluster split (`split_clusters`, its RNG and 1/1024 perturbation) -- so with the
  same seed it starts from the same centroids and usually ends in the same partition; only float
  rounding of near-equidistant points can send a run down another path.

Matmuls run in full float32 (TF32 is switched off for the duration): the two backends must agree
to float rounding, and TF32's 10-bit mantissa would reorder near neighbours.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import numpy as np
import torch

# faiss ClusteringParameters defaults that `clustering.kmeans_assign` keeps (min_points_per_centroid
# only silences a warning there and changes nothing here).
MAX_POINTS_PER_CENTROID = 256
_SPLIT_EPS = 1.0 / 1024  # faiss/Clustering.cpp: EPS of the empty-cluster split perturbation
_SPLIT_SEED = 1234  # faiss/Clustering.cpp: RandomGenerator rng(1234) in split_clusters
_REDO_SEED_STRIDE = 15486557  # faiss: seed + 1 + redo * 15486557 (one redo here)
_UINT32_MAX = np.float32(4294967295.0)


def resolve_device(device: str | torch.device | None) -> torch.device:
    """`None` -> the first CUDA device when torch sees one, else the CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@contextlib.contextmanager
def _exact_fp32(device: torch.device) -> Iterator[None]:
    if device.type != "cuda":
        yield
        return
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before


def chunk_rows(n_gallery: int, k: int, budget_bytes: int, bytes_per_entry: int) -> int:
    """Query rows per chunk: one (rows x n_gallery) float32 score block plus the (rows x k)
    results (`bytes_per_entry` each, as on the faiss path) within `budget_bytes`."""
    return max(1, budget_bytes // (4 * n_gallery + bytes_per_entry * (k + 1)))


def search_chunks(
    queries: np.ndarray,
    gallery: np.ndarray,
    k: int,
    *,
    metric: str,
    chunk_size: int,
    device: torch.device,
) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Yield ``(start, scores, ids)`` per query chunk, like faiss' `index.search` on each chunk:
    inner products descending (``"cosine"``; rows already prepared) or squared L2 ascending."""
    q_all = torch.from_numpy(queries).to(device)
    g = q_all if gallery is queries else torch.from_numpy(gallery).to(device)
    g_sq = (g * g).sum(dim=1) if metric == "l2" else None
    with torch.no_grad(), _exact_fp32(device):
        for start in range(0, q_all.shape[0], chunk_size):
            q = q_all[start : start + chunk_size]
            sims = q @ g.T
            if metric == "l2":
                # ||q - g||^2 = ||q||^2 + ||g||^2 - 2 q.g, clamped like faiss' BLAS path.
                dist = (q * q).sum(dim=1, keepdim=True) + g_sq - 2.0 * sims
                scores, ids = torch.topk(dist.clamp_(min=0.0), k, dim=1, largest=False)
            else:
                scores, ids = torch.topk(sims, k, dim=1)
            del sims
            yield start, scores.cpu().numpy(), ids.cpu().numpy()


# ------------------------------------------------------------------ k-means


class _UniformStream:
    """faiss' `RandomGenerator(seed).rand_float()` values in order: ``float(mt()) / float(mt.max())``
    in float32 from `std::mt19937(seed)`, drawn in blocks."""

    def __init__(self, seed: int, block: int = 16384) -> None:
        # RandomState(int) seeds with init_genrand, as std::mt19937's constructor does.
        self._rs = np.random.RandomState(seed & 0xFFFFFFFF)
        self._block = block
        self._buf = np.empty(0, dtype=np.float32)
        self._pos = 0

    def rest_of_block(self) -> np.ndarray:
        """The next values up to the end of the current block (a fresh block when it is used up)."""
        if self._pos == len(self._buf):
            raw = self._rs.randint(0, 2**32, size=self._block, dtype=np.uint32)
            self._buf = raw.astype(np.float32) / _UINT32_MAX
            self._pos = 0
        out = self._buf[self._pos :]
        self._pos = len(self._buf)
        return out

    def consumed(self, n: int, of: np.ndarray) -> None:
        """Only the first `n` values of the last `rest_of_block()` result count as used."""
        self._pos -= len(of) - n


def faiss_rand_perm(n: int, seed: int) -> np.ndarray:
    """faiss::rand_perm: Fisher-Yates with ``i2 = i + mt() % (n - i)``."""
    perm = np.arange(n, dtype=np.int64)
    draws = np.random.RandomState(seed & 0xFFFFFFFF).randint(0, 2**32, size=max(n - 1, 0), dtype=np.uint32)
    offsets = draws.astype(np.int64) % (n - np.arange(n - 1, dtype=np.int64))
    for i, off in enumerate(offsets.tolist()):  # sequential swaps; ~30 ms at n = 60,000
        j = i + off
        perm[i], perm[j] = perm[j], perm[i]
    return perm


def _split_empty_clusters(counts: np.ndarray, centroids: np.ndarray, n: int) -> None:
    """faiss::split_clusters, in place on host arrays: each empty centroid becomes a perturbed copy
    of a cluster picked with probability (size - 1) / (n - k), scanning clusters cyclically from 0."""
    k = len(counts)
    denom = np.float32(n - k)

    def prob(sizes: np.ndarray) -> np.ndarray:
        return ((sizes.astype(np.float64) - 1.0) / denom).astype(np.float32)

    p = prob(counts)  # kept up to date: only the two clusters of a split change size
    rng = _UniformStream(_SPLIT_SEED)
    up = np.where(np.arange(centroids.shape[1]) % 2 == 0, 1 + _SPLIT_EPS, 1 - _SPLIT_EPS).astype(np.float32)
    down = np.where(np.arange(centroids.shape[1]) % 2 == 0, 1 - _SPLIT_EPS, 1 + _SPLIT_EPS).astype(np.float32)
    for ci in np.flatnonzero(counts == 0).tolist():
        cj = 0
        while True:  # scan a block of draws at a time; hand back the draws after the hit
            r = rng.rest_of_block()
            order = (cj + np.arange(len(r))) % k
            hit = np.flatnonzero(r < p[order])
            if len(hit):
                rng.consumed(int(hit[0]) + 1, r)
                cj = int(order[hit[0]])
                break
            cj = int((cj + len(r)) % k)
        centroids[ci] = centroids[cj] * up
        centroids[cj] *= down
        counts[ci] = counts[cj] / 2
        counts[cj] -= counts[ci]
        p[[ci, cj]] = prob(counts[[ci, cj]])


def _nearest(x: torch.Tensor, centroids: torch.Tensor, budget_bytes: int) -> torch.Tensor:
    """Index of the nearest centroid (squared L2) of every row, in chunks of rows."""
    c_sq = (centroids * centroids).sum(dim=1)
    rows = max(1, budget_bytes // (4 * len(centroids)))
    out = torch.empty(len(x), dtype=torch.int64, device=x.device)
    for s in range(0, len(x), rows):
        block = x[s : s + rows]
        out[s : s + rows] = (c_sq - 2.0 * (block @ centroids.T)).argmin(dim=1)
    return out


def kmeans_assign(
    x: np.ndarray, n_clusters: int, *, niter: int, seed: int, device: torch.device, budget_bytes: int
) -> np.ndarray:
    """faiss-equivalent k-means of the rows of `x` on `device`; int64 cluster id per row."""
    n, d = x.shape
    with torch.no_grad(), _exact_fp32(device):
        x_all = torch.from_numpy(x).to(device)
        train = x_all
        if n > n_clusters * MAX_POINTS_PER_CENTROID:
            keep = faiss_rand_perm(n, seed)[: n_clusters * MAX_POINTS_PER_CENTROID]
            train = x_all[torch.from_numpy(keep).to(device)]
        n_train = len(train)
        init = faiss_rand_perm(n_train, seed + 1 + 0 * _REDO_SEED_STRIDE)[:n_clusters]
        centroids = train[torch.from_numpy(init).to(device)].clone()
        previous = None
        for _ in range(niter):
            assign = _nearest(train, centroids, budget_bytes)
            if previous is not None and torch.equal(assign, previous):
                break  # a fixed point: every further Lloyd step would repeat this one
            previous = assign
            counts_t = torch.bincount(assign, minlength=n_clusters)
            sums = torch.zeros_like(centroids).index_add_(0, assign, train)
            filled = counts_t > 0
            centroids = torch.where(filled[:, None], sums / counts_t.clamp(min=1)[:, None].to(sums.dtype), centroids)
            counts = counts_t.cpu().numpy().astype(np.float32)
            if (counts == 0).any():  # rare row edits: cheaper on a host copy than as GPU kernels
                host = centroids.cpu().numpy()
                _split_empty_clusters(counts, host, n_train)
                centroids = torch.from_numpy(host).to(device)
        return _nearest(x_all, centroids, budget_bytes).cpu().numpy()
