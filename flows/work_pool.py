"""Infra flow: the Kubernetes work pool, its base job template, and the manifests it needs."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from prefect import flow, get_run_logger

from kubetrain.k8s import (
    POOL_NAME,
    TEMPLATE_PATH,
    WorkPoolError,
    derive_base_job_template,
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


@flow(name="ensure-work-pool")
def ensure_work_pool(
    pool: str = POOL_NAME,
    environment: str = "prod",
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


def cli(
    write_template: Annotated[
        bool, typer.Option(help="Regenerate deployments/base-job-template.json and exit.")
    ] = False,
    pool: Annotated[str, typer.Option(help="Work pool name.")] = POOL_NAME,
    environment: Annotated[
        str, typer.Option(help="Job-variable defaults: deployments/<environment>.yaml.")
    ] = "prod",
    kubeconfig: Annotated[
        str | None, typer.Option(help="Apply infra/kubernetes/ and the Secret to this cluster.")
    ] = None,
    context: Annotated[str | None, typer.Option(help="kubeconfig context.")] = None,
    ssh_key: Annotated[
        str | None, typer.Option(help="Private key file for the SFTP Secret.")
    ] = None,
    known_hosts: Annotated[
        str | None, typer.Option(help="known_hosts file for the SFTP Secret.")
    ] = None,
    secret_name: Annotated[str, typer.Option(help="Name of the SFTP Secret.")] = "kubetrain-sftp",  # noqa: S107 - a Secret's name, not a password
    namespace: Annotated[str, typer.Option(help="Namespace of the flow-run Jobs.")] = "kubetrain",
    template: Annotated[
        str | None, typer.Option(help="Base job template JSON (default: the committed one).")
    ] = None,
) -> None:
    """Create or update the Kubernetes work pool; with --kubeconfig also the cluster side."""
    if write_template:
        TEMPLATE_PATH.write_text(json.dumps(derive_base_job_template(), indent=2) + "\n")
        typer.echo(f"wrote {TEMPLATE_PATH}")
        return
    try:
        result = ensure_work_pool(
            pool=pool,
            environment=environment,
            kubeconfig=kubeconfig,
            context=context,
            ssh_key=ssh_key,
            known_hosts=known_hosts,
            secret_name=secret_name,
            namespace=namespace,
            template=template,
        )
    except Exception as error:  # the flow run already logged the traceback
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1) from error
    typer.echo(json.dumps(result, indent=2))


if __name__ == "__main__":
    typer.run(cli)
