"""The Kubernetes side: the work pool's job template, offline rendering, checks, manifests."""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import yaml

from kubetrain.errors import UserError

REPO_ROOT = Path(__file__).resolve().parents[2]
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


class WorkPoolError(UserError):
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
        # The manifest records which image produced a version.
        {"name": "KUBETRAIN_IMAGE", "value": "{{ image }}"},
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
    try:
        import kubernetes_validate
        from kubernetes_validate.utils import SchemaNotFoundError, ValidationError
    except ImportError as exc:  # the flow-run image installs only the runtime requirements
        raise WorkPoolError(
            "validating manifests needs the kubernetes-validate package: run this from the "
            "development environment (`make setup`, requirements/dev.txt)"
        ) from exc

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
    props = template["variables"].get("properties", {})
    # The pool's defaults must be valid too: an environment file can set them to anything.
    defaults = {k: v["default"] for k, v in props.items() if "default" in v}
    check_job_variables(template, defaults | values)
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


# --------------------------------------------------------------------------- the work pool


async def upsert_work_pool(name: str, template: Mapping[str, Any]) -> str:
    """Create or update the Kubernetes work pool; return created, updated or unchanged."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate, WorkPoolUpdate
    from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError

    async with get_client() as client:
        try:
            pool = await client.read_work_pool(name)
        except ObjectNotFound:
            pool = None
        try:
            if pool is None:
                await client.create_work_pool(
                    WorkPoolCreate(
                        name=name,
                        type="kubernetes",
                        base_job_template=dict(template),
                        description="kubetrain: every flow run a Kubernetes Job",
                    )
                )
                return "created"
            if pool.type != "kubernetes":
                raise WorkPoolError(
                    f"work pool {name!r} exists with type {pool.type!r}, not 'kubernetes': "
                    "delete it (`prefect work-pool delete`) or choose another --pool name"
                )
            if pool.base_job_template == template:
                return "unchanged"
            await client.update_work_pool(name, WorkPoolUpdate(base_job_template=dict(template)))
            return "updated"
        except PrefectHTTPStatusError as exc:
            raise WorkPoolError(
                f"the Prefect API rejected the base job template for pool {name!r}: "
                f"{exc.response.text}"
            ) from exc


# --------------------------------------------------------------------------- manifests

_PLURALS = {
    "Namespace": "namespaces",
    "ServiceAccount": "serviceaccounts",
    "Secret": "secrets",
    "ConfigMap": "configmaps",
    "Role": "roles",
    "RoleBinding": "rolebindings",
    "Deployment": "deployments",
}
_CLUSTER_SCOPED = {"Namespace"}


def load_manifests(directory: Path = INFRA_DIR) -> list[dict[str, Any]]:
    """Every object in infra/kubernetes/*.yaml except the Secret template, in apply order."""
    docs: list[dict[str, Any]] = []
    for path in sorted(directory.glob("*.yaml")):
        if path.name.endswith(".template.yaml"):
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                docs.append(doc)
    order = {"Namespace": 0, "ServiceAccount": 1, "Role": 2, "RoleBinding": 3}
    return sorted(docs, key=lambda d: order.get(d["kind"], 9))


def sftp_secret_manifest(
    name: str, namespace: str, key_file: Path, known_hosts_file: Path
) -> dict[str, Any]:
    """The SFTP Secret (keys `id`, `known_hosts`) built from a private key and known_hosts file."""
    files = {SSH_KEY_FILE: key_file, KNOWN_HOSTS_FILE: known_hosts_file}
    data: dict[str, str] = {}
    for key, path in files.items():
        if not path.is_file():
            raise WorkPoolError(f"{key} file {path} does not exist: pass an existing file")
        content = path.read_bytes()
        if not content.strip():
            raise WorkPoolError(f"{key} file {path} is empty")
        data[key] = base64.b64encode(content).decode()
    if b"PRIVATE KEY" not in key_file.read_bytes():
        raise WorkPoolError(f"{key_file} is not a private key file (no 'PRIVATE KEY' block)")
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": "kubetrain"},
        },
        "type": "Opaque",
        "data": data,
    }


def _object_path(doc: Mapping[str, Any]) -> tuple[str, str]:
    kind = doc["kind"]
    if kind not in _PLURALS:
        raise WorkPoolError(f"don't know how to apply kind {kind!r}; known: {sorted(_PLURALS)}")
    api_version = doc["apiVersion"]
    prefix = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    meta = doc["metadata"]
    if kind in _CLUSTER_SCOPED:
        collection = f"{prefix}/{_PLURALS[kind]}"
    else:
        collection = f"{prefix}/namespaces/{meta['namespace']}/{_PLURALS[kind]}"
    return collection, f"{collection}/{meta['name']}"


def _contains(actual: Any, desired: Any) -> bool:
    if isinstance(desired, Mapping):
        return isinstance(actual, Mapping) and all(
            _contains(actual.get(k), v) for k, v in desired.items()
        )
    if isinstance(desired, list):
        return (
            isinstance(actual, list)
            and len(actual) == len(desired)
            and all(_contains(a, d) for a, d in zip(actual, desired, strict=True))
        )
    return bool(actual == desired)


async def apply_manifests(
    docs: list[dict[str, Any]], kubeconfig: Path, context: str | None = None
) -> dict[str, str]:
    """Create or replace each object; return {kind/namespace/name: created|updated|unchanged}."""
    from kubernetes_asyncio import config as k8s_config
    from kubernetes_asyncio.client.exceptions import ApiException

    if not kubeconfig.is_file():
        raise WorkPoolError(f"kubeconfig {kubeconfig} does not exist")
    client = await k8s_config.new_client_from_config(config_file=str(kubeconfig), context=context)
    results: dict[str, str] = {}

    async def call(method: str, path: str, body: Any = None) -> Any:
        return await client.call_api(
            path,
            method,
            body=body,
            header_params={"Accept": "application/json", "Content-Type": "application/json"},
            response_types_map={200: "object", 201: "object"},
            auth_settings=["BearerToken"],
            _return_http_data_only=True,
        )

    try:
        for doc in docs:
            collection, path = _object_path(doc)
            meta = doc["metadata"]
            label = f"{doc['kind']}/{meta.get('namespace', '-')}/{meta['name']}"
            try:
                try:
                    current = await call("GET", path)
                except ApiException as exc:
                    if exc.status != 404:
                        raise
                    await call("POST", collection, doc)
                    results[label] = "created"
                    continue
                if _contains(current, doc):
                    results[label] = "unchanged"
                    continue
                body = copy.deepcopy(doc)
                body["metadata"]["resourceVersion"] = (current.get("metadata") or {}).get(
                    "resourceVersion"
                )
                await call("PUT", path, body)
                results[label] = "updated"
            except ApiException as exc:
                raise WorkPoolError(
                    f"Kubernetes API refused {label} ({exc.status} {exc.reason}): {exc.body!r}; "
                    "check the kubeconfig's rights (it must be allowed to manage these objects)"
                ) from exc
    finally:
        await client.close()
    return results
