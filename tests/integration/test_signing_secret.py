"""The signing Secret in the flow-run pod: rendered by prefect-kubernetes, read like the kubelet.

The job variable `signing_secret_name` (default `kubetrain-signing`) names an optional Secret;
its `signing.pem` / `verify.pem` keys reach the pod as KUBETRAIN_SIGNING_KEY_DATA /
KUBETRAIN_VERIFY_KEY_DATA through `secretKeyRef` with `optional: true`. Two runs of
`train-adhoc` go through the real Kubernetes worker (recording stand-in API); their pods are
replayed locally, one with the Secret (the version's manifest is signed with that key) and one
without (the run completes unsigned, as before signing was set up).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from kubetrain.k8s import WorkPoolError, check_job_variables, pool_template, schema_errors
from kubetrain.registry.signing import SIGNATURE, verify_manifest
from kubetrain.store import open_store
from tests.kube_helpers import (
    TEST_IMAGE,
    ensure_project_deployed,
    flow_run_state,
    record_worker_submissions,
    render_deployment_job,
    replay_pod_locally,
)
from tests.prefect_api import http

SECRET_ENV = {
    "KUBETRAIN_SIGNING_KEY_DATA": "signing.pem",
    "KUBETRAIN_VERIFY_KEY_DATA": "verify.pem",
}


def _secret_refs(job: dict[str, Any]) -> dict[str, dict[str, Any]]:
    env = job["spec"]["template"]["spec"]["containers"][0]["env"]
    return {e["name"]: e["valueFrom"]["secretKeyRef"] for e in env if "valueFrom" in e}


@pytest.mark.parametrize("name", ["train-nightly", "predict-adhoc"])
def test_rendered_job_reads_the_optional_signing_secret(name: str) -> None:
    job = render_deployment_job(name)
    refs = _secret_refs(job)
    for env_name, key in SECRET_ENV.items():
        assert refs[env_name] == {"name": "kubetrain-signing", "key": key, "optional": True}
    values = {e["name"]: e for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert "value" not in values["KUBETRAIN_SIGNING_KEY_DATA"]  # never key text in the Job
    assert schema_errors(job) == []


def test_a_run_can_name_another_signing_secret_and_a_bad_name_is_refused() -> None:
    job = render_deployment_job(
        "train-adhoc", flow_run_job_variables={"signing_secret_name": "letters-signing"}
    )
    assert {r["name"] for r in _secret_refs(job).values()} == {"letters-signing"}
    template = pool_template("prod", TEST_IMAGE)
    with pytest.raises(WorkPoolError, match="signing_secret_name"):
        check_job_variables(template, {"signing_secret_name": "Not_A_Secret"})
    form = template["variables"]["properties"]["signing_secret_name"]
    assert form["title"]
    assert "signing.pem" in form["description"]


def _create_run(api: str, deployment_id: str, destination: str, experiment: str) -> str:
    resp = http.post(
        f"{api}/deployments/{deployment_id}/create_flow_run",
        json={
            "parameters": {"models": ["lda"], "destination": destination, "experiment": experiment},
            "job_variables": {"cpu_limit": "1"},
        },
        timeout=30,
    )
    assert resp.status_code == 201, resp.text
    return str(resp.json()["id"])


def test_pod_with_the_secret_signs_and_pod_without_it_does_not(
    prefect_server: Any, tmp_path: Path
) -> None:
    api = prefect_server.api_url
    deployment_id = ensure_project_deployed(api)["train-adhoc"]
    store = tmp_path / "models"
    signed_run = _create_run(api, deployment_id, str(store), "signed")
    unsigned_run = _create_run(api, deployment_id, str(store), "unsigned")
    jobs = record_worker_submissions("kubetrain-k8s", api, tmp_path / "worker")
    by_run = {j["metadata"]["labels"]["prefect.io/flow-run-id"]: j for j in jobs}

    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    ssh_files = {"id": b"unused: the store is a folder", "known_hosts": b""}
    for run_id, secrets in (
        (signed_run, {"kubetrain-sftp": ssh_files, "kubetrain-signing": {"signing.pem": pem}}),
        (unsigned_run, {"kubetrain-sftp": ssh_files}),
    ):
        proc = replay_pod_locally(by_run[run_id], secret_files=secrets, workdir=tmp_path / run_id)
        state = flow_run_state(api, run_id)
        assert state["type"] == "COMPLETED", f"{state}\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}"
        assert pem.decode() not in proc.stdout + proc.stderr

    with open_store(str(store)) as opened:
        signed = opened.read_manifest("signed", opened.latest("signed") or "")
        unsigned = opened.read_manifest("unsigned", opened.latest("unsigned") or "")
    verify_manifest(signed, private.public_key(), "the signed run's manifest")
    assert SIGNATURE not in unsigned
