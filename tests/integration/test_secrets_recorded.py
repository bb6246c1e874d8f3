"""Nothing a run records (manifest, artifacts, stored parameters, logs) carries a credential."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from flows.train import train
from tests.prefect_api import http
from tests.train_helpers import LocalHttpServer, original_layout_frame

SECRETS = ("hunter2", "TOKENVALUE42")


def test_http_credentials_in_the_data_url_are_redacted_everywhere(
    prefect_server: Any, tmp_path: Path
) -> None:
    csv = tmp_path / "d.csv"
    original_layout_frame(classes=3, per_class=6, features=3).to_csv(csv, index=False)
    query = "/d.csv?token=TOKENVALUE42&part=1"
    with LocalHttpServer({query: csv.read_bytes()}) as server:
        url = f"http://reader:hunter2@127.0.0.1:{server.port}{query}"
        state = train(
            data=url,
            models=["lda"],
            folds=2,
            destination=str(tmp_path / "store"),
            return_state=True,
        )
    assert state.is_completed(), state.message
    manifest_text = next((tmp_path / "store").rglob("manifest.json")).read_text()
    manifest = json.loads(manifest_text)
    assert manifest["data"]["source"].endswith("/d.csv?token=REDACTED&part=1")
    run_id = str(state.state_details.flow_run_id)
    api = prefect_server.api_url
    run = http.get(f"{api}/flow_runs/{run_id}").json()
    artifacts = http.post(
        f"{api}/artifacts/filter", json={"artifacts": {"flow_run_id": {"any_": [run_id]}}}
    ).json()
    logs = http.post(
        f"{api}/logs/filter", json={"logs": {"flow_run_id": {"any_": [run_id]}}}
    ).json()
    recorded = {
        "manifest": manifest_text,
        "parameters": json.dumps(run["parameters"]),
        "artifacts": json.dumps(artifacts),
        "logs": json.dumps(logs),
    }
    for where, text in recorded.items():
        for secret in SECRETS:
            assert secret not in text, f"{secret} recorded in {where}"
    assert "127.0.0.1" in recorded["parameters"]  # redacted, not dropped
