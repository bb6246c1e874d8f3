"""The cluster side: infra/kubernetes manifests and the SFTP Secret, applied server-side.

Apply is Kubernetes server-side apply (PATCH, content type application/apply-patch+yaml,
fieldManager=kubetrain, force): the API server merges our fields and tracks their ownership, so
there is no hand-written diff or replace here, and a second apply of the same objects changes
nothing (the resourceVersion stays). Resource paths come from the API server's own discovery
document of each group/version (what kubectl reads), not a plural table of ours. We chose this
over kubernetes_asyncio's `utils.create_from_yaml` (create only: a second run fails with 409)
and its DynamicClient (full discovery of every group plus a cache file in the temp dir, for the
handful of kinds we apply).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from kubetrain.k8s.template import INFRA_DIR, KNOWN_HOSTS_FILE, SSH_KEY_FILE, WorkPoolError

FIELD_MANAGER = "kubetrain"


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


async def check_secret(
    kubeconfig: Path, context: str | None, namespace: str, name: str
) -> list[str]:
    """Fail unless Secret namespace/name exists with the keys flow-run pods mount; its keys."""
    from kubernetes_asyncio import client as k8s_client
    from kubernetes_asyncio import config as k8s_config
    from kubernetes_asyncio.client.exceptions import ApiException

    fix = (
        "create it with ensure-work-pool's ssh_key and known_hosts, or `kubectl -n "
        f"{namespace} create secret generic {name} --from-file={SSH_KEY_FILE}=KEY_FILE "
        f"--from-file={KNOWN_HOSTS_FILE}=KNOWN_HOSTS_FILE`"
    )
    api_client = await k8s_config.new_client_from_config(
        config_file=str(kubeconfig), context=context
    )
    try:
        secret = await k8s_client.CoreV1Api(api_client).read_namespaced_secret(name, namespace)
    except ApiException as exc:
        if exc.status == 404:
            raise WorkPoolError(
                f"Secret {namespace}/{name} does not exist: flow-run pods cannot start; {fix}"
            ) from exc
        raise WorkPoolError(
            f"Kubernetes API refused reading Secret {namespace}/{name} ({exc.status} "
            f"{exc.reason}); check the kubeconfig's rights"
        ) from exc
    finally:
        await api_client.close()
    # Only key names are read into messages, never values.
    keys = sorted(secret.data or {})
    missing = sorted({SSH_KEY_FILE, KNOWN_HOSTS_FILE} - set(keys))
    if missing:
        raise WorkPoolError(f"Secret {namespace}/{name} lacks keys {missing} (has {keys}); {fix}")
    return keys


def _group_version_path(api_version: str) -> str:
    return f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"


def _label(doc: Mapping[str, Any]) -> str:
    meta = doc["metadata"]
    return f"{doc['kind']}/{meta.get('namespace', '-')}/{meta['name']}"


async def apply_manifests(
    docs: list[dict[str, Any]], kubeconfig: Path, context: str | None = None
) -> dict[str, str]:
    """Server-side apply each object; return {kind/namespace/name: created|updated|unchanged}."""
    from kubernetes_asyncio import config as k8s_config
    from kubernetes_asyncio.client.exceptions import ApiException

    if not kubeconfig.is_file():
        raise WorkPoolError(f"kubeconfig {kubeconfig} does not exist")
    client = await k8s_config.new_client_from_config(config_file=str(kubeconfig), context=context)
    discovered: dict[str, dict[str, Any]] = {}

    async def call(
        method: str, path: str, body: Any = None, query: list[tuple[str, Any]] | None = None
    ) -> Any:
        content_type = "application/apply-patch+yaml" if method == "PATCH" else "application/json"
        return await client.call_api(
            path,
            method,
            query_params=query or [],
            body=body,
            header_params={"Accept": "application/json", "Content-Type": content_type},
            response_types_map={200: "object", 201: "object"},
            auth_settings=["BearerToken"],
            _return_http_data_only=True,
        )

    async def object_path(doc: Mapping[str, Any]) -> str:
        gv_path = _group_version_path(doc["apiVersion"])
        if gv_path not in discovered:
            listing = await call("GET", gv_path)
            discovered[gv_path] = {
                r["kind"]: r for r in listing.get("resources", []) if "/" not in r["name"]
            }
        resource = discovered[gv_path].get(doc["kind"])
        if resource is None:
            raise WorkPoolError(
                f"the cluster serves no kind {doc['kind']!r} in {doc['apiVersion']}: "
                "check the manifest's apiVersion/kind against the cluster's version"
            )
        meta = doc["metadata"]
        if resource.get("namespaced"):
            return f"{gv_path}/namespaces/{meta['namespace']}/{resource['name']}/{meta['name']}"
        return f"{gv_path}/{resource['name']}/{meta['name']}"

    results: dict[str, str] = {}
    try:
        for doc in docs:
            label = _label(doc)
            try:
                path = await object_path(doc)
                try:
                    before = await call("GET", path)
                except ApiException as exc:
                    if exc.status != 404:
                        raise
                    before = None
                after = await call(
                    "PATCH", path, doc, [("fieldManager", FIELD_MANAGER), ("force", "true")]
                )
            except ApiException as exc:
                raise WorkPoolError(
                    f"Kubernetes API refused {label} ({exc.status} {exc.reason}): {exc.body!r}; "
                    "check the kubeconfig's rights (it must be allowed to manage these objects)"
                ) from exc
            if before is None:
                results[label] = "created"
            elif _resource_version(before) == _resource_version(after):
                results[label] = "unchanged"
            else:
                results[label] = "updated"
    finally:
        await client.close()
    return results


def _resource_version(obj: Any) -> Any:
    return ((obj or {}).get("metadata") or {}).get("resourceVersion")
