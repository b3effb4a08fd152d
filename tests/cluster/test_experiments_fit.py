"""Every shipped experiment can run where it is meant to: its trial fits ONE node type of
cluster.yaml (GPU sweeps) or a 2-core machine (CPU-only sweeps), with fewer loader workers than
the trial has CPUs. Offline: node types state their resources in cluster.yaml."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from cluster_harness import REPO_ROOT
from sweep.plan import load_plan
from sweep.resources import NodeShape, check_fits, read_node_types
from sweep.spec import SweepError

EXPERIMENTS = sorted((REPO_ROOT / "experiments").glob("*.yaml"))
LAPTOP = NodeShape("a 2-core machine", 2, 0)


def sweep_yamls() -> list[Path]:
    return [p for p in EXPERIMENTS if "sweep" in (yaml.safe_load(p.read_text()) or {})]


def test_cluster_yaml_states_every_node_types_resources() -> None:
    config = yaml.safe_load((REPO_ROOT / "cluster.yaml").read_text())
    for name, node_type in config["available_node_types"].items():
        assert {"CPU", "GPU", "memory"} <= set(node_type.get("resources", {})), name
    shapes = read_node_types(REPO_ROOT / "cluster.yaml")
    assert any(s.gpu >= 1 for s in shapes)


def test_some_experiment_ships_and_the_check_can_fail() -> None:
    assert len(sweep_yamls()) >= 5
    plan = load_plan(sweep_yamls()[0], ["sweep.resources_per_trial.cpu=64"])
    with pytest.raises(SweepError, match="fits no single node"):
        check_fits(plan.spec.resources_per_trial, read_node_types(REPO_ROOT / "cluster.yaml") + [LAPTOP], plan.source)


@pytest.mark.parametrize("path", sweep_yamls(), ids=lambda p: p.name)
def test_trial_fits_a_node_and_loader_workers_fit_the_trial(path: Path) -> None:
    plan = load_plan(path)
    request = plan.spec.resources_per_trial
    shapes = read_node_types(REPO_ROOT / "cluster.yaml") if request.gpu > 0 else [LAPTOP]
    check_fits(request, shapes, plan.source)
    workers = plan.base["data"]["num_workers"]
    assert workers is not None and workers < request.cpu, (workers, request.cpu)
