"""Tasks of the ensure-work-pool flow: template check, pool upsert, cluster manifests."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from kubetrain.k8s import automations, manifests, pool, template, validate


@task(name="load-template", cache_policy=NO_CACHE)
def load_template(environment: str, image: str | None, path: str | None = None) -> dict[str, Any]:
    """The base job template with deployments/<environment>.yaml and the image as defaults."""
    return template.pool_template(
        environment, image, Path(path) if path else template.TEMPLATE_PATH
    )


@task(name="validate-template", cache_policy=NO_CACHE)
def validate_template(pool_template: Mapping[str, Any]) -> None:
    """Render a sample Job from the pool template and validate it strictly (no API, no cluster)."""
    validate.validate_template(pool_template)


@task(name="load-manifests", cache_policy=NO_CACHE)
def load_manifests(
    secret_name: str, namespace: str, ssh_key: str | None, known_hosts: str | None
) -> list[dict[str, Any]]:
    """infra/kubernetes objects, plus the SFTP Secret built from the key files when given."""
    docs = manifests.load_manifests()
    if ssh_key and known_hosts:
        docs.append(
            manifests.sftp_secret_manifest(secret_name, namespace, Path(ssh_key), Path(known_hosts))
        )
    return docs


@task(name="upsert-work-pool", cache_policy=NO_CACHE)
def upsert_work_pool(name: str, pool_template: Mapping[str, Any]) -> str:
    """Create or update the Kubernetes work pool; created, updated or unchanged."""
    return asyncio.run(pool.upsert_work_pool(name, pool_template))


@task(name="apply-manifests", cache_policy=NO_CACHE)
def apply_manifests(
    docs: list[dict[str, Any]], kubeconfig: str, context: str | None
) -> dict[str, str]:
    """Server-side apply the objects; {kind/namespace/name: created|updated|unchanged}."""
    return asyncio.run(manifests.apply_manifests(docs, Path(kubeconfig), context))


@task(name="load-automations", cache_policy=NO_CACHE)
def load_automations(pool_name: str, notify_block: str | None) -> list[Any]:
    """deployments/automations/*.yaml for this pool, validated; the notify block resolved."""
    block_id = asyncio.run(automations.resolve_notify_block(notify_block)) if notify_block else None
    return automations.load_automations(pool_name, block_id)


@task(name="apply-automations", cache_policy=NO_CACHE)
def apply_automations(items: list[Any]) -> dict[str, str]:
    """Create or update the automations by name; {name: created|updated|unchanged}."""
    return asyncio.run(automations.upsert_automations(items))


@task(name="check-sftp-secret", cache_policy=NO_CACHE)
def check_sftp_secret(kubeconfig: str, context: str | None, namespace: str, name: str) -> None:
    """Fail unless the SFTP Secret exists with the keys the flow-run pods mount."""
    asyncio.run(manifests.check_secret(Path(kubeconfig), context, namespace, name))
