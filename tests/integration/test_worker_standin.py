"""Worker path, as far as this machine allows (a stand-in API and a local pod, not a cluster).

1. The real `prefect worker start --type kubernetes --run-once` submits the Job of a due
   flow run of `train-adhoc` to a recording stand-in Kubernetes API on 127.0.0.1.
2. The recorded Job bodies are what we render offline and valid Kubernetes (strict schema).
3. Each Job's pod command (args + env) runs as a local process with the Secret's files
   materialized in a temp dir, against the same Prefect server. The run state is read from
   the API (the exit code of `prefect flow-run execute` says nothing): COMPLETED, and the
   version is published: to the real OpenSSH sshd over SFTP with the key and known_hosts from
   the "Secret" (default suite), or to a local folder (slow: one more worker start and pod).
"""

from __future__ import annotations

import copy
import shutil
from pathlib import Path
from typing import Any

import pytest

from kubetrain.k8s import sample_flow_run_objects, schema_errors
from kubetrain.store import open_store
from tests.kube_helpers import (
    ensure_project_deployed,
    flow_run_state,
    pod_command,
    record_worker_submissions,
    render_deployment_job,
    replay_pod_locally,
    secret_mounts,
)
from tests.prefect_api import http
from tests.sshd import Sshd


def _create_run(api: str, deployment_id: str, destination: str, experiment: str) -> str:
    resp = http.post(
        f"{api}/deployments/{deployment_id}/create_flow_run",
        json={
            # small and fast: one LDA model on the bundled sample (in the image's workdir)
            "parameters": {"models": ["lda"], "destination": destination, "experiment": experiment},
            "job_variables": {"env": {"KUBETRAIN_ENV": "standin"}, "cpu_limit": "1"},
        },
        timeout=30,
    )
    assert resp.status_code == 201, resp.text
    return str(resp.json()["id"])


def _without_run_specifics(job: dict[str, Any]) -> dict[str, Any]:
    """The Job minus what differs per run/worker (ids, names, labels, Prefect env)."""
    job = copy.deepcopy(job)
    job.pop("status", None)
    job["metadata"] = {"namespace": job["metadata"]["namespace"]}
    job["spec"]["template"].pop("metadata", None)
    for container in job["spec"]["template"]["spec"]["containers"]:
        container["env"] = sorted(
            e["name"] for e in container["env"] if not e["name"].startswith("PREFECT")
        )
    return job


@pytest.mark.parametrize("destination", ["sftp", pytest.param("local", marks=pytest.mark.slow)])
def test_worker_submits_job_and_local_pod_completes_the_run(
    destination: str, prefect_server: Any, ssh_env: Sshd, remote_dir: Path, tmp_path: Path
) -> None:
    sshd = ssh_env  # this process reads the SFTP store with the same key; the pod gets files
    api = prefect_server.api_url
    deployment_id = ensure_project_deployed(api)["train-adhoc"]
    experiment = f"standin-{destination}"
    if destination == "sftp":
        remote_dir.mkdir()
        shutil.chown(remote_dir, sshd.user, sshd.user)
        url = sshd.url(remote_dir / "models")
    else:
        url = str(tmp_path / "models")
    run_id = _create_run(api, deployment_id, url, experiment)

    jobs = record_worker_submissions("kubetrain-k8s", api, tmp_path / "worker")
    by_run = {j["metadata"]["labels"]["prefect.io/flow-run-id"]: j for j in jobs}
    job = by_run[run_id]
    assert flow_run_state(api, run_id)["type"] == "PENDING"  # submitted; nothing ran it yet

    args, env = pod_command(job)
    assert args == ["prefect", "flow-run", "execute"]
    assert env["PREFECT_API_URL"] == api
    assert env["PREFECT__FLOW_RUN_ID"] == run_id
    assert env["KUBETRAIN_ENV"] == "standin"
    assert job["metadata"]["namespace"] == "kubetrain"
    assert job["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"] == "1"
    assert secret_mounts(job)["/var/run/secrets/kubetrain/ssh"]["secretName"] == "kubetrain-sftp"
    assert schema_errors(job) == []
    # The worker accepted the template with parallelism/completions moved to the Job spec.
    assert job["spec"]["parallelism"] == job["spec"]["completions"] == 1
    assert "parallelism" not in job["spec"]["template"]["spec"]

    # What the worker sent is what the offline rendering (the Rendering tests) produces.
    offline = render_deployment_job(
        "train-adhoc",
        flow_run_job_variables={"env": {"KUBETRAIN_ENV": "standin"}, "cpu_limit": "1"},
        worker_env={"PREFECT_API_URL": api},
        objects=sample_flow_run_objects(deployment_name="train-adhoc"),
    )
    assert _without_run_specifics(job) == _without_run_specifics(offline)

    # The pod, run locally: the Secret's files are the sshd's client key and known_hosts.
    proc = replay_pod_locally(
        job,
        secret_files={
            "kubetrain-sftp": {
                "id": sshd.client_key.read_bytes(),
                "known_hosts": sshd.known_hosts.read_bytes(),
            }
        },
        workdir=tmp_path / "pod",
    )
    state = flow_run_state(api, run_id)
    assert state["type"] == "COMPLETED", f"{state}\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}"

    with open_store(url) as store:
        version = store.latest(experiment)
        assert version is not None
        manifest = store.read_manifest(experiment, version)
    assert manifest["flow_run_id"] == run_id
    assert set(manifest["models"]) == {"lda"}
    if destination == "sftp":
        published = remote_dir / "models" / experiment / version
        assert {"clf_lda.joblib", "metadata.json", "manifest.json"} <= {
            p.name for p in published.iterdir()
        }


def test_deadline_sigterm_reschedules_and_limits_end_it(
    prefect_server: Any, tmp_path: Path
) -> None:
    """The pod command, replayed locally: SIGTERM (what activeDeadlineSeconds and evictions
    send) reschedules the run; the next start beyond KUBETRAIN_MAX_RESCHEDULES fails saying so;
    a run reaching its Prefect timeout (before the Job deadline) ends TimedOut, once."""
    import asyncio
    import signal

    from kubetrain.k8s import pool_template, render_job_manifest, upsert_work_pool
    from tests.kube_helpers import TEST_IMAGE, start_pod_locally, wait_for_state

    api = prefect_server.api_url
    template = pool_template("prod", TEST_IMAGE)
    asyncio.run(upsert_work_pool("kubetrain-k8s", template))
    flow_id = http.post(f"{api}/flows/", json={"name": "kubetrain-sleeper"}, timeout=30).json()[
        "id"
    ]
    resp = http.post(
        f"{api}/deployments/",
        json={
            "name": "sleeper",
            "flow_id": flow_id,
            "work_pool_name": "kubetrain-k8s",
            "entrypoint": "tests/fixtures/k8s_flows.py:sleeper",
            "pull_steps": [
                {"prefect.deployments.steps.set_working_directory": {"directory": "/opt/kubetrain"}}
            ],
        },
        timeout=30,
    )
    assert resp.status_code in (200, 201), resp.text
    deployment_id = resp.json()["id"]
    job = asyncio.run(
        render_job_manifest(template, {}, **sample_flow_run_objects(deployment_name="sleeper"))
    )
    env = pod_command(job)[1]
    assert env["PREFECT_FLOW_RUN_EXECUTE_SIGTERM_BEHAVIOR"] == "reschedule"  # with backoff 0
    secrets = {"kubetrain-sftp": {"id": b"unused", "known_hosts": b"unused"}}

    def new_run(seconds: float) -> str:
        run = http.post(
            f"{api}/deployments/{deployment_id}/create_flow_run",
            json={"parameters": {"seconds": seconds}},
            timeout=30,
        ).json()
        return str(run["id"])

    def start(run_id: str, name: str, **extra: str) -> Any:
        # What the worker does before it creates the Job: the run is Pending.
        http.post(
            f"{api}/flow_runs/{run_id}/set_state",
            json={"state": {"type": "PENDING"}, "force": True},
            timeout=30,
        ).raise_for_status()
        return start_pod_locally(
            job,
            secret_files=secrets,
            workdir=tmp_path / name,
            extra_env={"PREFECT__FLOW_RUN_ID": run_id, "PREFECT_API_URL": api, **extra},
        )

    run_id = new_run(120)
    pod = start(run_id, "pod-1")
    try:
        running = wait_for_state(api, run_id, {"RUNNING"}, timeout=120)
        assert running["type"] == "RUNNING", running
        pod.send_signal(signal.SIGTERM)
        out, _ = pod.communicate(timeout=120)
    finally:
        pod.kill()
    state = flow_run_state(api, run_id)
    # Rescheduled, exit 0: the worker would start a new Job (an eviction must not lose the run).
    assert pod.returncode == 0, out[-3000:]
    assert state["type"] == "SCHEDULED", f"{state}\n{out[-3000:]}"

    # The next start is over the limit: it fails once, with the reason.
    pod = start(run_id, "pod-2", KUBETRAIN_MAX_RESCHEDULES="0")
    out, _ = pod.communicate(timeout=300)
    state = flow_run_state(api, run_id)
    assert state["type"] == "FAILED", f"{state}\n{out[-3000:]}"
    # A user error: the state carries the reason itself, not an exception's traceback.
    assert "rescheduled 1 times" in (state["message"] or ""), f"{state}\n{out[-3000:]}"

    # The Prefect timeout ends a long run before the Job deadline would SIGTERM it.
    run_id = new_run(120)
    pod = start(run_id, "pod-3", KUBETRAIN_JOB_DEADLINE="PT6S")  # timeout: 3 s
    out, _ = pod.communicate(timeout=300)
    state = flow_run_state(api, run_id)
    assert state["type"] == "FAILED", f"{state}\n{out[-3000:]}"
    assert state["name"] == "TimedOut", state
