"""Schema: every rendered Job and every manifest under infra/kubernetes, validated offline.

kubernetes-validate's Python API in strict mode against a pinned Kubernetes version (its CLI
fails on objects with only metadata.generateName, which every rendered Job has).
"""

from __future__ import annotations

import re
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


CHART_SCHEMA = Path(__file__).resolve().parents[1] / "fixtures" / "prefect-worker"
# Env the chart's deployment template sets itself (release 2026.8.18172642): setting one again
# in extraEnvVars gives the container the same variable twice.
CHART_SET_ENV = {
    "HOME",
    "PREFECT_API_URL",
    "PREFECT_API_ENABLE_HTTP2",
    "PREFECT_KUBERNETES_CLUSTER_UID",
    "PREFECT_INTEGRATIONS_KUBERNETES_OBSERVER_NAMESPACES",
    "PREFECT_WORKER_QUERY_SECONDS",
    "PREFECT_WORKER_PREFETCH_SECONDS",
}
# Images whose entrypoint the chart's default command (/usr/bin/tini ... entrypoint.sh) runs.
PREFECT_IMAGE = "prefecthq/prefect"


def _helm_values() -> dict[str, Any]:
    values = yaml.safe_load(HELM_VALUES.read_text())
    assert isinstance(values, dict)
    return values


def test_helm_values_pass_the_charts_own_schema() -> None:
    import json

    import jsonschema  # type: ignore[import-untyped]

    schema = json.loads((CHART_SCHEMA / "values.schema.json").read_text())
    errors = [
        f"{'.'.join(str(p) for p in e.path)}: {e.message}"
        for e in jsonschema.Draft7Validator(schema).iter_errors(_helm_values())
    ]
    assert errors == []


def test_helm_worker_container_can_start() -> None:
    worker = _helm_values()["worker"]
    image = worker.get("image", {})
    # Without worker.command the chart runs tini + /opt/prefect/entrypoint.sh: only Prefect's
    # image has them (the kubetrain image does not, it would crash-loop).
    assert image.get("repository") == PREFECT_IMAGE or worker.get("command")
    tag = image.get("prefectTag", "")
    assert tag.startswith("3.9.1-"), "pin the worker to the Prefect version of requirements"
    assert "latest" not in tag
    # The plain-manifest worker runs the same image.
    (dep,) = _docs(INFRA_DIR / "worker-deployment.yaml")
    container = dep["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == f"{image['repository']}:{tag}"


def test_helm_values_set_no_env_the_chart_sets() -> None:
    names = [e["name"] for e in _helm_values()["worker"].get("extraEnvVars", [])]
    assert len(names) == len(set(names))
    assert not set(names) & CHART_SET_ENV
    assert _helm_values()["worker"]["config"]["jobNamespace"] == "kubetrain"


def test_workers_delete_the_jobs_of_runs_cancelled_before_they_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from prefect.settings import Settings

    (dep,) = _docs(INFRA_DIR / "worker-deployment.yaml")
    plain = dep["spec"]["template"]["spec"]["containers"][0]["env"]
    for env in (plain, _helm_values()["worker"]["extraEnvVars"]):
        values = {e["name"]: e.get("value") for e in env}
        monkeypatch.setenv("PREFECT_WORKER_ENABLE_CANCELLATION", values.get(
            "PREFECT_WORKER_ENABLE_CANCELLATION", ""))  # fmt: skip
        assert Settings().worker.enable_cancellation is True
    monkeypatch.delenv("PREFECT_WORKER_ENABLE_CANCELLATION")
    assert Settings().worker.enable_cancellation is False  # the pinned Prefect's default


def test_workers_refuse_to_create_the_pool() -> None:
    import subprocess
    import sys

    flag = "--no-create-pool-if-not-found"
    help_text = subprocess.run(
        [sys.executable, "-m", "prefect", "worker", "start", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        env={"COLUMNS": "200", "PATH": "/usr/bin:/bin", "PREFECT_HOME": "/tmp/prefect-help"},
    ).stdout
    assert flag in help_text  # the installed Prefect knows the flag
    assert flag in _helm_values()["worker"]["extraArgs"]
    (dep,) = _docs(INFRA_DIR / "worker-deployment.yaml")
    assert flag in dep["spec"]["template"]["spec"]["containers"][0]["args"]


def test_helm_values_example_matches_the_manifests() -> None:
    values = _helm_values()
    assert values["worker"]["config"]["workPool"] == "kubetrain-k8s"
    assert values["worker"]["config"]["type"] == "kubernetes"
    assert values["role"]["extraPermissions"] == []


def _kind(kind: str) -> dict[str, Any]:
    (doc,) = [d for d in load_manifests() if d["kind"] == kind]
    return doc


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    for expr in selector.get("matchExpressions", []):
        assert expr["operator"] == "Exists"  # the only operator used here
        if expr["key"] not in labels:
            return False
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def test_network_policy_confines_flow_run_pods_not_the_worker() -> None:
    policy = _kind("NetworkPolicy")["spec"]
    job = render_deployment_job("train-nightly")
    assert _selects(policy["podSelector"], job["spec"]["template"]["metadata"]["labels"])
    (worker,) = _docs(INFRA_DIR / "worker-deployment.yaml")
    assert not _selects(policy["podSelector"], worker["spec"]["template"]["metadata"]["labels"])
    assert set(policy["policyTypes"]) == {"Ingress", "Egress"}
    assert policy["ingress"] == []
    ports = {(p["protocol"], p["port"]) for rule in policy["egress"] for p in rule["ports"]}
    assert ports == {("UDP", 53), ("TCP", 53), ("TCP", 4200), ("TCP", 22)}
    assert all(rule.get("to") for rule in policy["egress"])  # no rule open to everything


def test_quota_admits_the_largest_run_and_the_limit_range_fills_requests() -> None:
    hard = _kind("ResourceQuota")["spec"]["hard"]
    limit_range = _kind("LimitRange")["spec"]["limits"][0]
    # Every resource the quota counts by request has a default request, so pods that set none
    # (e.g. a kubectl debug pod) are not rejected.
    for key in hard:
        if key.startswith("requests.") and "/" not in key.removeprefix("requests."):
            assert key.removeprefix("requests.") in limit_range["defaultRequest"], key
    for name in kubernetes_deployments():
        resources = render_deployment_job(name)["spec"]["template"]["spec"]["containers"][0][
            "resources"
        ]
        assert _quantity(resources["requests"]["memory"]) <= _quantity(hard["requests.memory"])
        assert _quantity(resources["limits"]["memory"]) <= _quantity(limit_range["max"]["memory"])
        assert _quantity(resources["limits"]["cpu"]) <= _quantity(limit_range["max"]["cpu"])


def _quantity(text: str) -> float:
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
    for unit, factor in units.items():
        if str(text).endswith(unit):
            return float(str(text)[: -len(unit)]) * factor
    return float(text)


def _readme_section(title: str) -> str:
    text = (INFRA_DIR.parents[1] / "README.md").read_text()
    start = text.index(f"## {title}")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else None]


def test_troubleshooting_follows_the_installed_observer() -> None:
    import prefect_kubernetes

    package = Path(prefect_kubernetes.__file__).parent
    observer = (package / "observer.py").read_text() + (package / "diagnostics.py").read_text()
    section = _readme_section("Deploy to Kubernetes")
    trouble = section[section.index("### Troubleshooting") :]
    # What the 0.8 observer diagnoses, each covered by the guide.
    for diagnosis in ("ImagePullBackOff", "OOMKilled", "Evicted", "Unschedulable"):
        assert diagnosis in observer, diagnosis
    for words in ("ErrImagePull", "crash-looping", "OOMKilled", "evicted", "unschedulable"):
        assert words.lower() in trouble.lower(), words
    # Messages the guide quotes are the observer's own.
    quoted = re.findall(r'\("([^"]+)"\)', trouble)
    assert quoted
    for message in quoted:
        assert message in observer, message
    assert "still shows Running" not in trouble  # what 0.8 no longer does


def test_deploy_steps_live_in_one_place() -> None:
    guide = (INFRA_DIR.parents[1] / "deployments" / "README.md").read_text()
    assert "### 1. Build and push the image" in _readme_section("Deploy to Kubernetes")
    assert "### 1." not in guide
    assert "Deploy to Kubernetes" in guide  # it links to the guide
