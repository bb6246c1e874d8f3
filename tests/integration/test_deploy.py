"""Deploy: `prefect --no-prompt deploy --all` against a real Prefect server on 127.0.0.1."""

from __future__ import annotations

import copy
import subprocess
import sys
from datetime import date, datetime, time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml

from tests.kube_helpers import (
    REPO_ROOT,
    _child_env,
    ensure_project_deployed,
    load_prefect_yaml,
    run_prefect_deploy,
)
from tests.prefect_api import api_get, http


@pytest.fixture(scope="module")
def deployed(prefect_server: Any) -> dict[str, str]:
    """{deployment name: id} after pools are created and prefect.yaml is deployed."""
    return ensure_project_deployed(prefect_server.api_url)


def _no_2am(day: date, zone: ZoneInfo) -> bool:
    before = datetime.combine(day, time(1, 0), zone).utcoffset()
    after = datetime.combine(day, time(4, 0), zone).utcoffset()
    return before != after


def test_every_deployment_in_prefect_yaml_is_registered(
    prefect_server: Any, deployed: dict[str, str]
) -> None:
    api = prefect_server.api_url
    specs = {d["name"]: d for d in load_prefect_yaml()["deployments"]}
    assert set(specs) <= set(deployed)
    for name, spec in specs.items():
        dep = api_get(api, f"/deployments/{deployed[name]}")
        assert dep["work_pool_name"] == spec["work_pool"]["name"]
        assert dep["tags"] == spec["tags"]
        assert dep["description"] == spec["description"]
        assert dep["job_variables"] == spec["work_pool"].get("job_variables", {})
        assert dep["global_concurrency_limit"]["limit"] == spec["concurrency_limit"]["limit"]
        assert dep["parameters"] == spec.get("parameters", {})
        pull = spec.get("pull") or load_prefect_yaml()["pull"]
        # `prefect deploy` fills in {{ $PWD }} (the *-local pair): the checkout it ran in.
        pull = yaml.safe_load(yaml.safe_dump(pull).replace("{{ $PWD }}", str(REPO_ROOT)))
        assert dep["pull_steps"] == pull
    nightly = api_get(api, f"/deployments/{deployed['train-nightly']}")
    (schedule,) = nightly["schedules"]
    assert schedule["schedule"]["cron"] == "0 2 * * *"
    assert schedule["schedule"]["timezone"] == "Europe/Berlin"
    assert api_get(api, f"/deployments/{deployed['train-adhoc']}")["schedules"] == []
    schema = nightly["parameter_openapi_schema"]["properties"]
    assert {"data", "models", "destination", "experiment", "folds"} <= set(schema)


def test_cron_schedule_produces_scheduled_runs(
    prefect_server: Any, deployed: dict[str, str]
) -> None:
    api, dep_id = prefect_server.api_url, deployed["train-nightly"]
    resp = http.post(f"{api}/deployments/{dep_id}/schedule", json={"min_runs": 3}, timeout=60)
    assert resp.status_code < 300, resp.text
    runs = http.post(
        f"{api}/flow_runs/filter",
        json={"deployments": {"id": {"any_": [dep_id]}}, "sort": "EXPECTED_START_TIME_ASC"},
        timeout=30,
    ).json()
    scheduled = [r for r in runs if r["state"]["type"] == "SCHEDULED"]
    assert len(scheduled) >= 3
    berlin = ZoneInfo("Europe/Berlin")
    starts = [
        datetime.fromisoformat(r["expected_start_time"]).astimezone(berlin) for r in scheduled
    ]
    # 02:00 local time; on the spring DST day 02:00 does not exist and the run moves to 03:00.
    assert all(s.minute == 0 and (s.hour == 2 or _no_2am(s.date(), berlin)) for s in starts)
    assert len({s.date() for s in starts}) == len(starts)  # one per day
    assert all(r["work_queue_name"] == "default" for r in scheduled)
    assert all(r["parameters"]["experiment"] == "letters" for r in scheduled)


def test_adhoc_run_with_parameter_and_job_variable_overrides_is_accepted(
    prefect_server: Any, deployed: dict[str, str]
) -> None:
    # The way users start it: the CLI.
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "prefect",
            "deployment",
            "run",
            "train/train-adhoc",
            "--param",
            'models=["lda"]',
            "--param",
            "folds=3",
            "--job-variable",
            'cpu_limit="1"',
            "--start-in",
            "1 hour",  # not due: the worker test's --run-once must not pick it up
        ],
        env=_child_env({"PREFECT_API_URL": prefect_server.api_url}),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    runs = http.post(
        f"{prefect_server.api_url}/flow_runs/filter",
        json={"deployments": {"id": {"any_": [deployed["train-adhoc"]]}}},
        timeout=30,
    ).json()
    run = next(r for r in runs if r["parameters"].get("folds") == 3)
    assert run["parameters"]["models"] == ["lda"]
    assert run["parameters"]["experiment"] == "letters"  # the rest from the deployment
    assert run["job_variables"] == {"cpu_limit": "1"}


@pytest.mark.parametrize(
    ("parameters", "field"),
    [
        ({"models": ["xgboost"]}, "models"),
        ({"seed": "x"}, "seed"),
        ({"shuffle": "maybe"}, "shuffle"),
        ({"metrics": "accuracy"}, "metrics"),
    ],
)
def test_bad_parameter_is_rejected(
    prefect_server: Any, deployed: dict[str, str], parameters: dict[str, Any], field: str
) -> None:
    resp = http.post(
        f"{prefect_server.api_url}/deployments/{deployed['train-adhoc']}/create_flow_run",
        json={"parameters": parameters},
        timeout=30,
    )
    if resp.status_code == 201:  # don't leave a due run for the worker test
        http.delete(f"{prefect_server.api_url}/flow_runs/{resp.json()['id']}", timeout=30)
    assert resp.status_code in (409, 422), resp.text
    assert field in resp.text


@pytest.mark.parametrize(
    ("job_variables", "field"),
    [({"cpu_limit": 2}, "cpu_limit"), ({"sftp_secret_name": ""}, "sftp_secret_name")],
)
def test_bad_job_variable_for_a_run_is_rejected(
    prefect_server: Any, deployed: dict[str, str], job_variables: dict[str, Any], field: str
) -> None:
    resp = http.post(
        f"{prefect_server.api_url}/deployments/{deployed['train-adhoc']}/create_flow_run",
        json={"job_variables": job_variables},
        timeout=30,
    )
    if resp.status_code == 201:
        http.delete(f"{prefect_server.api_url}/flow_runs/{resp.json()['id']}", timeout=30)
    assert resp.status_code in (409, 422), resp.text
    assert field in resp.text


def test_deploy_rejects_a_wrong_typed_job_variable(
    prefect_server: Any, deployed: dict[str, str], tmp_path: Path
) -> None:
    project = load_prefect_yaml()
    spec = copy.deepcopy(next(d for d in project["deployments"] if d["name"] == "train-adhoc"))
    spec["name"] = "bad-type"
    spec["work_pool"]["job_variables"]["cpu_limit"] = 2
    document = {k: v for k, v in project.items() if k != "definitions"}
    document["deployments"] = [spec]
    path = tmp_path / "bad-type.yaml"
    path.write_text(yaml.safe_dump(document))
    proc = run_prefect_deploy(prefect_server.api_url, path)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output[-3000:]
    assert "Validation failed for field 'cpu_limit'" in output, output[-3000:]
    assert "bad-type" not in _deployment_names(prefect_server.api_url)


def test_deploy_rejects_a_missing_secret_name(
    prefect_server: Any, deployed: dict[str, str]
) -> None:
    # The same server-side check `prefect deploy` hits (one CLI start is enough, see above).
    api = prefect_server.api_url
    adhoc = api_get(api, f"/deployments/{deployed['train-adhoc']}")
    body = {
        "name": "no-secret",
        "flow_id": adhoc["flow_id"],
        "work_pool_name": "kubetrain-k8s",
        "entrypoint": adhoc["entrypoint"],
        "job_variables": {**adhoc["job_variables"], "sftp_secret_name": ""},
    }
    resp = http.post(f"{api}/deployments/", json=body, timeout=30)
    assert resp.status_code == 422, resp.text
    assert "Validation failed for field 'sftp_secret_name'" in resp.text
    assert "no-secret" not in _deployment_names(api)


def _deployment_names(api: str) -> set[str]:
    resp = http.post(f"{api}/deployments/filter", json={}, timeout=30)
    resp.raise_for_status()
    return {d["name"] for d in resp.json()}
