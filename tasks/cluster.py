"""Tasks of the cluster flows: run a host's steps over SSH, mint a join command."""

from __future__ import annotations

from collections.abc import Sequence

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from kubetrain import cluster
from kubetrain.cluster import Host, Inventory, JoinCommand, Step, StepResult, WaitSpec


@task(name="run-host-steps", task_run_name="{label} on {host.name}", cache_policy=NO_CACHE)
def run_host_steps(
    host: Host, steps: Sequence[Step], dry_run: bool, label: str, wait: WaitSpec | None = None
) -> list[StepResult]:
    """Run a sequence of steps on one host (one SSH connection)."""
    logger = get_run_logger()
    return cluster.execute_host(host, steps, dry_run, logger.info, wait)


@task(name="create-join-command", cache_policy=NO_CACHE)
def create_join_command(inventory: Inventory) -> JoinCommand:
    """A fresh, short-lived join command from the control plane (the token is never logged)."""
    return cluster.create_join_command(inventory)
