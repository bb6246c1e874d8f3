"""Tasks of the cluster flows: run a host's steps over SSH, mint a join command, publish."""

from __future__ import annotations

from collections.abc import Sequence

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from kubetrain import cluster
from kubetrain.cluster import (
    AnyStep,
    ClusterReport,
    Host,
    Inventory,
    JoinCommand,
    StepResult,
    WaitSpec,
)


@task(name="run-host-steps", task_run_name="{label} on {host.name}", cache_policy=NO_CACHE)
def run_host_steps(
    host: Host, steps: Sequence[AnyStep], dry_run: bool, label: str, wait: WaitSpec | None = None
) -> list[StepResult]:
    """Run a sequence of steps on one host (one SSH connection)."""
    logger = get_run_logger()
    return cluster.execute_host(host, steps, dry_run, logger.info, wait)


@task(name="create-join-command", cache_policy=NO_CACHE)
def create_join_command(inventory: Inventory) -> JoinCommand:
    """A fresh, short-lived join command from the control plane (the token is never logged)."""
    return cluster.create_join_command(inventory)


@task(name="publish-cluster-report", cache_policy=NO_CACHE)
def publish_cluster_report(report: ClusterReport) -> None:
    """Log the report and publish it as a markdown artifact keyed by the flow's name."""
    logger = get_run_logger()
    text = report.render()
    logger.info("%s", text)
    try:
        create_markdown_artifact(
            markdown=f"# {report.summary()}\n\n```\n{text}\n```\n",
            key=report.flow,
            description=report.summary(),
        )
    except Exception as error:  # the report is also in the logs and the flow's return value
        logger.warning("could not create the report artifact: %s", error)


@task(name="publish-cluster-plan", cache_policy=NO_CACHE)
def publish_cluster_plan(text: str, flow_name: str) -> None:
    """Publish a flow's full plan as a markdown artifact (key cluster-plan-FLOW)."""
    create_markdown_artifact(
        markdown=f"```\n{text}```\n",
        key=f"cluster-plan-{flow_name}",
        description=f"the commands {flow_name} would run on every host",
    )
