"""Can a trial run anywhere? Its `resources_per_trial` must fit ONE node, not the cluster total.

Ray places a trial on a single node: a request of 8 CPUs on a cluster of two 4-CPU workers passes
a check against the total and then stays PENDING forever. So the request is judged against node
shapes, and passes when at least one shape holds it:

- this machine, for a local sweep (its usable cores and CUDA devices);
- on a running cluster, every alive node (`ray.nodes()`);
- where the autoscaler's node types are known, those too, so that a cluster scaled down to zero
  workers is not refused for lacking GPUs now. They come from the autoscaler's report in the GCS
  (`ray._private.state.state.get_cluster_config()`, as Ray Data reads it), else from a cluster
  YAML: `--cluster-config PATH`, `$DML_CLUSTER_CONFIG`, or `~/ray_bootstrap_config.yaml` (the
  copy of cluster.yaml the cluster launcher puts on the head node). A node type must state its
  `resources` (cluster.yaml does) to count.

Memory is listed where known but not judged: `resources_per_trial` asks for CPUs and GPUs only.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import yaml

from sweep.spec import Resources, SweepError

log = logging.getLogger("sweep")

CLUSTER_CONFIG_ENV = "DML_CLUSTER_CONFIG"
HEAD_BOOTSTRAP_CONFIG = Path("~/ray_bootstrap_config.yaml")


@dataclass(frozen=True)
class NodeShape:
    """What one node offers (Ray's logical resources)."""

    name: str
    cpu: float
    gpu: float
    memory: Optional[float] = None  # bytes

    def holds(self, request: Resources) -> bool:
        return request.cpu <= self.cpu and request.gpu <= self.gpu

    def describe(self) -> str:
        mem = f", {self.memory / 2**30:.0f} GiB" if self.memory else ""
        return f"{self.name} ({self.cpu:g} CPU, {self.gpu:g} GPU{mem})"


def trial_loader_workers(request: Resources) -> int:
    """DataLoader workers of a trial holding ``request``: its CPUs but the training loop's one."""
    return max(0, int(request.cpu) - 1)


def _shape(name: str, resources: dict[str, Any]) -> NodeShape:
    memory = resources.get("memory")
    return NodeShape(name, float(resources.get("CPU", 0)), float(resources.get("GPU", 0)),
                     float(memory) if memory else None)


def node_types(config: dict[str, Any]) -> list[NodeShape]:
    """The node types of a Ray cluster config (`available_node_types`) that can have a node."""
    shapes = []
    head = config.get("head_node_type")
    for name, node_type in (config.get("available_node_types") or {}).items():
        if name != head and node_type.get("max_workers", 1) == 0:
            continue
        shapes.append(_shape(f"node type {name}", node_type.get("resources") or {}))
    return shapes


def read_node_types(path: str | Path) -> list[NodeShape]:
    """`node_types` of the cluster YAML at ``path``."""
    path = Path(path).expanduser()
    try:
        config = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise SweepError(f"{path}: cannot read the cluster config ({' '.join(str(e).split())})") from None
    if not isinstance(config, dict) or "available_node_types" not in config:
        raise SweepError(f"{path}: not a Ray cluster config (no available_node_types)")
    return node_types(config)


def alive_nodes(nodes: Iterable[dict[str, Any]]) -> list[NodeShape]:
    """Shapes of the alive entries of `ray.nodes()`."""
    return [_shape(f"node {n.get('NodeManagerAddress') or n.get('NodeID', '?')}", n.get("Resources") or {})
            for n in nodes if n.get("Alive")]


def reported_node_types() -> list[NodeShape]:
    """Node types the cluster's autoscaler reported to the GCS; [] where there is none (a local
    Ray, `ray start` by hand) or this Ray version lacks the (private) call."""
    from sweep.compat import autoscaler_cluster_config

    try:
        config = autoscaler_cluster_config()
    except Exception as e:  # a private API: its absence must not stop a sweep
        log.debug("no autoscaler cluster config: %s", e)
        return []
    if config is None:
        return []
    return [_shape(f"node type {g.name}", dict(g.resources)) for g in config.node_group_configs
            if g.max_count != 0 and g.resources]


def cluster_config_path(explicit: str | Path | None = None) -> Optional[Path]:
    """`--cluster-config` > `$DML_CLUSTER_CONFIG` > the head node's bootstrap config, if present."""
    chosen = explicit or os.environ.get(CLUSTER_CONFIG_ENV)
    if chosen:
        return Path(chosen).expanduser()
    head = HEAD_BOOTSTRAP_CONFIG.expanduser()
    return head if head.is_file() else None


def cluster_shapes(cluster_config: str | Path | None = None) -> list[NodeShape]:
    """Every node shape of the running cluster this process is connected to (see the docstring)."""
    import ray

    shapes = alive_nodes(ray.nodes()) + reported_node_types()
    path = cluster_config_path(cluster_config)
    if path is not None:
        shapes += read_node_types(path)
    return shapes


def local_shape() -> NodeShape:
    """This machine, as a local Ray instance would see it."""
    import torch

    from dml_core.data.loading import usable_cores

    return NodeShape("this machine", float(usable_cores()), float(torch.cuda.device_count()))


def check_fits(request: Resources, shapes: Sequence[NodeShape], source: str) -> None:
    """One-line `SweepError` unless some node shape holds ``request``."""
    if any(s.holds(request) for s in shapes):
        return
    seen = sorted({s.describe() for s in shapes}) or ["none known"]
    raise SweepError(
        f"{source}: sweep.resources_per_trial: {request.cpu:g} CPU + {request.gpu:g} GPU per trial fits no single "
        f"node, and a trial runs on one node; nodes: {'; '.join(seen)}"
    )
