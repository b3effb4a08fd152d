"""`Tracker.log_text`: a run's text artifacts (config.yaml, metrics.json) land where
`MlflowClient.log_text` puts them, with the same content; for a run this tracker made, without
the client's look-up of the run (a query per artifact, a fifth of a trial's MLflow CPU)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient

from sweep.tracker import Tracker


def artifacts(client: MlflowClient, run_id: str, dest: Path) -> dict[str, str]:
    out = {}
    for item in client.list_artifacts(run_id) + client.list_artifacts(run_id, "sub"):
        if not item.is_dir:
            out[item.path] = Path(client.download_artifacts(run_id, item.path, str(dest))).read_text(encoding="utf-8")
    return out


def test_text_artifacts_as_the_client_writes_them(tmp_path: Path, tracking_uri: str,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    tracker = Tracker(tracking_uri, f"artifacts-{tmp_path.name}")
    ours = tracker.start_run("ours", {"label": "a"}, {"p": 1})
    theirs = tracker.start_run("theirs", {"label": "b"}, {"p": 1})
    texts = {"config.yaml": "model:\n  lr: 0.001\n", "sub/metrics.json": '{"final": {"r": "\\u00e9"}}'}
    for path, text in texts.items():
        tracker.client.log_text(theirs, text, path)

    def no_lookup(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the run was looked up")

    with monkeypatch.context() as m:
        m.setattr(tracker.client, "get_run", no_lookup)
        m.setattr(tracker.client._tracking_client, "get_run", no_lookup)
        for path, text in texts.items():
            tracker.log_text(ours, text, path)
    client = MlflowClient(tracking_uri)
    assert artifacts(client, ours, tmp_path / "ours") == artifacts(client, theirs, tmp_path / "theirs") == texts

    # A run this tracker did not make (an earlier driver's): through the client, same place.
    other = Tracker(tracking_uri, tracker.experiment)
    other.log_text(ours, "again", "sub/again.txt")
    assert artifacts(client, ours, tmp_path / "again")["sub/again.txt"] == "again"


def test_config_yaml_text_is_what_safe_dump_writes() -> None:
    # A run's config.yaml is emitted by libyaml (a fifth of the CPU of PyYAML's own emitter); the
    # representer is the same, so the text must be too -- checked on every shipped experiment.
    import yaml

    from sweep.plan import load_plan, trial_config
    from sweep.trial_runs import _YAML_DUMPER

    repo = Path(__file__).resolve().parents[2]
    checked = 0
    for path in sorted((repo / "experiments").glob("*.yaml")):
        plan = load_plan(path)
        for spec in plan.final_trials()[:2]:
            config = trial_config(plan.base, spec, None, str(path)).model_dump(mode="json")
            assert yaml.dump(config, Dumper=_YAML_DUMPER, sort_keys=False) == yaml.safe_dump(config, sort_keys=False), path
            checked += 1
    assert checked >= 10
