"""Stopping a fan-out's children against a real Prefect server (README "Scaling out").

Children in every state a parent can leave behind: Scheduled, Pending (its process or pod not yet
running the flow), Running, already final. No worker runs here, so nothing stops a Running child
but `stop_children`'s bounded wait; the Pending one shows the case that left children Cancelling
for minutes through a real worker (its runner missed the Cancelling event).
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from kubetrain.training.fanout import Child, stop_children
from tests.prefect_api import api_post, http


class ListLog:
    """A logger that keeps its messages."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def info(self, message: str, *args: object) -> None:
        self.lines.append(message % args)

    warning = info


def _run_in(api: str, flow_id: str, name: str, *path: str) -> str:
    """A flow run taken through the given state types (forced, as its worker and engine would)."""
    run = api_post(
        api, "/flow_runs/", {"flow_id": flow_id, "name": name, "state": {"type": "SCHEDULED"}}
    )
    for state in path:
        api_post(
            api, f"/flow_runs/{run['id']}/set_state", {"state": {"type": state}, "force": True}
        )
    return str(run["id"])


def _history(api: str, run_id: str) -> list[tuple[str, str]]:
    resp = http.get(f"{api}/flow_run_states/", params={"flow_run_id": run_id}, timeout=30)
    assert resp.status_code == 200, resp.text
    states = sorted(resp.json(), key=lambda s: s["timestamp"])
    return [(s["type"], s["message"] or "") for s in states]


def _child(name: str, run_id: str, done: bool = False) -> Child:
    model, _, fold = name.removeprefix("fit-").removesuffix("-final").partition("-fold-")
    return Child(
        model=model, fold=int(fold) - 1 if fold else None, parameters={}, job_variables={},
        key=name, flow_run_id=uuid.UUID(run_id), done=done,
    )  # fmt: skip


@pytest.fixture
def flow_id(prefect_server: Any) -> str:
    return str(api_post(prefect_server.api_url, "/flows/", {"name": "train-fit"})["id"])


def test_every_child_is_cancelled_and_one_that_never_started_ends_cancelled(
    prefect_server: Any, flow_id: str
) -> None:
    api = prefect_server.api_url
    runs = {
        "fit-a-fold-1": _run_in(api, flow_id, "fit-a-fold-1"),  # queued
        "fit-a-fold-2": _run_in(api, flow_id, "fit-a-fold-2", "PENDING"),  # being started
        "fit-b-final": _run_in(api, flow_id, "fit-b-final", "PENDING", "RUNNING"),  # fitting
        "fit-b-fold-1": _run_in(api, flow_id, "fit-b-fold-1", "PENDING", "RUNNING", "FAILED"),
        "fit-a-final": _run_in(api, flow_id, "fit-a-final", "PENDING", "RUNNING", "COMPLETED"),
    }
    children = [_child(name, run_id, done=name == "fit-a-final") for name, run_id in runs.items()]
    log = ListLog()

    stop_children(children, log, settle=4.0, handover=1.0, poll=0.2)

    final = {name: _history(api, run_id) for name, run_id in runs.items()}
    assert final["fit-a-fold-1"][-1][0] == "CANCELLED"
    assert "CANCELLING" not in [t for t, _ in final["fit-a-fold-1"]]  # nothing there to stop
    # Fenced first (it can no longer start its flow), then Cancelled by the parent.
    types = [t for t, _ in final["fit-a-fold-2"]]
    assert types[-2:] == ["CANCELLING", "CANCELLED"], final["fit-a-fold-2"]
    assert "never started" in final["fit-a-fold-2"][-1][1]
    # A started child is its runner's to stop: Cancelling, and the parent stopped waiting.
    assert final["fit-b-final"][-1][0] == "CANCELLING"
    assert any("still stopping" in line and "fit-b-final" in line for line in log.lines), log
    # Final or done children are left as they are.
    assert final["fit-b-fold-1"][-1][0] == "FAILED"
    assert final["fit-a-final"][-1][0] == "COMPLETED"
    assert sorted(line for line in log.lines if line.startswith("cancelled ")) == [
        "cancelled fit-a-fold-1", "cancelled fit-a-fold-2", "cancelled fit-b-final",
    ]  # fmt: skip


def test_a_cancelling_run_cannot_start_its_flow(prefect_server: Any, flow_id: str) -> None:
    # stop_children relies on this server rule: a fenced child never starts fitting later.
    api = prefect_server.api_url
    run_id = _run_in(api, flow_id, "fit-c-final", "PENDING", "CANCELLING")
    answer = api_post(api, f"/flow_runs/{run_id}/set_state", {"state": {"type": "RUNNING"}})
    assert answer["status"] == "REJECT", answer
    assert _history(api, run_id)[-1][0] == "CANCELLING"
