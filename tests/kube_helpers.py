"""Kubernetes test helpers: render Jobs, a recording stand-in Kubernetes API, and a local pod.

No Kubernetes cluster runs on these machines. What these helpers give instead, each named for
what it is:

- `render_deployment_job(...)`: the exact Job body the prefect-kubernetes worker would submit
  for a deployment in prefect.yaml (KubernetesWorkerJobConfiguration.from_template_and_values
  then prepare_for_flow_run), offline.
- `StandinKubernetesApi`: a tiny HTTP server on 127.0.0.1 that answers the few Kubernetes API
  calls a worker / our infra flow makes and RECORDS every request body. It is not Kubernetes:
  it does no validation, scheduling or admission.
- `write_kubeconfig(...)`: a kubeconfig pointing at the stand-in.
- `record_worker_submission(...)`: runs the real `prefect worker start --type kubernetes
  --run-once` against the stand-in and returns the recorded Job body.
- `pod_command(job)`: the (args, env) of the Job's container.
- `replay_pod_locally(...)`: runs that args + env as a local process ("a local pod"), with the
  Secret's files materialized in a temp dir and the mount paths / image working directory
  rewritten to local ones. Read the flow run's state from the API afterwards:
  `prefect flow-run execute` exits 0 even when the flow fails.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import yaml

from tests.prefect_api import http

REPO_ROOT = Path(__file__).resolve().parent.parent
PREFECT_YAML = REPO_ROOT / "prefect.yaml"
IMAGE_WORKDIR = "/opt/kubetrain"
SSH_MOUNT_DIR = "/var/run/secrets/kubetrain/ssh"
_PATH_MAP_ENV = "KUBETRAIN_TEST_PATH_MAP"
# The image the tests' pools run (a string only: nothing pulls it here).
TEST_IMAGE = "registry.example.com/kubetrain:0.0.0-test"

# Loaded by the replayed process through PYTHONPATH: maps the image's paths (the pull step's
# /opt/kubetrain) to local ones, so the recorded args and pull steps run unchanged.
_SITECUSTOMIZE = """
import os as _os

_mapping = [
    item.split("=", 1)
    for item in _os.environ.get("KUBETRAIN_TEST_PATH_MAP", "").split(";")
    if "=" in item
]
_real_chdir = _os.chdir


def _mapped_chdir(path):
    text = _os.fspath(path)
    for src, dst in _mapping:
        if text == src or text.startswith(src.rstrip("/") + "/"):
            text = dst + text[len(src.rstrip("/")):]
            break
    return _real_chdir(text)


_os.chdir = _mapped_chdir
"""


# --------------------------------------------------------------------------- prefect.yaml


def load_prefect_yaml(path: Path = PREFECT_YAML) -> dict[str, Any]:
    """The parsed prefect.yaml (anchors resolved)."""
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict)
    return data


def deployment_spec(name: str, path: Path = PREFECT_YAML) -> dict[str, Any]:
    """One deployment entry of prefect.yaml by name."""
    for dep in load_prefect_yaml(path)["deployments"]:
        if dep["name"] == name:
            return dict(dep)
    raise KeyError(f"no deployment {name!r} in {path}")


def kubernetes_deployments(pool: str = "kubetrain-k8s", path: Path = PREFECT_YAML) -> list[str]:
    """Names of the prefect.yaml deployments that run on the Kubernetes pool."""
    return [
        d["name"] for d in load_prefect_yaml(path)["deployments"] if d["work_pool"]["name"] == pool
    ]


def flow_name_of(spec: Mapping[str, Any]) -> str:
    """The flow name of a prefect.yaml deployment (our flows are named after their function)."""
    return str(spec["entrypoint"]).rsplit(":", 1)[1].replace("_", "-")


# --------------------------------------------------------------------------- rendering


def render_deployment_job(
    deployment_name: str,
    *,
    template: Mapping[str, Any] | None = None,
    flow_run_job_variables: Mapping[str, Any] | None = None,
    worker_env: Mapping[str, str] | None = None,
    flow_name: str | None = None,
    objects: Mapping[str, Any] | None = None,
    environment: str = "prod",
) -> dict[str, Any]:
    """The exact Job the worker would submit for one flow run of a prefect.yaml deployment.

    Offline: fake API objects (random ids) stand for the flow run, deployment, flow and pool.
    `worker_env` are Prefect settings the worker process has set explicitly (e.g.
    PREFECT_API_URL); the worker copies them into the Job's env. `objects`: the API objects
    from kubetrain.k8s.sample_flow_run_objects (to know the ids), else fresh ones. The pool's
    template is the base template with deployments/<environment>.yaml as variable defaults,
    as `python -m flows.work_pool --environment <environment>` creates it, with TEST_IMAGE.
    """
    import prefect.settings
    from prefect.settings import temporary_settings

    from kubetrain.k8s import (
        pool_template,
        render_job_manifest,
        sample_flow_run_objects,
    )

    spec = deployment_spec(deployment_name)
    job_variables = dict(spec["work_pool"].get("job_variables") or {})
    job_variables.update(flow_run_job_variables or {})
    objects = objects or sample_flow_run_objects(
        deployment_name=deployment_name,
        flow_name=flow_name or flow_name_of(spec),
        job_variables=job_variables,
        pool_name=spec["work_pool"]["name"],
    )
    updates = {getattr(prefect.settings, k): v for k, v in (worker_env or {}).items()}
    with temporary_settings(updates=updates):
        return asyncio.run(
            render_job_manifest(
                template or pool_template(environment, TEST_IMAGE),
                job_variables,
                **objects,
            )
        )


def pod_command(job: Mapping[str, Any]) -> tuple[list[str], dict[str, str]]:
    """The first container's args and env (name -> value) of a Job body."""
    container = job["spec"]["template"]["spec"]["containers"][0]
    env: dict[str, str] = {}
    for item in container.get("env") or []:
        if "value" in item and item["value"] is not None:
            env[item["name"]] = str(item["value"])
    return [str(a) for a in container.get("args") or []], env


def secret_mounts(job: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Secret volumes of a Job's pod by mount path: {mount_path: {secretName, items, ...}}."""
    pod = job["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod.get("volumes") or []}
    result: dict[str, dict[str, Any]] = {}
    for mount in pod["containers"][0].get("volumeMounts") or []:
        vol = volumes.get(mount["name"], {})
        if "secret" in vol:
            result[mount["mountPath"]] = vol["secret"] | {"readOnly": mount.get("readOnly")}
    return result


# --------------------------------------------------------------------------- stand-in API


@dataclass
class RecordedRequest:
    """One request the stand-in received."""

    method: str
    path: str
    body: Any
    headers: dict[str, str] = field(default_factory=dict)


class StandinKubernetesApi:
    """A recording stand-in for the Kubernetes API on 127.0.0.1 (NOT Kubernetes).

    Answers: POST .../jobs|secrets|<any collection> -> 201 with the object (name from
    generateName, a uid); GET of an object it stored -> 200, else 404; PUT/PATCH of a stored
    object -> 200 and replaced/merged; GET of a collection -> an empty or stored list;
    GET /api/v1/namespaces/kube-system -> a namespace with a uid; GET /api/v1 or
    /apis/<group>/<version> -> the discovery list of the kinds in `RESOURCES`. A server-side
    apply (PATCH, application/apply-patch+yaml) creates a missing object (201) or merges into a
    stored one, bumping metadata.resourceVersion only when the merge changed it; the real API
    server also removes fields the manager stopped applying, which this merge does not.
    Every request is recorded.
    """

    # group/version path -> {kind: (plural, namespaced)}, as the API server's discovery says.
    RESOURCES: ClassVar[dict[str, dict[str, tuple[str, bool]]]] = {
        "/api/v1": {
            "Namespace": ("namespaces", False),
            "ServiceAccount": ("serviceaccounts", True),
            "Secret": ("secrets", True),
            "ConfigMap": ("configmaps", True),
            "ResourceQuota": ("resourcequotas", True),
            "LimitRange": ("limitranges", True),
        },
        "/apis/apps/v1": {"Deployment": ("deployments", True)},
        "/apis/rbac.authorization.k8s.io/v1": {
            "Role": ("roles", True),
            "RoleBinding": ("rolebindings", True),
        },
        "/apis/networking.k8s.io/v1": {"NetworkPolicy": ("networkpolicies", True)},
        "/apis/batch/v1": {"Job": ("jobs", True)},
    }

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.requests: list[RecordedRequest] = []
        self.objects: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _body(self) -> Any:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    return json.loads(raw) if raw else None
                except ValueError:
                    return raw.decode(errors="replace")

            def _send(self, status: int, obj: Any) -> None:
                data = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _handle(self) -> None:
                path = self.path.split("?", 1)[0].rstrip("/")
                body = self._body() if self.command in ("POST", "PUT", "PATCH") else None
                with api._lock:
                    api.requests.append(
                        RecordedRequest(
                            self.command,
                            self.path,
                            body,
                            {k.lower(): v for k, v in self.headers.items()},
                        )
                    )
                    content_type = self.headers.get("Content-Type", "")
                    if self.command == "PATCH" and content_type.startswith(
                        "application/apply-patch"
                    ):
                        status, answer = api._apply(path, body)
                    else:
                        status, answer = api._answer(self.command, path, body)
                self._send(status, answer)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

        self._server = ThreadingHTTPServer((host, 0), Handler)
        self.url = f"http://{host}:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def _apply(self, path: str, body: Any) -> tuple[int, Any]:
        current = self.objects.get(path)
        if current is None:
            obj = dict(body or {})
            meta = dict(obj.get("metadata") or {})
            meta.update(uid=str(uuid.uuid4()), resourceVersion="1")
            obj["metadata"] = meta
            self.objects[path] = obj
            return 201, obj
        merged = _merge(current, body or {})
        if merged != current:
            meta = dict(merged["metadata"])
            meta["resourceVersion"] = str(int(current["metadata"]["resourceVersion"]) + 1)
            merged["metadata"] = meta
            self.objects[path] = merged
        return 200, self.objects[path]

    def _answer(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        if method == "GET" and path in self.RESOURCES:
            return 200, {
                "kind": "APIResourceList",
                "groupVersion": path.split("/", 2)[2],
                "resources": [
                    {"name": plural, "kind": kind, "namespaced": namespaced, "verbs": []}
                    for kind, (plural, namespaced) in self.RESOURCES[path].items()
                ],
            }
        if method == "GET" and path == "/api/v1/namespaces/kube-system":
            return 200, {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": "kube-system", "uid": "00000000-0000-0000-0000-000000000001"},
            }
        if method == "POST":
            obj = dict(body or {})
            meta = dict(obj.get("metadata") or {})
            if not meta.get("name"):
                meta["name"] = f"{meta.get('generateName', 'obj-')}{uuid.uuid4().hex[:5]}"
            key = f"{path}/{meta['name']}"
            if key in self.objects:
                return 409, _status(409, "AlreadyExists", f"{meta['name']} already exists")
            meta.setdefault("uid", str(uuid.uuid4()))
            ns = _namespace_of(path)
            if ns:
                meta.setdefault("namespace", ns)
            obj["metadata"] = meta
            self.objects[key] = obj
            return 201, obj
        if method in ("PUT", "PATCH"):
            if path not in self.objects:
                return 404, _status(404, "NotFound", f"{path} not found")
            if method == "PUT":
                self.objects[path] = dict(body or {})
            else:
                self.objects[path] = _merge(self.objects[path], body or {})
            return 200, self.objects[path]
        if method == "GET":
            if path in self.objects:
                return 200, self.objects[path]
            items = [o for k, o in self.objects.items() if k.rsplit("/", 1)[0] == path]
            if items or _is_collection(path):
                return 200, {"kind": "List", "apiVersion": "v1", "metadata": {}, "items": items}
            return 404, _status(404, "NotFound", f"{path} not found")
        if method == "DELETE":
            if self.objects.pop(path, None) is None:
                return 404, _status(404, "NotFound", f"{path} not found")
            return 200, _status(200, "Success", "deleted")
        return 405, _status(405, "MethodNotAllowed", method)

    def start(self) -> StandinKubernetesApi:
        """Start serving in a background thread."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> StandinKubernetesApi:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def created(self, resource: str) -> list[dict[str, Any]]:
        """Bodies of the POSTs to a collection whose last path segment is `resource`."""
        with self._lock:
            return [
                r.body
                for r in self.requests
                if r.method == "POST" and r.path.split("?", 1)[0].rstrip("/").endswith(resource)
            ]

    def jobs(self) -> list[dict[str, Any]]:
        """Job bodies submitted (POST .../namespaces/<ns>/jobs)."""
        return self.created("/jobs")


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure" if code >= 400 else "Success",
        "code": code,
        "reason": reason,
        "message": message,
    }


def _namespace_of(path: str) -> str | None:
    parts = path.split("/")
    if "namespaces" in parts:
        i = parts.index("namespaces")
        if i + 2 < len(parts):
            return parts[i + 1]
    return None


def _is_collection(path: str) -> bool:
    parts = [p for p in path.split("/") if p]
    # /api/v1/<res>, /api/v1/namespaces/<ns>/<res>,
    # /apis/<g>/<v>/<res>, /apis/<g>/<v>/namespaces/<ns>/<res>
    n = len(parts) - (2 if parts and parts[0] == "api" else 3)
    return n in (1, 3)


def _merge(a: dict[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), dict) else v
    return out


def write_kubeconfig(path: Path, server_url: str, namespace: str = "kubetrain") -> Path:
    """A kubeconfig whose only context points at server_url (plain HTTP, a dummy token)."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "standin", "cluster": {"server": server_url}}],
        "users": [{"name": "standin", "user": {"token": "standin-token"}}],
        "contexts": [
            {
                "name": "standin",
                "context": {"cluster": "standin", "user": "standin", "namespace": namespace},
            }
        ],
        "current-context": "standin",
    }
    path.write_text(yaml.safe_dump(config))
    return path


# --------------------------------------------------------------------------- worker + pod


def _child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}"
    env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    env["DO_NOT_TRACK"] = "1"
    env.update(extra or {})
    return env


def record_worker_submissions(
    pool: str,
    api_url: str,
    workdir: Path,
    *,
    timeout: float = 240.0,
    extra_env: Mapping[str, str] | None = None,
) -> list[dict[str, Any]]:
    """Run the real Kubernetes worker once against a stand-in API; return the Job bodies it sent.

    `prefect worker start --pool <pool> --type kubernetes --run-once` with KUBECONFIG pointing
    at a `StandinKubernetesApi` on 127.0.0.1 and PREFECT_API_URL=api_url. The worker picks up
    the scheduled runs due now, submits one Job per run (POST
    /apis/batch/v1/namespaces/<ns>/jobs) and exits; the runs stay Pending (nothing runs them).
    The kopf observer is disabled (the stand-in serves no watches). Raises AssertionError with
    the worker's output if it submitted no Job. The worker's output is in workdir/worker.log.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    with StandinKubernetesApi() as api:
        kubeconfig = write_kubeconfig(workdir / "kubeconfig", api.url)
        env = _child_env(
            {
                "KUBECONFIG": str(kubeconfig),
                "PREFECT_API_URL": api_url,
                "PREFECT_INTEGRATIONS_KUBERNETES_OBSERVER_ENABLED": "false",
                **(extra_env or {}),
            }
        )
        log = workdir / "worker.log"
        with log.open("wb") as out:
            proc = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "prefect",
                    "worker",
                    "start",
                    "--pool",
                    pool,
                    "--type",
                    "kubernetes",
                    "--run-once",
                    "--name",
                    "kubetrain-standin-worker",
                ],
                env=env,
                cwd=workdir,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=timeout,
                check=False,
            )
        jobs = api.jobs()
        assert jobs, (
            f"the worker submitted no Job (exit {proc.returncode}); requests: "
            f"{[(r.method, r.path) for r in api.requests]}\n{log.read_text()[-4000:]}"
        )
        return jobs


def record_worker_submission(
    pool: str,
    api_url: str,
    workdir: Path,
    *,
    flow_run_id: str | None = None,
    timeout: float = 240.0,
    extra_env: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The Job body the real worker submitted for flow_run_id (or the first one), see above."""
    jobs = record_worker_submissions(pool, api_url, workdir, timeout=timeout, extra_env=extra_env)
    if flow_run_id is None:
        return jobs[0]
    for job in jobs:
        if job["metadata"]["labels"].get("prefect.io/flow-run-id") == flow_run_id:
            return job
    raise AssertionError(f"no Job for flow run {flow_run_id} among {len(jobs)} submitted")


def materialize_secret(files: Mapping[str, bytes], directory: Path) -> Path:
    """Write a Secret's files (name -> bytes) like the kubelet does: read-only, mode 0400."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        path = directory / name
        path.write_bytes(data)
        path.chmod(0o400)
    return directory


def _local_pod(
    job: Mapping[str, Any],
    *,
    secret_files: Mapping[str, Mapping[str, bytes]],
    workdir: Path,
    image_workdir: str = IMAGE_WORKDIR,
    local_workdir: Path = REPO_ROOT,
    extra_env: Mapping[str, str] | None = None,
) -> tuple[list[str], dict[str, str], Path]:
    """The args, env and working directory of a Job's container as a local process."""
    args, env = pod_command(job)
    rewrites: dict[str, str] = {}
    for i, (mount, secret) in enumerate(sorted(secret_mounts(job).items())):
        name = secret["secretName"]
        if name not in secret_files:
            raise KeyError(f"the Job mounts Secret {name!r}; pass its files in secret_files")
        data = secret_files[name]
        items = secret.get("items") or [{"key": k, "path": k} for k in data]
        secret_dir = workdir / "secrets" / str(i)
        materialize_secret({item["path"]: data[item["key"]] for item in items}, secret_dir)
        rewrites[mount] = str(secret_dir)
    container = job["spec"]["template"]["spec"]["containers"][0]
    for item in container.get("env") or []:
        # Like the kubelet: a secretKeyRef env var holds that key's value; an optional one whose
        # Secret or key is missing is left out.
        ref = (item.get("valueFrom") or {}).get("secretKeyRef")
        if ref is None:
            continue
        ref_value = secret_files.get(ref["name"], {}).get(ref["key"])
        if ref_value is not None:
            env[item["name"]] = ref_value.decode()
        elif not ref.get("optional"):
            raise KeyError(f"the Job reads key {ref['key']!r} of Secret {ref['name']!r}")
    for key, value in list(env.items()):
        for mount, target in rewrites.items():
            if value == mount or value.startswith(mount + "/"):
                env[key] = target + value[len(mount) :]
    hook = workdir / "sitecustomize"
    hook.mkdir(parents=True, exist_ok=True)
    (hook / "sitecustomize.py").write_text(_SITECUSTOMIZE)
    scratch = workdir / "tmp"
    scratch.mkdir(parents=True, exist_ok=True)
    env.update(
        {
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}/usr/bin:/bin",
            "PYTHONPATH": f"{hook}{os.pathsep}{local_workdir}",
            _PATH_MAP_ENV: f"{image_workdir}={local_workdir}",
            "PREFECT_HOME": str(scratch / "prefect"),
            "HOME": str(scratch),
            "TMPDIR": str(scratch),
        }
    )
    env.update(extra_env or {})
    return args, env, scratch


def start_pod_locally(
    job: Mapping[str, Any],
    *,
    secret_files: Mapping[str, Mapping[str, bytes]],
    workdir: Path,
    extra_env: Mapping[str, str] | None = None,
) -> subprocess.Popen[str]:
    """Start a Job's container as a local process (see replay_pod_locally); the caller waits."""
    args, env, cwd = _local_pod(
        job, secret_files=secret_files, workdir=workdir, extra_env=extra_env
    )
    return subprocess.Popen(
        args, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def replay_pod_locally(
    job: Mapping[str, Any],
    *,
    secret_files: Mapping[str, Mapping[str, bytes]],
    workdir: Path,
    image_workdir: str = IMAGE_WORKDIR,
    local_workdir: Path = REPO_ROOT,
    extra_env: Mapping[str, str] | None = None,
    timeout: float = 600.0,
) -> subprocess.CompletedProcess[str]:
    """Run a Job's container args + env as a local process (a local pod, not Kubernetes).

    secret_files: {secret name: {key: bytes}}; each Secret volume's items are written under
    `workdir/secrets/<volume>` and every env value under a mount path is rewritten to it.
    The image's working directory (the pull step's /opt/kubetrain) is mapped to local_workdir
    through a sitecustomize on PYTHONPATH; PREFECT_HOME and HOME (an emptyDir in the pod) go to
    workdir. Returns the finished process; its exit code says nothing about the flow run.
    """
    args, env, cwd = _local_pod(
        job,
        secret_files=secret_files,
        workdir=workdir,
        image_workdir=image_workdir,
        local_workdir=local_workdir,
        extra_env=extra_env,
    )
    return subprocess.run(
        args, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )


def flow_run_state(api_url: str, flow_run_id: str) -> dict[str, Any]:
    """The flow run's current state as the API reports it ({type, name, message})."""
    resp = http.get(f"{api_url}/flow_runs/{flow_run_id}", timeout=30)
    resp.raise_for_status()
    state = resp.json()["state"] or {}
    return {k: state.get(k) for k in ("type", "name", "message")}


def wait_for_state(
    api_url: str, flow_run_id: str, types: set[str], timeout: float = 60.0
) -> dict[str, Any]:
    """Poll the API until the run's state type is in `types` (or return the last state)."""
    deadline = time.monotonic() + timeout
    state = flow_run_state(api_url, flow_run_id)
    while state["type"] not in types and time.monotonic() < deadline:
        time.sleep(0.5)
        state = flow_run_state(api_url, flow_run_id)
    return state


# --------------------------------------------------------------------------- deploy

_DEPLOYED: dict[str, dict[str, str]] = {}


def run_prefect_deploy(
    api_url: str, prefect_file: Path = PREFECT_YAML, timeout: float = 300.0
) -> subprocess.CompletedProcess[str]:
    """`prefect --no-prompt deploy --all` from the repository root against api_url."""
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "prefect",
            "--no-prompt",
            "deploy",
            "--all",
            "--prefect-file",
            str(prefect_file),
        ],
        env=_child_env({"PREFECT_API_URL": api_url}),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def ensure_project_deployed(api_url: str) -> dict[str, str]:
    """Pools (kubetrain-k8s from the prod template, kubetrain-infra process) + deploy --all.

    Done once per API URL (the session's Prefect server); returns {deployment name: id}.
    """
    if api_url in _DEPLOYED:
        return _DEPLOYED[api_url]
    from kubetrain.k8s import (
        POOL_NAME,
        pool_template,
        upsert_work_pool,
    )

    template = pool_template("prod", TEST_IMAGE)
    asyncio.run(upsert_work_pool(POOL_NAME, template))
    for pool in ("kubetrain-infra", "kubetrain-local"):
        resp = http.post(
            f"{api_url}/work_pools/", json={"name": pool, "type": "process"}, timeout=30
        )
        assert resp.status_code in (201, 409), resp.text
    proc = run_prefect_deploy(api_url)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "An exception occurred" not in proc.stdout + proc.stderr, proc.stdout[-4000:]
    resp = http.post(f"{api_url}/deployments/filter", json={}, timeout=30)
    resp.raise_for_status()
    _DEPLOYED[api_url] = {d["name"]: d["id"] for d in resp.json()}
    return _DEPLOYED[api_url]
