"""Infra flow: the Kubernetes work pool, its base job template, and the manifests it needs."""

from __future__ import annotations

import asyncio
import copy
import json
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import yaml
from prefect import flow, get_run_logger

REPO_ROOT = Path(__file__).resolve().parent.parent
TEMPLATE_PATH = REPO_ROOT / "deployments" / "base-job-template.json"
ENVIRONMENTS_DIR = REPO_ROOT / "deployments"
INFRA_DIR = REPO_ROOT / "infra" / "kubernetes"

POOL_NAME = "kubetrain-k8s"
KUBERNETES_VERSION = "1.33.0"
RUN_AS_ID = 10001
SSH_MOUNT_DIR = "/var/run/secrets/kubetrain/ssh"
SSH_KEY_FILE = "id"
KNOWN_HOSTS_FILE = "known_hosts"
PREFECT_HOME_IN_POD = "/tmp/prefect"  # noqa: S108 - an emptyDir: the root filesystem is read-only
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
QUANTITY = r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$"


class WorkPoolError(Exception):
    """A user-facing problem with the template, the job variables or the manifests."""


def _string_var(title: str, default: str, description: str, **extra: Any) -> dict[str, Any]:
    base = {"title": title, "type": "string", "default": default, "description": description}
    return base | extra


def derive_base_job_template() -> dict[str, Any]:
    """Build kubetrain's base job template from prefect-kubernetes' default one."""
    from prefect_kubernetes.worker import KubernetesWorker

    template = copy.deepcopy(KubernetesWorker.get_default_base_job_template())
    props: dict[str, Any] = template["variables"]["properties"]

    props["namespace"]["default"] = "kubetrain"
    props["image"]["default"] = "kubetrain:0.1.0"
    props["service_account_name"]["default"] = "kubetrain-flow-run"
    props["backoff_limit"]["default"] = 0
    props["backoff_limit"]["description"] = (
        "Kubernetes retries of the Job. 0: a failed training run is not re-run blindly by "
        "Kubernetes; Prefect owns retries (flow/task retries) and reschedules an evicted pod."
    )
    props["finished_job_ttl"]["default"] = 86400
    for name, default in (
        ("cpu_request", "1"),
        ("cpu_limit", "2"),
        ("memory_request", "2Gi"),
        ("memory_limit", "4Gi"),
    ):
        # Not nullable: a Job without requests/limits is not what we want to schedule.
        props[name] = {
            "title": props[name]["title"],
            "type": "string",
            "pattern": QUANTITY,
            "default": default,
            "description": props[name]["description"].split(" If not provided")[0],
        }
    props["active_deadline_seconds"] = {
        "title": "Active Deadline Seconds",
        "type": "integer",
        "minimum": 60,
        "default": 21600,
        "description": "Kubernetes kills the Job (and its pod) after this many seconds.",
    }
    props["sftp_secret_name"] = _string_var(
        "SFTP Secret Name",
        "kubetrain-sftp",
        f"Kubernetes Secret with keys '{SSH_KEY_FILE}' (private key) and "
        f"'{KNOWN_HOSTS_FILE}', mounted read-only at {SSH_MOUNT_DIR}.",
        minLength=1,
        maxLength=253,
        pattern=DNS_SUBDOMAIN,
    )
    props["tmp_size_limit"] = _string_var(
        "Scratch Size Limit",
        "8Gi",
        "Size limit of the emptyDir mounted at /tmp (PREFECT_HOME, work files).",
        pattern=QUANTITY,
    )

    manifest: dict[str, Any] = template["job_configuration"]["job_manifest"]
    pod_spec: dict[str, Any] = manifest["spec"]["template"]["spec"]
    # Kubernetes reads parallelism/completions on the Job spec; the default template has them
    # in the pod spec, which a strict schema rejects (and Kubernetes silently drops).
    manifest["spec"]["parallelism"] = pod_spec.pop("parallelism")
    manifest["spec"]["completions"] = pod_spec.pop("completions")
    manifest["spec"]["activeDeadlineSeconds"] = "{{ active_deadline_seconds }}"
    manifest["metadata"]["labels"] = "{{ labels }}"

    pod_spec["automountServiceAccountToken"] = False
    pod_spec["securityContext"] = {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS_ID,
        "runAsGroup": RUN_AS_ID,
        "fsGroup": RUN_AS_ID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    pod_spec["volumes"] = [
        {
            "name": "sftp-credentials",
            "secret": {
                "secretName": "{{ sftp_secret_name }}",
                "defaultMode": 0o400,
                "items": [
                    {"key": SSH_KEY_FILE, "path": SSH_KEY_FILE},
                    {"key": KNOWN_HOSTS_FILE, "path": KNOWN_HOSTS_FILE},
                ],
            },
        },
        {"name": "tmp", "emptyDir": {"sizeLimit": "{{ tmp_size_limit }}"}},
    ]
    container: dict[str, Any] = pod_spec["containers"][0]
    # A literal list (not "{{ env }}"): the worker puts its Prefect env and the job variables'
    # env first and keeps these unless a job variable sets the same name.
    container["env"] = [
        {"name": "KUBETRAIN_SSH_KEY", "value": f"{SSH_MOUNT_DIR}/{SSH_KEY_FILE}"},
        {"name": "KUBETRAIN_KNOWN_HOSTS", "value": f"{SSH_MOUNT_DIR}/{KNOWN_HOSTS_FILE}"},
        {"name": "PREFECT_HOME", "value": PREFECT_HOME_IN_POD},
        {"name": "HOME", "value": "/tmp"},  # noqa: S108 - emptyDir
        {"name": "PREFECT_SERVER_ANALYTICS_ENABLED", "value": "false"},
        {"name": "DO_NOT_TRACK", "value": "1"},
        {"name": "PYTHONDONTWRITEBYTECODE", "value": "1"},
    ]
    container["securityContext"] = {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS_ID,
        "runAsGroup": RUN_AS_ID,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "privileged": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    container["volumeMounts"] = [
        {"name": "sftp-credentials", "mountPath": SSH_MOUNT_DIR, "readOnly": True},
        {"name": "tmp", "mountPath": "/tmp"},  # noqa: S108 - emptyDir
    ]
    return template


def load_base_job_template(path: Path = TEMPLATE_PATH) -> dict[str, Any]:
    """Read the committed base job template (deployments/base-job-template.json)."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise WorkPoolError(
            f"base job template {path} not found: run `python -m flows.work_pool "
            "--write-template` to generate it"
        ) from exc
    except json.JSONDecodeError as exc:
        raise WorkPoolError(f"base job template {path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict) or not {"job_configuration", "variables"} <= data.keys():
        raise WorkPoolError(
            f"base job template {path} needs top-level 'job_configuration' and 'variables'"
        )
    return data


def load_environment(name: str) -> dict[str, Any]:
    """Job-variable defaults of one environment (deployments/<name>.yaml)."""
    path = ENVIRONMENTS_DIR / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in ENVIRONMENTS_DIR.glob("*.yaml"))
        raise WorkPoolError(f"unknown environment {name!r}: no {path}; known: {known}")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise WorkPoolError(f"{path} must be a mapping of job variable name to value")
    return data


def template_for_environment(
    template: Mapping[str, Any], job_variables: Mapping[str, Any]
) -> dict[str, Any]:
    """The template with an environment's job variables as the pool's variable defaults."""
    result = copy.deepcopy(dict(template))
    props = result["variables"]["properties"]
    unknown = sorted(set(job_variables) - set(props))
    if unknown:
        raise WorkPoolError(
            f"job variables {unknown} are not defined by the base job template; "
            f"defined: {sorted(props)}"
        )
    for name, value in job_variables.items():
        props[name]["default"] = value
    return result


def check_job_variables(template: Mapping[str, Any], job_variables: Mapping[str, Any]) -> None:
    """Validate job variables against the template's variables schema (as Prefect does)."""
    import jsonschema  # type: ignore[import-untyped]

    schema = copy.deepcopy(dict(template["variables"]))
    unknown = sorted(set(job_variables) - set(schema.get("properties", {})))
    if unknown:
        raise WorkPoolError(
            f"job variables {unknown} are not defined by the base job template; "
            f"defined: {sorted(schema.get('properties', {}))}"
        )
    errors = sorted(
        jsonschema.Draft7Validator(schema).iter_errors(dict(job_variables)),
        key=lambda e: list(e.path),
    )
    if errors:
        lines = [
            f"job variable {'.'.join(str(p) for p in e.path) or '<root>'}: {e.message}"
            for e in errors
        ]
        raise WorkPoolError("invalid job variables:\n  " + "\n  ".join(lines))


def sample_flow_run_objects(
    deployment_name: str = "sample",
    flow_name: str = "train",
    job_variables: Mapping[str, Any] | None = None,
    pool_name: str = POOL_NAME,
) -> dict[str, Any]:
    """FlowRun, deployment, flow and work pool API objects as the worker would read them."""
    from prefect.client.schemas.objects import Flow, FlowRun, WorkPool
    from prefect.client.schemas.responses import DeploymentResponse

    flow_obj = Flow(id=uuid.uuid4(), name=flow_name, labels={})
    deployment = DeploymentResponse(
        id=uuid.uuid4(),
        name=deployment_name,
        flow_id=flow_obj.id,
        work_pool_name=pool_name,
        job_variables=dict(job_variables or {}),
        labels={},
        **cast(dict[str, Any], {"updated": datetime.now(UTC)}),
    )
    flow_run = FlowRun(
        id=uuid.uuid4(),
        name="sample-run",
        flow_id=flow_obj.id,
        deployment_id=deployment.id,
        job_variables=dict(job_variables or {}),
    )
    work_pool = WorkPool(
        id=uuid.uuid4(), name=pool_name, type="kubernetes", default_queue_id=uuid.uuid4()
    )
    return {
        "flow_run": flow_run,
        "deployment": deployment,
        "flow_obj": flow_obj,
        "work_pool": work_pool,
    }


class _OfflineClient:
    """Stands in for the Prefect client while rendering: only block/variable references use it."""

    def __getattr__(self, name: str) -> Any:
        raise WorkPoolError(
            f"rendering needs the Prefect API ({name}): the template references a block or a "
            "variable ({{ prefect.blocks... }} / {{ prefect.variables... }}); render it with "
            "a running API or inline the value"
        )


async def render_job_manifest(
    template: Mapping[str, Any],
    job_variables: Mapping[str, Any],
    *,
    flow_run: Any,
    deployment: Any = None,
    flow_obj: Any = None,
    work_pool: Any = None,
    worker_name: str = "kubetrain-render",
) -> dict[str, Any]:
    """The exact Job body the Kubernetes worker would submit for this flow run."""
    from prefect_kubernetes.worker import KubernetesWorkerJobConfiguration

    config = await KubernetesWorkerJobConfiguration.from_template_and_values(
        dict(template), dict(job_variables), client=_OfflineClient()
    )
    config.prepare_for_flow_run(
        flow_run=flow_run,
        deployment=deployment,
        flow=flow_obj,
        work_pool=work_pool,
        worker_name=worker_name,
        worker_id=None,
    )
    return copy.deepcopy(config.job_manifest)


def schema_errors(document: Mapping[str, Any], version: str = KUBERNETES_VERSION) -> list[str]:
    """Strict Kubernetes schema errors of one manifest ([] when it is valid)."""
    import kubernetes_validate
    from kubernetes_validate.utils import SchemaNotFoundError, ValidationError

    kind = f"{document.get('apiVersion')}/{document.get('kind')}"
    try:
        kubernetes_validate.validate(dict(document), version, strict=True)
    except ValidationError as exc:
        path = ".".join(str(p) for p in exc.path) or "<root>"
        return [f"{kind} {path}: {exc.message}"]
    except SchemaNotFoundError as exc:
        return [f"{kind}: no Kubernetes {version} schema for this kind ({exc})"]
    return []


def validate_template(
    template: Mapping[str, Any], job_variables: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Render a sample Job from the template and validate it strictly; return the Job."""
    values = dict(job_variables or {})
    check_job_variables(template, values)
    try:
        manifest = asyncio.run(
            render_job_manifest(template, values, **sample_flow_run_objects(job_variables=values))
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise WorkPoolError(
            f"the base job template does not render a Job the worker accepts: {exc}"
        ) from exc
    errors = schema_errors(manifest)
    if errors:
        raise WorkPoolError(
            f"the rendered Job is not valid Kubernetes {KUBERNETES_VERSION} (strict):\n  "
            + "\n  ".join(errors)
            + "\nfix the field in deployments/base-job-template.json or the job variable"
        )
    return manifest
