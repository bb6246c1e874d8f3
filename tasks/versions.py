"""Tasks of the registry flows: browse, promote, gate and prune versions on the store."""

from __future__ import annotations

import getpass
import socket

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from kubetrain.registry import aliases, catalog, gate, prune
from kubetrain.store import open_store
from tasks.retries import IO_RETRIES


def actor() -> str:
    """Who is moving an alias: the flow run (if any) and the OS user and host running it."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # a container user without a passwd entry
        user = "unknown"
    where = f"{user}@{socket.gethostname()}"
    name = flow_run.get_name()
    return f"flow run {name} ({where})" if name else where


@task(name="list-versions", cache_policy=NO_CACHE, **IO_RETRIES)
def list_versions(source: str, experiment: str, limit: int) -> catalog.Listing:
    """An experiment's complete versions with scores and pointers; incomplete ones counted."""
    with open_store(source) as store:
        return catalog.list_experiment(store, experiment, limit)


@task(name="show-version", cache_policy=NO_CACHE, **IO_RETRIES)
def show_version(source: str, experiment: str, version: str) -> catalog.Shown:
    """One version's manifest, readable."""
    with open_store(source) as store:
        return catalog.show_version(store, experiment, version)


@task(name="diff-versions", cache_policy=NO_CACHE, **IO_RETRIES)
def diff_versions(source: str, experiment: str, old: str, new: str) -> catalog.VersionDiff:
    """Parameters, data and score changes between two versions."""
    with open_store(source) as store:
        return catalog.diff_versions(store, experiment, old, new)


# No retries: a promote that failed after its rename would be recorded twice.
@task(name="promote", cache_policy=NO_CACHE)
def promote(source: str, experiment: str, alias: str, version: str, why: str) -> aliases.AliasEvent:
    """Point an alias at a version atomically and record the move in the history."""
    with open_store(source) as store:
        event = aliases.promote(store, experiment, alias, version, actor(), why)
    get_run_logger().info(
        "@%s: %s -> %s (%s)", alias, event.from_version or "unset", event.to_version, why
    )
    return event


@task(name="alias-history", cache_policy=NO_CACHE, **IO_RETRIES)
def alias_history(source: str, experiment: str, alias: str | None) -> list[aliases.AliasEvent]:
    """Every recorded alias move, oldest first."""
    with open_store(source) as store:
        return aliases.history(store, experiment, alias)


@task(name="quality-gate", cache_policy=NO_CACHE)
def quality_gate(
    destination: str, experiment: str, version: str, config: gate.GateConfig
) -> gate.GateDecision:
    """Promote the new version to the alias only if it is not worse; artifact + log either way."""
    from prefect.artifacts import create_table_artifact

    with open_store(destination) as store:
        decision, _ = gate.run_gate(store, experiment, version, config, actor())
    create_table_artifact(
        key="quality-gate",
        table=[decision.as_dict()],
        description=(
            f"Quality gate for @{config.alias}: "
            f"{'promoted' if decision.promoted else 'NOT promoted'} {version}"
        ),
    )
    get_run_logger().info(
        "quality gate @%s: %s %s; new %s=%s, current %s=%s (%s)",
        config.alias,
        "promoted" if decision.promoted else "kept the alias, did not promote",
        version,
        version,
        decision.candidate_score,
        decision.current or "none",
        decision.current_score,
        decision.reason,
    )
    return decision


@task(name="plan-prune", cache_policy=NO_CACHE, **IO_RETRIES)
def plan_prune(
    source: str, experiment: str, keep_last: int, keep_days: float, grace_hours: float
) -> prune.PrunePlan:
    """Which versions and leftovers a prune keeps (and why) and deletes; changes nothing."""
    with open_store(source) as store:
        return prune.plan_prune(store, experiment, keep_last, keep_days, grace_hours)


# No retries: deletion re-checks the store itself; run the flow again to continue.
@task(name="execute-prune", cache_policy=NO_CACHE)
def execute_prune(source: str, plan: prune.PrunePlan) -> prune.PruneResult:
    """Delete what the plan says (manifest first), re-checking pointers version by version."""
    with open_store(source) as store:
        return prune.execute_prune(store, plan)
