from __future__ import annotations

import httpx
from prefect import flow


@flow(name="smoke")
def smoke_flow(x: int) -> int:
    return x + 1


def test_flow_runs_against_real_server(prefect_server):
    assert smoke_flow(1) == 2
    runs = httpx.post(f"{prefect_server.api_url}/flow_runs/filter", json={}).json()
    assert any(r["state_type"] == "COMPLETED" for r in runs)
