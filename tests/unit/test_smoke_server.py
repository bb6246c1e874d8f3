from __future__ import annotations

from prefect import flow

from tests.prefect_api import http


@flow(name="smoke")
def smoke_flow(x: int) -> int:
    return x + 1


def test_flow_runs_against_real_server(prefect_server):
    state = smoke_flow(1, return_state=True)
    assert state.result() == 2
    # This run, not any completed run another test left on the shared server.
    run_id = state.state_details.flow_run_id
    run = http.get(f"{prefect_server.api_url}/flow_runs/{run_id}").json()
    assert run["state_type"] == "COMPLETED"
    assert run["parameters"] == {"x": 1}
    flow = http.get(f"{prefect_server.api_url}/flows/{run['flow_id']}").json()
    assert flow["name"] == "smoke"
