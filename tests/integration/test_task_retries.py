"""Retries a user can see: a transient I/O failure shows as AwaitingRetry in the run's states;
a permanent one fails at once, with its own message as the flow run's state message."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any
from uuid import UUID

from flows.train import train
from tests.train_helpers import LocalHttpServer, original_layout_frame


async def _task_run_states(flow_run_id: UUID, task_name: str) -> list[list[str]]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    async with get_client() as client:
        runs = await client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        )
        histories = []
        for run in runs:
            if run.task_key.startswith(task_name.replace("-", "_")) or run.name.startswith(
                task_name
            ):
                states = await client.read_task_run_states(run.id)
                histories.append([str(s.name) for s in states])
        return histories


def _csv_bytes(tmp_path: Path) -> bytes:
    path = tmp_path / "d.csv"
    original_layout_frame(classes=3, per_class=6, features=3).to_csv(path, index=False)
    return path.read_bytes()


def _train(data: str, destination: Path) -> Any:
    return train(
        data=data, models=["lda"], folds=2, destination=str(destination), return_state=True
    )


def test_transient_http_failure_is_a_visible_task_retry(
    prefect_server: Any, tmp_path: Path
) -> None:
    with LocalHttpServer({"/d.csv": _csv_bytes(tmp_path)}, fail_first=1, fail_status=503) as server:
        state = _train(server.url("/d.csv"), tmp_path / "store")
    assert state.is_completed(), state.message
    assert len(server.requests) == 2
    histories = asyncio.run(_task_run_states(state.state_details.flow_run_id, "load-data"))
    assert len(histories) == 1, histories
    assert "AwaitingRetry" in histories[0], histories[0]
    assert histories[0][-1] == "Completed"


def test_permanent_http_failure_fails_at_once_with_its_message(
    prefect_server: Any, tmp_path: Path
) -> None:
    with LocalHttpServer({}) as server:
        state = _train(server.url("/missing.csv"), tmp_path / "store")
    assert state.is_failed()
    assert len(server.requests) == 1
    # The flow run's own message is the error's text, not an engine summary.
    assert state.message.startswith("'http://127.0.0.1:"), state.message
    assert "HTTP 404 Not Found; check the URL" in state.message
    histories = asyncio.run(_task_run_states(state.state_details.flow_run_id, "load-data"))
    assert len(histories) == 1
    assert "AwaitingRetry" not in histories[0], histories[0]
    assert not (tmp_path / "store").exists() or not any((tmp_path / "store").rglob("manifest.json"))
