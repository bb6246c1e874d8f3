"""Infra flow: the Kubernetes work pool, its base job template, and the manifests it needs."""

from __future__ import annotations

from typing import Any, Literal

from prefect import get_run_logger

from flows._flow import kubetrain_flow
from kubetrain.k8s import (
    POOL_NAME,
    WorkPoolError,
)
from kubetrain.settings import get_settings
from tasks.work_pool import (
    apply_automations,
    apply_manifests,
    check_sftp_secret,
    load_automations,
    load_manifests,
    load_template,
    upsert_work_pool,
    validate_template,
)


@kubetrain_flow(name="ensure-work-pool")
def ensure_work_pool(
    pool: str = POOL_NAME,
    environment: Literal["prod", "dev"] = "prod",
    image: str | None = None,
    kubeconfig: str | None = None,
    context: str | None = None,
    ssh_key: str | None = None,
    known_hosts: str | None = None,
    secret_name: str = "kubetrain-sftp",  # noqa: S107 - a Secret's name, not a password
    namespace: str = "kubetrain",
    template: str | None = None,
    notify_block: str | None = None,
) -> dict[str, Any]:
    """Validate the template, create/update the pool; with a kubeconfig, apply manifests+Secret.

    Args:
        pool: Name of the Kubernetes work pool to create or update.
        environment: Job-variable defaults of the pool: deployments/ENVIRONMENT.yaml (dev, prod).
        image: Flow-run image, the pool's default (default: KUBETRAIN_IMAGE); prod needs a
            registry host and a version tag or digest.
        kubeconfig: Path of a kubeconfig; when given, infra/kubernetes is applied to that cluster.
        context: kubeconfig context to use (default: its current context).
        ssh_key: Private key file for the SFTP Secret (needs known_hosts and kubeconfig).
        known_hosts: known_hosts file for the SFTP Secret (needs ssh_key and kubeconfig).
        secret_name: Name of the SFTP Secret in the cluster.
        namespace: Namespace of the flow-run Jobs and the SFTP Secret.
        template: Path of a base job template JSON (default: deployments/base-job-template.json).
        notify_block: Notification block as BLOCK_TYPE/NAME (e.g. slack-webhook/kubetrain-alerts)
            for failed nightly runs; without it that automation is not installed.
    """
    logger = get_run_logger()
    if (ssh_key is None) != (known_hosts is None):
        raise WorkPoolError("pass both ssh_key and known_hosts (the Secret needs both files)")
    if ssh_key and not kubeconfig:
        raise WorkPoolError("creating the SFTP Secret needs a kubeconfig: pass kubeconfig")
    pool_template = load_template(environment, image or get_settings().image, template)
    validate_template(pool_template)
    # Everything is read and checked before anything is changed.
    docs = load_manifests(secret_name, namespace, ssh_key, known_hosts) if kubeconfig else []
    pool_automations = load_automations(pool, notify_block)
    result: dict[str, Any] = {"pool": upsert_work_pool(pool, pool_template), "manifests": {}}
    logger.info("work pool %r: %s", pool, result["pool"])
    result["automations"] = apply_automations(pool_automations)
    if kubeconfig:
        result["manifests"] = apply_manifests(docs, kubeconfig, context)
        check_sftp_secret(kubeconfig, context, namespace, secret_name)
    for label, outcome in (result["automations"] | result["manifests"]).items():
        logger.info("%s: %s", label, outcome)
    return result


if __name__ == "__main__":  # `python -m flows.work_pool` is `kubetrain work-pool ensure`
    import sys

    from kubetrain.cli import main

    main(["work-pool", "ensure", *sys.argv[1:]])
