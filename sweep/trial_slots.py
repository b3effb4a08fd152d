"""How many trials run at once on the resources a forecast sees, and the wall time of a phase on them."""
from __future__ import annotations

import heapq
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import yaml

from sweep.spec import Resources, SweepError


@dataclass(frozen=True)
class Pool:
    """Where trials run: `slots` at once, described for people."""

    slots: int
    where: str
    cpus: float = 0.0  # their CPU cores in all (0: not known), for the contention of CPU trials


def _fits(cpu: float, gpu: float, request: Resources) -> int:
    by_gpu = math.floor(gpu / request.gpu + 1e-9) if request.gpu > 0 else math.inf
    return int(min(math.floor(cpu / request.cpu + 1e-9), by_gpu))


def local_pool(cpus: float, gpus: Optional[float], request: Resources, cap: Optional[int], joined: bool) -> Pool:
    """Slots of this machine (or the cluster joined, as one pool); ``gpus`` None: not counted, so
    a trial asking for a GPU gets no slot (its wall time is not forecast)."""
    slots = _fits(cpus, gpus or 0.0, request)
    gpu_text = "GPUs not counted" if gpus is None else f"{gpus:g} GPU"
    return Pool(max(0, min(slots, cap or slots)), f"{'the cluster' if joined else 'this machine'}: {cpus:g} CPU, {gpu_text}",
                cpus)


def cluster_pool(path: str | Path, request: Resources, cap: Optional[int]) -> Pool:
    """Slots of a cluster YAML's node types, each at its `max_workers` (the head node once)."""
    path = Path(path).expanduser()
    try:
        config = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise SweepError(f"{path}: cannot read the cluster config ({' '.join(str(e).split())})") from None
    types = config.get("available_node_types") if isinstance(config, dict) else None
    if not isinstance(types, dict):
        raise SweepError(f"{path}: not a Ray cluster config (no available_node_types)")
    head, slots, cpus, parts = config.get("head_node_type"), 0, 0.0, []
    for name, node in types.items():
        res = node.get("resources") or {}
        count = int(node.get("max_workers", 0)) + (1 if name == head else 0)
        per = _fits(float(res.get("CPU", 0)), float(res.get("GPU", 0)), request)
        if count and per:
            slots += count * per
            cpus += count * float(res.get("CPU", 0))
            parts.append(f"{name} {count} x {per}")
    return Pool(min(slots, cap or slots), f"{path.name} at max_workers ({', '.join(parts) or 'no node type holds a trial'})",
                cpus)


def makespan(seconds: Sequence[float], slots: int) -> float:
    """Wall time of running `seconds` on `slots` at once, longest first, each to the first free slot."""
    if not seconds:
        return 0.0
    if slots < 1:
        return math.inf
    free = [0.0] * min(slots, len(seconds))
    for s in sorted(seconds, reverse=True):
        heapq.heappush(free, heapq.heappop(free) + s)
    return max(free)
