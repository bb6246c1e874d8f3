"""kubetrain/registry/gate.py: promote only what is not worse; the train flow's gate end to end."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from kubetrain.registry import aliases
from kubetrain.registry.gate import GateConfig, GateConfigError, check_gate, run_gate
from kubetrain.store import open_store
from tests.prefect_api import http
from tests.registry_helpers import EXP, make_version, version_name
from tests.train_helpers import write_original_layout_csv

V1, V2, V3 = version_name(1), version_name(2), version_name(3)
GATE = GateConfig(alias="production", model="lda", metric="accuracy", max_drop=0.0)


def test_gate_refuses_a_worse_version_and_accepts_a_better_one(tmp_path: Path) -> None:
    with open_store(str(tmp_path / "store")) as store:
        make_version(store, tmp_path, V1, {"lda": 0.80})
        first, event = run_gate(store, EXP, V1, GATE, "nightly")
        assert first.promoted
        assert event is not None
        assert "named no complete version" in first.reason

        make_version(store, tmp_path, V2, {"lda": 0.79})
        worse, event = run_gate(store, EXP, V2, GATE, "nightly")
        assert not worse.promoted
        assert event is None
        assert (worse.candidate_score, worse.current, worse.current_score) == (0.79, V1, 0.80)
        assert aliases.read_alias(store, EXP, "production") == V1
        assert store.latest(EXP) == V2  # published all the same

        allowed = GateConfig("production", "lda", "accuracy", max_drop=0.02)
        assert run_gate(store, EXP, V2, allowed, "nightly")[0].promoted
        make_version(store, tmp_path, V3, {"lda": 0.81})
        better, _ = run_gate(store, EXP, V3, GATE, "nightly")
        assert better.promoted
        assert aliases.read_alias(store, EXP, "production") == V3
        moves = [(e.from_version, e.to_version) for e in aliases.history(store, EXP)]
        assert moves == [(None, V1), (V1, V2), (V2, V3)]
        assert all(e.why.startswith("quality gate: ") for e in aliases.history(store, EXP))


def test_gate_fails_closed_without_a_candidate_score(tmp_path: Path) -> None:
    with open_store(str(tmp_path / "store")) as store:
        make_version(store, tmp_path, V1, {"nn": 0.9})
        decision, _ = run_gate(store, EXP, V1, GATE, "x")
    assert not decision.promoted
    assert "no finite lda accuracy" in decision.reason


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"model": "svc"}, "gate_model 'svc' is not one of the trained models"),
        ({"metric": "f1_macro"}, "gate_metric 'f1_macro' is not computed"),
        ({"max_drop": -0.1}, "gate_max_drop must be"),
        ({"max_drop": float("nan")}, "gate_max_drop must be"),
        ({"alias": "LATEST"}, "promote_to: alias name 'LATEST' is reserved"),
    ],
)
def test_gate_parameters_are_checked_before_training(kwargs: dict[str, Any], message: str) -> None:
    arguments: dict[str, Any] = {"model": None, "metric": "accuracy", "max_drop": 0.0}
    arguments.update(kwargs)
    alias = arguments.pop("alias", "production")
    with pytest.raises(GateConfigError, match=message):
        check_gate(alias, **arguments, models=["lda", "nn"], metrics=["accuracy"])


def test_gate_defaults() -> None:
    assert check_gate(None, None, "accuracy", 0.0, ["lda"], ["accuracy"]) is None
    assert check_gate("production", None, "accuracy", 0.0, ["nn", "lda"], ["f1_macro"]) == (
        GateConfig("production", "nn", "accuracy", 0.0)
    )


def test_train_flow_gates_the_alias_end_to_end(prefect_server, tmp_path: Path) -> None:
    """Two real train runs: the better first one is promoted, the worse second one is not."""
    from flows.train import train

    data = write_original_layout_csv(tmp_path / "letters.csv", classes=4, per_class=10, features=4)
    destination = str(tmp_path / "store")
    common: dict[str, Any] = {
        "data": str(data),
        "models": ["lda"],
        "folds": 3,
        "destination": destination,
        "experiment": EXP,
        "promote_to": "production",
        "gate_model": "lda",
    }
    first = train(**common)
    # Make the second run the worse one for sure: raise the promoted version's recorded score
    # above anything a run can reach (same data and settings would otherwise score the same).
    manifest_path = tmp_path / "store" / EXP / first.version / "manifest.json"
    with open_store(destination) as store:
        assert aliases.read_alias(store, EXP, "production") == first.version
    bar = json.loads(manifest_path.read_text())
    bar["models"]["lda"]["cv"]["accuracy"]["mean"] = 1.5
    manifest_path.write_text(json.dumps(bar))
    second = train(**common)
    with open_store(destination) as store:
        assert aliases.read_alias(store, EXP, "production") == first.version
        assert store.latest(EXP) == second.version

    decisions = []
    for outcome in (first, second):
        run_id = outcome.manifest["flow_run_id"]
        artifacts = http.post(
            f"{prefect_server.api_url}/artifacts/filter",
            json={
                "artifacts": {"flow_run_id": {"any_": [run_id]}, "key": {"any_": ["quality-gate"]}}
            },
        ).json()
        assert len(artifacts) == 1
        table = artifacts[0]["data"]
        decisions.append((json.loads(table) if isinstance(table, str) else table)[0])
    assert decisions[0]["promoted"] is True
    assert decisions[1]["promoted"] is False
    assert decisions[1]["current_score"] == 1.5
    assert (
        decisions[1]["candidate_score"]
        == second.manifest["models"]["lda"]["cv"]["accuracy"]["mean"]
    )
    wanted = "quality gate @production: kept the alias, did not promote"
    deadline = time.monotonic() + 20
    while True:  # run logs reach the server in batches
        logs = http.post(
            f"{prefect_server.api_url}/logs/filter",
            json={"logs": {"flow_run_id": {"any_": [second.manifest["flow_run_id"]]}}},
        ).json()
        if any(wanted in log["message"] for log in logs) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert any(wanted in log["message"] for log in logs)
