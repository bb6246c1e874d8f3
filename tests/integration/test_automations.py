"""The shipped automations (deployments/automations) against a real Prefect server on 127.0.0.1:
created, idempotent, updated when changed, and the stuck-Pending one firing."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from typing import Any

import pytest

from kubetrain.k8s import WorkPoolError
from kubetrain.k8s.automations import (
    load_automations,
    resolve_notify_block,
    upsert_automations,
)
from tests.prefect_api import api_post, http


def test_automations_are_created_then_unchanged_then_updated(prefect_server: Any) -> None:
    items = load_automations("kubetrain-k8s-auto")
    names = {a.name for a in items}
    # Named after the pool: pools on one server do not overwrite each other's automations.
    assert names == {"kubetrain-k8s-auto-stuck-pending", "kubetrain-k8s-auto-stuck-running"}
    assert asyncio.run(upsert_automations(items)) == dict.fromkeys(names, "created")
    again = load_automations("kubetrain-k8s-auto")
    assert asyncio.run(upsert_automations(again)) == dict.fromkeys(names, "unchanged")

    changed = load_automations("kubetrain-k8s-auto")
    changed[0].trigger.within = timedelta(minutes=20)
    result = asyncio.run(upsert_automations(changed))
    assert result[changed[0].name] == "updated"
    stored = http.post(f"{prefect_server.api_url}/automations/filter", json={}, timeout=30).json()
    mine = [a for a in stored if a["name"] in names]
    assert len(mine) == 2  # updated in place, not duplicated
    pending = next(a for a in mine if a["name"] == changed[0].name)
    assert pending["trigger"]["within"] == 1200
    assert pending["trigger"]["match_related"]["prefect.resource.name"] == "kubetrain-k8s-auto"


def test_notify_automation_needs_an_existing_block(prefect_server: Any) -> None:
    from prefect.blocks.notifications import CustomWebhookNotificationBlock

    with pytest.raises(WorkPoolError, match=r"no custom-webhook block named 'nope'"):
        asyncio.run(resolve_notify_block("custom-webhook/nope"))
    with pytest.raises(WorkPoolError, match=r"BLOCK_TYPE/NAME"):
        asyncio.run(resolve_notify_block("just-a-name"))
    CustomWebhookNotificationBlock(name="kubetrain", url="http://127.0.0.1:9/hook").save(
        "kubetrain-alerts", overwrite=True
    )
    block_id = asyncio.run(resolve_notify_block("custom-webhook/kubetrain-alerts"))
    items = load_automations("kubetrain-k8s-auto", block_id)
    (notify,) = [a for a in items if a.name == "kubetrain-k8s-auto-nightly-failed"]
    assert notify.actions[0].block_document_id == block_id
    assert asyncio.run(upsert_automations([notify])) == {notify.name: "created"}


def test_stuck_pending_automation_crashes_the_run(prefect_server: Any) -> None:
    api = prefect_server.api_url
    pool = "kubetrain-k8s-stuck"
    api_post(api, "/work_pools/", {"name": pool, "type": "process"})
    flow_id = api_post(api, "/flows/", {"name": "stuck-flow"})["id"]
    deployment_id = api_post(
        api, "/deployments/", {"name": "stuck", "flow_id": flow_id, "work_pool_name": pool}
    )["id"]
    (automation,) = [a for a in load_automations(pool) if a.name == f"{pool}-stuck-pending"]
    automation.trigger.within = timedelta(seconds=10)  # the shortest Prefect allows
    asyncio.run(upsert_automations([automation]))
    time.sleep(2)  # the triggers service loads automations when they change

    run_id = api_post(api, f"/deployments/{deployment_id}/create_flow_run", {})["id"]
    state = api_post(api, f"/flow_runs/{run_id}/set_state", {"state": {"type": "PENDING"}})
    assert state["status"] == "ACCEPT", state
    deadline = time.monotonic() + 90
    current: dict[str, Any] = {}
    while time.monotonic() < deadline:
        current = http.get(f"{api}/flow_runs/{run_id}", timeout=30).json()["state"]
        if current["type"] != "PENDING":
            break
        time.sleep(1)
    assert current["type"] == "CRASHED", current
    assert f"{pool}-stuck-pending" in current["message"]
