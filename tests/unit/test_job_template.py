"""Rendering: the exact Job the Kubernetes worker submits for each prefect.yaml deployment.

Offline (no cluster, no API): KubernetesWorkerJobConfiguration.from_template_and_values then
prepare_for_flow_run, exactly as prefect-kubernetes' worker does before create_namespaced_job.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest

from kubetrain.k8s import (
    SSH_MOUNT_DIR,
    WorkPoolError,
    check_job_variables,
    derive_base_job_template,
    load_base_job_template,
    load_environment,
    pool_template,
    sample_flow_run_objects,
    schema_errors,
    template_for_environment,
    validate_template,
)
from tests.kube_helpers import (
    REPO_ROOT,
    TEST_IMAGE,
    deployment_spec,
    flow_name_of,
    kubernetes_deployments,
    load_prefect_yaml,
    pod_command,
    render_deployment_job,
    secret_mounts,
)

API_URL = "http://prefect-server.kubetrain.svc:4200/api"
K8S_DEPLOYMENTS = kubernetes_deployments()


def _render(name: str, overrides: dict[str, Any] | None = None) -> tuple[dict[str, Any], Any]:
    spec = deployment_spec(name)
    job_variables = {**spec["work_pool"]["job_variables"], **(overrides or {})}
    objects = sample_flow_run_objects(
        deployment_name=name, flow_name=flow_name_of(spec), job_variables=job_variables
    )
    job = render_deployment_job(
        name,
        flow_run_job_variables=overrides,
        worker_env={"PREFECT_API_URL": API_URL},
        objects=objects,
    )
    return job, objects


def test_prefect_yaml_has_the_train_deployments() -> None:
    assert {"train-nightly", "train-adhoc"} <= set(K8S_DEPLOYMENTS)
    entrypoints = {d["entrypoint"] for d in load_prefect_yaml()["deployments"]}
    for flow_file in sorted((REPO_ROOT / "flows").glob("*.py")):
        if not flow_file.name.startswith("_"):  # __init__ and private helpers are no flows
            # every flow family has a deployment
            assert any(e.startswith(f"flows/{flow_file.name}:") for e in entrypoints), flow_file


def test_committed_template_is_the_derivation_of_prefect_kubernetes_default() -> None:
    # Fails when someone edits the JSON by hand or prefect-kubernetes changes its default:
    # regenerate with `kubetrain work-pool write-template` and review the diff.
    assert load_base_job_template() == json.loads(json.dumps(derive_base_job_template()))


def _prefect_kubernetes_reads(name: str) -> list[str]:
    """Lines of the installed prefect_kubernetes that read attribute `name` (not declare it)."""
    import prefect_kubernetes

    package = Path(prefect_kubernetes.__file__).parent
    pattern = re.compile(rf"\.{name}\b|\[[\"']{name}[\"']\]|getattr\([^)]*[\"']{name}[\"']")
    return [
        f"{path.name}: {line.strip()}"
        for path in sorted(package.rglob("*.py"))
        for line in path.read_text().splitlines()
        if pattern.search(line)
    ]


def test_template_keeps_every_default_variable_the_worker_reads() -> None:
    from prefect_kubernetes.worker import KubernetesWorker

    default = KubernetesWorker.get_default_base_job_template()
    ours = load_base_job_template()
    dropped = set(default["variables"]["properties"]) - set(ours["variables"]["properties"])
    # Dropped only if prefect-kubernetes never reads them (a form field that does nothing).
    assert dropped == set(default["job_configuration"]) - set(ours["job_configuration"])
    for name in dropped:
        assert _prefect_kubernetes_reads(name) == [], name
    assert _prefect_kubernetes_reads("namespace")  # control: a variable it does read


@pytest.mark.parametrize(
    "name", ["job_watch_timeout_seconds", "pod_watch_timeout_seconds", "stream_output"]
)
def test_inert_variables_are_not_in_the_pool_form(name: str) -> None:
    # prefect-kubernetes 0.8's worker only creates the Job: nothing reads these.
    assert _prefect_kubernetes_reads(name) == []
    assert name not in load_base_job_template()["variables"]["properties"]


def test_every_pool_variable_has_a_title_and_description() -> None:
    for name, prop in load_base_job_template()["variables"]["properties"].items():
        assert prop.get("title"), name
        assert prop.get("description"), name


def test_scheduling_job_variables_reach_the_pod() -> None:
    affinity = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["ml"]}]}
                ]
            }
        }
    }
    toleration = {"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}
    overrides = {
        "image_pull_secrets": [{"name": "regcred"}],
        "node_selector": {"kubernetes.io/arch": "amd64"},
        "tolerations": [toleration],
        "affinity": affinity,
        "priority_class_name": "kubetrain-batch",
        "gpu_limit": 1,
    }
    check_job_variables(load_base_job_template(), overrides)
    job, _ = _render("train-adhoc", overrides)
    pod = job["spec"]["template"]["spec"]
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    assert pod["nodeSelector"] == {"kubernetes.io/arch": "amd64"}
    assert pod["tolerations"] == [toleration]
    assert pod["affinity"] == affinity
    assert pod["priorityClassName"] == "kubetrain-batch"
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert schema_errors(job) == []


def test_scratch_volume_is_requested_as_ephemeral_storage() -> None:
    job, _ = _render("train-adhoc", {"tmp_size_limit": "3Gi"})
    pod = job["spec"]["template"]["spec"]
    (tmp,) = [v for v in pod["volumes"] if v["name"] == "tmp"]
    requests = pod["containers"][0]["resources"]["requests"]
    assert requests["ephemeral-storage"] == tmp["emptyDir"]["sizeLimit"] == "3Gi"
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 0  # no GPU
    assert schema_errors(job) == []


@pytest.mark.parametrize("name", K8S_DEPLOYMENTS)
def test_rendered_job_for_each_deployment(name: str) -> None:
    job, objects = _render(name)
    jv = deployment_spec(name)["work_pool"]["job_variables"]
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    args, env = pod_command(job)

    assert job["apiVersion"] == "batch/v1"
    assert job["kind"] == "Job"
    assert job["metadata"]["namespace"] == jv["namespace"]
    assert job["metadata"]["generateName"]
    assert container["image"] == TEST_IMAGE
    assert env["KUBETRAIN_IMAGE"] == TEST_IMAGE  # recorded in the version's manifest
    assert args == ["prefect", "flow-run", "execute"]
    assert env["PREFECT_API_URL"] == API_URL
    assert env["PREFECT__FLOW_RUN_ID"] == str(objects["flow_run"].id)
    assert env["PREFECT__DEPLOYMENT_ID"] == str(objects["deployment"].id)
    for key, value in jv["env"].items():
        assert env[key] == value
    assert env["PREFECT_SERVER_ANALYTICS_ENABLED"].lower() == "false"
    assert env["DO_NOT_TRACK"] == "1"
    assert env["PREFECT_HOME"].startswith("/tmp/")

    # The SFTP key and known_hosts: a read-only Secret volume, 0400, paths passed by env.
    mounts = secret_mounts(job)
    assert set(mounts) == {SSH_MOUNT_DIR}
    secret = mounts[SSH_MOUNT_DIR]
    assert secret["secretName"] == jv["sftp_secret_name"]
    assert secret["defaultMode"] == 0o400
    assert secret["readOnly"] is True
    assert {i["key"] for i in secret["items"]} == {"id", "known_hosts"}
    assert env["KUBETRAIN_SSH_KEY"] == f"{SSH_MOUNT_DIR}/id"
    assert env["KUBETRAIN_KNOWN_HOSTS"] == f"{SSH_MOUNT_DIR}/known_hosts"

    resources = container["resources"]
    assert resources["requests"]["cpu"] == jv["cpu_request"]
    assert resources["requests"]["memory"] == jv["memory_request"]
    assert resources["limits"]["cpu"] == jv["cpu_limit"]
    assert resources["limits"]["memory"] == jv["memory_limit"]

    # Hardened pod: non-root fixed UID, read-only root, writable /tmp only, no capabilities.
    psc, csc = pod["securityContext"], container["securityContext"]
    assert psc["runAsNonRoot"] is True
    assert psc["runAsUser"] == psc["runAsGroup"] == psc["fsGroup"] == 10001
    assert psc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert csc["readOnlyRootFilesystem"] is True
    assert csc["allowPrivilegeEscalation"] is False
    assert csc["capabilities"] == {"drop": ["ALL"]}
    assert csc["runAsUser"] == 10001
    volumes = {v["name"]: v for v in pod["volumes"]}
    writable = {m["mountPath"] for m in container["volumeMounts"] if not m.get("readOnly")}
    assert writable == {"/tmp"}
    tmp_mount = next(m for m in container["volumeMounts"] if m["mountPath"] == "/tmp")
    assert "emptyDir" in volumes[tmp_mount["name"]]
    assert pod["serviceAccountName"] == "kubetrain-flow-run"
    assert pod["automountServiceAccountToken"] is False
    assert pod["restartPolicy"] == "Never"

    # Job-level controls; parallelism/completions where Kubernetes reads them.
    spec = job["spec"]
    assert spec["backoffLimit"] == 0
    assert env["PREFECT_FLOW_RUN_EXECUTE_SIGTERM_BEHAVIOR"] == "reschedule"
    assert spec["ttlSecondsAfterFinished"] == jv["finished_job_ttl"]
    assert spec["activeDeadlineSeconds"] == jv["active_deadline_seconds"]
    assert spec["parallelism"] == spec["completions"] == 1
    assert "parallelism" not in pod
    assert "completions" not in pod

    for labels in (job["metadata"]["labels"], job["spec"]["template"]["metadata"]["labels"]):
        assert labels["prefect.io/flow-run-id"] == str(objects["flow_run"].id)
        assert labels["prefect.io/deployment-name"] == name
        assert labels["prefect.io/flow-name"] == flow_name_of(deployment_spec(name))
        assert labels["prefect.io/work-pool-name"] == "kubetrain-k8s"


def test_flow_run_job_variable_overrides_reach_the_job() -> None:
    job, _ = _render(
        "train-adhoc",
        {"cpu_limit": "8", "image": "kubetrain:test", "env": {"KUBETRAIN_ENV": "dev"}},
    )
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["cpu"] == "8"
    assert container["image"] == "kubetrain:test"
    assert pod_command(job)[1]["KUBETRAIN_ENV"] == "dev"


def test_job_variable_env_can_override_the_template_env() -> None:
    job, _ = _render("train-adhoc", {"env": {"KUBETRAIN_SSH_KEY": "/other/key"}})
    env_items = job["spec"]["template"]["spec"]["containers"][0]["env"]
    assert [e["value"] for e in env_items if e["name"] == "KUBETRAIN_SSH_KEY"] == ["/other/key"]


@pytest.mark.parametrize("environment", ["dev", "prod"])
def test_environment_files_render_valid_jobs(environment: str) -> None:
    job = validate_template(pool_template(environment, TEST_IMAGE))
    jv = load_environment(environment)
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == TEST_IMAGE
    assert container["resources"]["limits"]["memory"] == jv["memory_limit"]


# ------------------------------------------------------------------ bad input: clear errors


def test_invalid_template_field_is_named() -> None:
    template = copy.deepcopy(load_base_job_template())
    pod = template["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]
    pod["restartPolicee"] = "Never"
    with pytest.raises(WorkPoolError, match=r"restartPolicee") as info:
        validate_template(template)
    assert "base-job-template.json" in str(info.value)


def test_default_template_placement_of_parallelism_is_rejected_by_strict_schema() -> None:
    # Why we move them: prefect-kubernetes' own default fails the strict schema.
    from prefect_kubernetes.worker import KubernetesWorker

    default = KubernetesWorker.get_default_base_job_template()
    with pytest.raises(WorkPoolError, match=r"parallelism|completions"):
        validate_template(default, {"image": "kubetrain:0.1.0", "namespace": "kubetrain"})


def test_template_missing_what_the_worker_requires_is_rejected() -> None:
    template = copy.deepcopy(load_base_job_template())
    del template["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]["containers"]
    with pytest.raises(WorkPoolError, match=r"(?s)worker accepts.*/spec/template/spec/containers"):
        validate_template(template)


@pytest.mark.parametrize("bad", ["", "Has_Upper", None])
def test_missing_or_invalid_secret_name_is_rejected(bad: Any) -> None:
    with pytest.raises(WorkPoolError, match=r"sftp_secret_name"):
        check_job_variables(load_base_job_template(), {"sftp_secret_name": bad})


@pytest.mark.parametrize(
    ("name", "value"),
    [("cpu_limit", 2), ("memory_request", "lots"), ("active_deadline_seconds", "1h")],
)
def test_wrong_typed_job_variable_is_rejected(name: str, value: Any) -> None:
    with pytest.raises(WorkPoolError, match=name):
        check_job_variables(load_base_job_template(), {name: value})


def test_unknown_job_variable_in_environment_is_rejected() -> None:
    with pytest.raises(WorkPoolError, match=r"cpu_limitt"):
        template_for_environment(load_base_job_template(), {"cpu_limitt": "1"})


def test_unknown_environment_is_named() -> None:
    with pytest.raises(WorkPoolError, match=r"unknown environment 'staging'.*dev.*prod"):
        load_environment("staging")


def test_template_file_errors_are_clear(tmp_path: Any) -> None:
    with pytest.raises(WorkPoolError, match=r"not found.*write-template"):
        load_base_job_template(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(WorkPoolError, match=r"not valid JSON"):
        load_base_job_template(bad)


def test_environment_with_an_empty_secret_name_is_refused_before_pool_creation() -> None:
    template = template_for_environment(load_base_job_template(), {"sftp_secret_name": ""})
    with pytest.raises(WorkPoolError, match=r"sftp_secret_name"):
        validate_template(template)


# ------------------------------------------------------------------ the image: one place

# A kubetrain image reference (name:tag) in a committed file other than the pool default.
_IMAGE_REF = re.compile(r"\bkubetrain:(?:\d|dev|latest|test)")
_IMAGE_FILES = [
    REPO_ROOT / "prefect.yaml",
    *sorted((REPO_ROOT / "deployments").glob("*.yaml")),
    REPO_ROOT / "deployments" / "base-job-template.json",
    *sorted((REPO_ROOT / "infra" / "kubernetes").rglob("*.yaml")),
]


@pytest.mark.parametrize("path", _IMAGE_FILES, ids=lambda p: p.name)
def test_no_committed_file_names_the_flow_run_image(path: Any) -> None:
    # The image is given once, to ensure-work-pool (KUBETRAIN_IMAGE), as the pool's default;
    # a copy anywhere else drifts from it (and a deployment's copy hides the pool default).
    assert not _IMAGE_REF.findall(path.read_text()), path


@pytest.mark.parametrize("name", K8S_DEPLOYMENTS)
def test_deployments_use_the_pool_image(name: str) -> None:
    assert "image" not in deployment_spec(name)["work_pool"]["job_variables"]
    job, _ = _render(name)
    assert job["spec"]["template"]["spec"]["containers"][0]["image"] == TEST_IMAGE


def test_dev_pool_uses_a_locally_loaded_image() -> None:
    # kind/minikube load the image into the node; "Always" would try the registry and fail
    # with ErrImagePull.
    template = pool_template("dev", "kubetrain-dev-build:1")
    props = template["variables"]["properties"]
    assert props["image_pull_policy"]["default"] == "IfNotPresent"
    assert props["image"]["default"] == "kubetrain-dev-build:1"  # no registry host needed


@pytest.mark.parametrize(
    ("image", "problem"),
    [
        ("kubetrain:0.1.0", "registry host"),
        ("registry.example.com/kubetrain", "no tag"),
        ("registry.example.com/kubetrain:latest", "latest"),
        ("", "no image"),
        (None, "no image"),
    ],
)
def test_prod_pool_refuses_an_unpinned_image(image: Any, problem: str) -> None:
    with pytest.raises(WorkPoolError, match=problem) as info:
        pool_template("prod", image)
    assert "KUBETRAIN_IMAGE" in str(info.value)


@pytest.mark.parametrize(
    "image",
    [
        "registry.example.com/ml/kubetrain:0.1.0",
        "localhost:5000/kubetrain:0.1.0",
        "registry.example.com:5000/kubetrain@sha256:" + "a" * 64,
    ],
)
def test_prod_pool_accepts_a_pinned_registry_image(image: str) -> None:
    props = pool_template("prod", image)["variables"]["properties"]
    assert props["image"]["default"] == image


# ------------------------------------------------------------------ run limits (k8s/limits.py)


@pytest.mark.parametrize("name", K8S_DEPLOYMENTS)
def test_flows_time_out_before_the_job_deadline(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    from kubetrain.settings import get_settings

    job, _ = _render(name)
    deadline = job["spec"]["activeDeadlineSeconds"]
    env = pod_command(job)[1]
    monkeypatch.setenv("KUBETRAIN_JOB_DEADLINE", env["KUBETRAIN_JOB_DEADLINE"])
    assert get_settings().job_deadline.total_seconds() == deadline  # type: ignore[union-attr]
    module_name, _, attr = deployment_spec(name)["entrypoint"].partition(":")
    module = importlib.reload(
        importlib.import_module(module_name.removesuffix(".py").replace("/", "."))
    )
    timeout = getattr(module, attr).timeout_seconds
    assert timeout is not None
    assert 0.9 * deadline <= timeout < deadline  # Prefect ends the run first, not SIGTERM
    monkeypatch.delenv("KUBETRAIN_JOB_DEADLINE")
    assert getattr(importlib.reload(module), attr).timeout_seconds is None  # local runs


def test_a_run_rescheduled_too_often_fails_saying_so() -> None:
    from kubetrain.k8s.limits import RescheduleLimitError, check_reschedule_limit

    check_reschedule_limit(run_count=4, limit=3)  # 3 reschedules: allowed
    with pytest.raises(RescheduleLimitError, match=r"rescheduled 4 times.*MAX_RESCHEDULES=3"):
        check_reschedule_limit(run_count=5, limit=3)
