"""Schema: every rendered Job and every manifest under infra/kubernetes, validated offline.

kubernetes-validate's Python API in strict mode against a pinned Kubernetes version (its CLI
fails on objects with only metadata.generateName, which every rendered Job has).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from kubetrain.k8s import (
    INFRA_DIR,
    KUBERNETES_VERSION,
    load_base_job_template,
    load_environment,
    load_manifests,
    schema_errors,
    template_for_environment,
)
from tests.kube_helpers import kubernetes_deployments, render_deployment_job

INFRA_FILES = sorted(INFRA_DIR.glob("*.yaml"))
HELM_VALUES = INFRA_DIR / "helm" / "prefect-worker-values.yaml"


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def test_version_is_pinned() -> None:
    assert KUBERNETES_VERSION == "1.33.0"


@pytest.mark.parametrize("environment", ["dev", "prod"])
@pytest.mark.parametrize("name", kubernetes_deployments())
def test_rendered_jobs_are_valid_kubernetes(name: str, environment: str) -> None:
    job = render_deployment_job(
        name,
        worker_env={"PREFECT_API_URL": "http://prefect-server.kubetrain.svc:4200/api"},
        environment=environment,
    )
    assert "name" not in job["metadata"]  # generateName only: what the CLI cannot validate
    assert schema_errors(job) == []


@pytest.mark.parametrize("path", INFRA_FILES, ids=lambda p: p.name)
def test_infra_manifests_are_valid_kubernetes(path: Path) -> None:
    docs = _docs(path)
    assert docs
    for doc in docs:
        assert schema_errors(doc) == [], path


def test_schema_check_is_strict() -> None:
    # A control: an unknown field and a misplaced one are reported, not ignored.
    job = render_deployment_job("train-adhoc")
    job["spec"]["template"]["spec"]["parallelism"] = 1
    errors = schema_errors(job)
    assert errors
    assert "parallelism" in errors[0]
    sa = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "x"}, "tokn": 1}
    assert schema_errors(sa)


def test_pool_environments_cover_every_namespace_in_infra() -> None:
    namespaces = {d["metadata"]["name"] for d in load_manifests() if d["kind"] == "Namespace"}
    for environment in ("dev", "prod"):
        template = template_for_environment(load_base_job_template(), load_environment(environment))
        assert template["variables"]["properties"]["namespace"]["default"] in namespaces


def test_worker_rbac_is_least_privilege() -> None:
    docs = [d for p in INFRA_FILES for d in _docs(p)]
    kinds = {d["kind"] for d in docs}
    assert not kinds & {"ClusterRole", "ClusterRoleBinding"}
    (role,) = [d for d in docs if d["kind"] == "Role"]
    rules = {
        (tuple(r["apiGroups"]), tuple(sorted(r["resources"]))): set(r["verbs"])
        for r in role["rules"]
    }
    assert rules == {
        (("",), ("events", "pods", "pods/log", "pods/status")): {"get", "watch", "list"},
        (("batch",), ("jobs",)): {"get", "list", "watch", "create", "update", "patch", "delete"},
    }
    (binding,) = [d for d in docs if d["kind"] == "RoleBinding"]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert [s["name"] for s in binding["subjects"]] == ["prefect-worker"]


def test_flow_run_service_account_has_no_api_rights() -> None:
    docs = [d for p in INFRA_FILES for d in _docs(p)]
    (sa,) = [
        d
        for d in docs
        if d["kind"] == "ServiceAccount" and d["metadata"]["name"] == "kubetrain-flow-run"
    ]
    assert sa["automountServiceAccountToken"] is False
    bound = {s["name"] for d in docs if d["kind"] == "RoleBinding" for s in d["subjects"]}
    assert "kubetrain-flow-run" not in bound
    sa_default = load_base_job_template()["variables"]["properties"]["service_account_name"]
    assert sa_default["default"] == "kubetrain-flow-run"


def test_secret_template_holds_no_key_material() -> None:
    text = (INFRA_DIR / "sftp-secret.template.yaml").read_text()
    assert "BEGIN" not in text
    assert "PLACEHOLDER" in text
    (secret,) = _docs(INFRA_DIR / "sftp-secret.template.yaml")
    assert set(secret["stringData"]) == {"id", "known_hosts"}
    assert all(d["kind"] != "Secret" for d in load_manifests())  # never applied as is


def test_worker_deployment_limits_observer_and_runs_the_pool() -> None:
    (dep,) = _docs(INFRA_DIR / "worker-deployment.yaml")
    pod = dep["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["PREFECT_INTEGRATIONS_KUBERNETES_OBSERVER_NAMESPACES"] == "kubetrain"
    assert env["PREFECT_API_URL"].endswith("/api")
    args = container["args"]
    assert args[args.index("--pool") + 1] == "kubetrain-k8s"
    assert args[args.index("--type") + 1] == "kubernetes"
    assert container["resources"]["limits"]
    assert container["resources"]["requests"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["serviceAccountName"] == "prefect-worker"


def test_helm_values_example_matches_the_manifests() -> None:
    values = yaml.safe_load(HELM_VALUES.read_text())
    assert values["worker"]["config"]["workPool"] == "kubetrain-k8s"
    assert values["worker"]["config"]["type"] == "kubernetes"
    env = {e["name"]: e["value"] for e in values["worker"]["extraEnvVars"]}
    assert env["PREFECT_INTEGRATIONS_KUBERNETES_OBSERVER_NAMESPACES"] == "kubetrain"
    assert values["role"]["extraPermissions"] == []
