"""The content key means "the same numbers": every setting either leaves a run's numbers bitwise
equal (the fields `dml_core.identity` declares result-neutral, each trained both ways here) or
changes the key (thread count, device, kNN backend: fixed by the plan before keying)."""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from dml_core.config import config_from_dict
from dml_core.data.fingerprint import data_fingerprint
from dml_core.identity import NOT_RESULT_FIELDS, content_key
from sweep.pending import identity
from sweep.plan import load_plan
from sweep_testlib import TINY_DIGITS, write_yaml

# One changed value per result-neutral field. A field added to NOT_RESULT_FIELDS needs one here.
NEUTRAL_CHANGES: dict[str, Any] = {
    "name": "renamed",
    "sweep": {"seeds": [1, 2]},
    "data.num_workers": 2,
    "data.eval_batch_size": 7,
    "data.cache_dir": "CACHE",  # a folder under tmp_path
    "data.download": True,
    "train.checkpoint": False,
}

# Clustering on: k-means is part of what must not move.
RAW: dict[str, Any] = {**TINY_DIGITS, "eval": {"clustering": True, "kmeans_iters": 5}}


def _with(raw: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    out = copy.deepcopy(raw)
    *parents, leaf = dotted.split(".")
    node = out
    for p in parents:
        node = node.setdefault(p, {})
    node[leaf] = value
    return out


def _numbers(raw: dict[str, Any], out_dir: Path) -> dict[str, float]:
    from dml_core.training import fit

    return {k: v for k, v in fit(config_from_dict(raw), out_dir=out_dir).metrics.items() if k != "time_s"}


def _key(raw: dict[str, Any]) -> str:
    cfg = config_from_dict(raw)
    return content_key(cfg.to_dict(), data_fingerprint(cfg.data))


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, float]:
    return _numbers(RAW, tmp_path_factory.mktemp("reference") / "run")


def test_every_result_neutral_field_has_its_check() -> None:
    assert set(NEUTRAL_CHANGES) == set(NOT_RESULT_FIELDS)


@pytest.mark.parametrize("field", sorted(NEUTRAL_CHANGES))
def test_a_result_neutral_field_leaves_every_number_bitwise_equal(field: str, reference: dict[str, float],
                                                                  tmp_path: Path) -> None:
    value = NEUTRAL_CHANGES[field]
    value = str(tmp_path / value) if value == "CACHE" else value
    changed = _with(RAW, field, value)
    assert _key(changed) == _key(RAW)
    assert _numbers(changed, tmp_path / "run") == reference


def test_the_thread_count_is_in_the_key(tmp_path: Path) -> None:
    """1 and 2 intra-op threads sum convolution gradients in another order (Omniglot, 1 epoch of
    30 iterations: R@1 0.5795 vs 0.5788), so they are other results."""
    assert _key(_with(RAW, "train.num_threads", 2)) != _key(RAW)
    # Unset, a sweep trial gets its reserved cores: the key follows resources_per_trial.cpu.
    keys = {}
    for cpu in (1, 2):
        plan = load_plan(write_yaml(tmp_path / f"c{cpu}.yaml", {"seeds": [0], "resources_per_trial": {"cpu": cpu}},
                                    train={**TINY_DIGITS["train"], "num_threads": None}))
        ident = identity(plan, plan.final_trials()[0])
        assert ident.config["train"]["num_threads"] == cpu
        keys[cpu] = ident.content_key
    assert keys[1] != keys[2]


def test_auto_device_and_backend_are_resolved_before_keying(tmp_path: Path) -> None:
    """`auto` is what the trial will run with: cuda and torch k-means when it asks for a GPU, else
    cpu and faiss (Ray does not hide a node's GPUs from a trial that asks for none)."""
    seen = {}
    for gpu in (0, 1):
        plan = load_plan(write_yaml(tmp_path / f"g{gpu}.yaml", {"seeds": [0], "resources_per_trial": {"gpu": gpu}},
                                    train={**TINY_DIGITS["train"], "device": "auto"},
                                    eval={**TINY_DIGITS["eval"], "knn_backend": "auto"}))
        ident = identity(plan, plan.final_trials()[0])
        seen[gpu] = (ident.config["train"]["device"], ident.config["eval"]["knn_backend"], ident.content_key)
    assert seen[0][:2] == ("cpu", "faiss") and seen[1][:2] == ("cuda", "torch")
    assert seen[0][2] != seen[1][2]
    assert _key(_with(RAW, "eval.knn_backend", "torch")) != _key(_with(RAW, "eval.knn_backend", "faiss"))


def test_a_cell_that_sets_auto_is_resolved_too(tmp_path: Path) -> None:
    sweep = {"seeds": [0], "resources_per_trial": {"gpu": 0},
             "arms": {"cpu": {"train.device": "cpu"}, "auto": {"train.device": "auto", "eval.knn_backend": "auto"}}}
    plan = load_plan(write_yaml(tmp_path / "a.yaml", sweep))
    idents = {s.arm: identity(plan, s) for s in plan.final_trials()}
    assert {a: (i.config["train"]["device"], i.config["eval"]["knn_backend"]) for a, i in idents.items()} == {
        "cpu": ("cpu", "faiss"), "auto": ("cpu", "faiss")}
    assert idents["cpu"].content_key == idents["auto"].content_key  # the same run, whichever way it is written


def test_the_plans_backend_rule_is_the_evaluators(tmp_path: Path) -> None:
    from dml_core.evaluation.knn import resolve_backend

    for gpu, device in ((0, "cpu"), (1, "cuda")):
        plan = load_plan(write_yaml(tmp_path / f"r{gpu}.yaml", {"seeds": [0], "resources_per_trial": {"gpu": gpu}}))
        assert plan.base["eval"]["knn_backend"] == resolve_backend("auto", device)
