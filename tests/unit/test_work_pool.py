"""The ensure-work-pool infra flow: pool upsert against a real Prefect server on 127.0.0.1,
manifest + Secret apply against the recording stand-in Kubernetes API (not a cluster)."""

from __future__ import annotations

import asyncio
import base64
import copy
import subprocess
from pathlib import Path
from typing import Any

import pytest

from flows.work_pool import ensure_work_pool
from kubetrain.k8s import (
    WorkPoolError,
    apply_manifests,
    load_base_job_template,
    load_environment,
    load_manifests,
    sftp_secret_manifest,
    template_for_environment,
    upsert_work_pool,
)
from tests.kube_helpers import TEST_IMAGE, StandinKubernetesApi, write_kubeconfig
from tests.prefect_api import http


@pytest.fixture
def ssh_files(tmp_path: Path) -> tuple[Path, Path]:
    """A freshly generated ed25519 key and a known_hosts line (no key material in git)."""
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    known_hosts = tmp_path / "known_hosts"
    pub = (tmp_path / "id_ed25519.pub").read_text().split()
    known_hosts.write_text(f"[127.0.0.1]:2222 {pub[0]} {pub[1]}\n")
    return key, known_hosts


def test_apply_creates_then_reports_unchanged_then_updates(
    tmp_path: Path, ssh_files: tuple[Path, Path]
) -> None:
    key, known_hosts = ssh_files
    docs = [
        *load_manifests(),
        sftp_secret_manifest("kubetrain-sftp", "kubetrain", key, known_hosts),
    ]
    with StandinKubernetesApi() as api:
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", api.url)
        first = asyncio.run(apply_manifests(docs, kubeconfig))
        assert set(first.values()) == {"created"}
        assert "Namespace/-/kubetrain" in first
        assert "Secret/kubetrain/kubetrain-sftp" in first
        # Server-side apply, as field manager kubetrain; Namespace first: the rest lives in it.
        applied = [r for r in api.requests if r.method == "PATCH"]
        assert all(r.headers["content-type"] == "application/apply-patch+yaml" for r in applied)
        assert all("fieldManager=kubetrain" in r.path for r in applied)
        paths = [r.path.split("?", 1)[0] for r in applied]
        assert paths[0] == "/api/v1/namespaces/kubetrain"
        assert (
            "/apis/rbac.authorization.k8s.io/v1/namespaces/kubetrain/roles/prefect-worker" in paths
        )
        assert "/apis/apps/v1/namespaces/kubetrain/deployments/prefect-worker" in paths
        secret = api.objects["/api/v1/namespaces/kubetrain/secrets/kubetrain-sftp"]
        assert base64.b64decode(secret["data"]["id"]) == key.read_bytes()
        assert base64.b64decode(secret["data"]["known_hosts"]) == known_hosts.read_bytes()
        assert all(r.headers.get("authorization") == "Bearer standin-token" for r in api.requests)

        second = asyncio.run(apply_manifests(docs, kubeconfig))
        assert set(second.values()) == {"unchanged"}

        changed = copy.deepcopy(docs)
        deployment = next(d for d in changed if d["kind"] == "Deployment")
        deployment["spec"]["replicas"] = 2
        third = asyncio.run(apply_manifests(changed, kubeconfig))
        assert third["Deployment/kubetrain/prefect-worker"] == "updated"
        assert [v for k, v in third.items() if k != "Deployment/kubetrain/prefect-worker"] == [
            "unchanged"
        ] * (len(docs) - 1)
        stored = api.objects["/apis/apps/v1/namespaces/kubetrain/deployments/prefect-worker"]
        assert stored["spec"]["replicas"] == 2


def test_apply_names_a_kind_the_cluster_does_not_serve(tmp_path: Path) -> None:
    doc = {"apiVersion": "v1", "kind": "Gizmo", "metadata": {"name": "g", "namespace": "x"}}
    with StandinKubernetesApi() as api:
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", api.url)
        with pytest.raises(WorkPoolError, match=r"no kind 'Gizmo' in v1"):
            asyncio.run(apply_manifests([doc], kubeconfig))


def test_secret_from_bad_files_is_refused(tmp_path: Path, ssh_files: tuple[Path, Path]) -> None:
    key, known_hosts = ssh_files
    with pytest.raises(WorkPoolError, match=r"does not exist"):
        sftp_secret_manifest("s", "kubetrain", tmp_path / "nope", known_hosts)
    with pytest.raises(WorkPoolError, match=r"not a private key"):
        sftp_secret_manifest("s", "kubetrain", known_hosts, known_hosts)
    empty = tmp_path / "empty"
    empty.write_text("")
    with pytest.raises(WorkPoolError, match=r"known_hosts file .* is empty"):
        sftp_secret_manifest("s", "kubetrain", key, empty)


def test_apply_names_a_refusal(tmp_path: Path) -> None:
    class Forbidding(StandinKubernetesApi):
        def _apply(self, path: str, body: Any) -> tuple[int, Any]:
            return 403, {"kind": "Status", "code": 403, "message": "forbidden: no rights"}

    with Forbidding() as api:
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", api.url)
        with pytest.raises(WorkPoolError, match=r"refused Namespace/-/kubetrain \(403"):
            asyncio.run(apply_manifests(load_manifests(), kubeconfig))
    with pytest.raises(WorkPoolError, match=r"kubeconfig .* does not exist"):
        asyncio.run(apply_manifests(load_manifests(), tmp_path / "missing"))


def test_pool_upsert_is_idempotent(prefect_server: Any) -> None:
    template = template_for_environment(load_base_job_template(), load_environment("dev"))
    name = "kubetrain-k8s-upsert-test"
    assert asyncio.run(upsert_work_pool(name, template)) == "created"
    assert asyncio.run(upsert_work_pool(name, template)) == "unchanged"
    changed = copy.deepcopy(template)
    changed["variables"]["properties"]["cpu_limit"]["default"] = "3"
    assert asyncio.run(upsert_work_pool(name, changed)) == "updated"
    assert asyncio.run(upsert_work_pool(name, changed)) == "unchanged"


def test_server_rejects_a_template_with_an_undeclared_variable(prefect_server: Any) -> None:
    template = copy.deepcopy(load_base_job_template())
    template["job_configuration"]["job_manifest"]["spec"]["suspend"] = "{{ suspended }}"
    with pytest.raises(WorkPoolError, match=r"rejected the base job template.*suspended"):
        asyncio.run(upsert_work_pool("kubetrain-k8s-bad-template", template))


def test_ensure_work_pool_flow_twice_then_unchanged(
    prefect_server: Any, tmp_path: Path, ssh_files: tuple[Path, Path]
) -> None:
    key, known_hosts = ssh_files
    with StandinKubernetesApi() as api:
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", api.url)
        kwargs: dict[str, Any] = {
            "pool": "kubetrain-k8s-flow-test",
            "environment": "prod",
            "image": TEST_IMAGE,
            "kubeconfig": str(kubeconfig),
            "ssh_key": str(key),
            "known_hosts": str(known_hosts),
        }
        first_state = ensure_work_pool(**kwargs, return_state=True)
        first = first_state.result()
        second = ensure_work_pool(**kwargs)
    assert first["pool"] == "created"
    assert set(first["manifests"].values()) == {"created"}
    assert second["pool"] == "unchanged"
    assert set(second["manifests"].values()) == {"unchanged"}
    assert "/api/v1/namespaces/kubetrain/secrets/kubetrain-sftp" in api.objects
    # Each step is a task run of its own, visible in the UI.

    runs = http.post(
        f"{prefect_server.api_url}/task_runs/filter",
        json={"flow_runs": {"id": {"any_": [str(first_state.state_details.flow_run_id)]}}},
        timeout=30,
    ).json()
    steps = {r["name"].rsplit("-", 1)[0] for r in runs}
    assert steps == {
        "load-template",
        "validate-template",
        "load-manifests",
        "upsert-work-pool",
        "apply-manifests",
        "load-automations",
        "apply-automations",
        "check-sftp-secret",
    }
    assert set(first["automations"].values()) == {"created"}
    assert set(second["automations"].values()) == {"unchanged"}


def test_ensure_work_pool_refuses_half_a_secret(prefect_server: Any, tmp_path: Path) -> None:
    with pytest.raises(WorkPoolError, match=r"both ssh_key and known_hosts"):
        ensure_work_pool(pool="kubetrain-k8s-half", ssh_key=str(tmp_path / "k"))


def test_ensure_work_pool_refuses_an_invalid_template_before_creating_the_pool(
    prefect_server: Any, tmp_path: Path
) -> None:
    import json

    template = copy.deepcopy(load_base_job_template())
    container = template["job_configuration"]["job_manifest"]["spec"]["template"]["spec"][
        "containers"
    ][0]
    container["securityContext"]["runAsUser"] = "nobody"  # must be an integer
    path = tmp_path / "template.json"
    path.write_text(json.dumps(template))
    with pytest.raises(WorkPoolError, match=r"securityContext\.runAsUser"):
        ensure_work_pool(pool="kubetrain-k8s-invalid", template=str(path), image=TEST_IMAGE)
    resp = http.get(f"{prefect_server.api_url}/work_pools/kubetrain-k8s-invalid", timeout=30)
    assert resp.status_code == 404


def test_cli_reports_a_bad_environment_without_a_traceback(prefect_server: Any) -> None:
    from typer.testing import CliRunner

    from kubetrain.cli import build_app

    argv = ["work-pool", "ensure", "--environment", "staging"]
    result = CliRunner().invoke(build_app(argv), argv)
    assert result.exit_code == 2  # refused by the option's choices, before any flow run
    assert "staging" in result.output
    assert "prod" in result.output
    assert "Traceback" not in result.output


def test_ensure_work_pool_takes_the_image_from_kubetrain_image(
    prefect_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:

    monkeypatch.setenv("KUBETRAIN_IMAGE", "registry.example.com/kubetrain:9.9.9")
    assert ensure_work_pool(pool="kubetrain-k8s-env-image")["pool"] == "created"
    pool = http.get(f"{prefect_server.api_url}/work_pools/kubetrain-k8s-env-image", timeout=30)
    props = pool.json()["base_job_template"]["variables"]["properties"]
    assert props["image"]["default"] == "registry.example.com/kubetrain:9.9.9"
    monkeypatch.setenv("KUBETRAIN_IMAGE", "kubetrain:latest")
    with pytest.raises(WorkPoolError, match=r"registry host"):
        ensure_work_pool(pool="kubetrain-k8s-env-image")


def test_secret_check_names_a_missing_secret_or_key(
    tmp_path: Path, ssh_files: tuple[Path, Path]
) -> None:
    from kubetrain.k8s.manifests import check_secret

    key, known_hosts = ssh_files
    with StandinKubernetesApi() as api:
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", api.url)
        with pytest.raises(WorkPoolError, match=r"Secret kubetrain/kubetrain-sftp does not exist"):
            asyncio.run(check_secret(kubeconfig, None, "kubetrain", "kubetrain-sftp"))
        secret = sftp_secret_manifest("kubetrain-sftp", "kubetrain", key, known_hosts)
        del secret["data"]["known_hosts"]
        asyncio.run(apply_manifests([secret], kubeconfig))
        with pytest.raises(WorkPoolError, match=r"lacks keys \['known_hosts'\]") as info:
            asyncio.run(check_secret(kubeconfig, None, "kubetrain", "kubetrain-sftp"))
        assert secret["data"]["id"] not in str(info.value)  # names keys, never values
        full = sftp_secret_manifest("kubetrain-sftp", "kubetrain", key, known_hosts)
        asyncio.run(apply_manifests([full], kubeconfig))
        keys = asyncio.run(check_secret(kubeconfig, None, "kubetrain", "kubetrain-sftp"))
        assert keys == ["id", "known_hosts"]


def test_ensure_work_pool_fails_when_the_cluster_has_no_sftp_secret(
    prefect_server: Any, tmp_path: Path
) -> None:
    with StandinKubernetesApi() as api:
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", api.url)
        with pytest.raises(WorkPoolError, match=r"kubetrain-sftp does not exist.*--from-file"):
            ensure_work_pool(
                pool="kubetrain-k8s-no-secret", kubeconfig=str(kubeconfig), image=TEST_IMAGE
            )
