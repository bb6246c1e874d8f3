"""The registry flows: list, show, diff, promote, history and prune versions on a store.

Each flow prints what `kubetrain versions …` shows and leaves it as Prefect artifacts too
(README "Versions"). A version is named by its name, `@alias`, or LATEST (also when empty).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flows._flow import kubetrain_flow


@dataclass(frozen=True)
class RegistryOutcome:
    """What a registry flow found or did, as text for the terminal and as data."""

    text: str
    data: Any


def _markdown_block(text: str) -> str:
    return f"```\n{text}\n```"


@kubetrain_flow(name="versions-list")
def versions_list(
    source: str = "./artifacts", experiment: str = "default", limit: int = 50
) -> RegistryOutcome:
    """List an experiment's versions: time, data fingerprint, scores and the aliases naming them.

    Args:
        source: The store: a folder, file:///abs/path or sftp://user@host[:port]/path (the
            train flow's destination).
        experiment: Experiment whose versions to list.
        limit: Show at most this many versions, newest first.
    """
    from prefect.artifacts import create_table_artifact

    from kubetrain.registry.catalog import listing_table, listing_text
    from tasks.versions import list_versions

    listing = list_versions(source, experiment, limit)
    text = listing_text(listing)
    create_table_artifact(
        key="versions",
        table=listing_table(listing),
        description=text.split("\n", 1)[0],
    )
    return RegistryOutcome(text=text, data=listing)


@kubetrain_flow(name="versions-show")
def versions_show(
    source: str = "./artifacts", experiment: str = "default", version: str = "LATEST"
) -> RegistryOutcome:
    """Show one version's manifest: data, scores, parameters, environment, files, signature.

    Args:
        source: The store: a folder, file:///abs/path or sftp://user@host[:port]/path.
        experiment: Experiment the version belongs to.
        version: A version name, @alias (e.g. @production) or LATEST.
    """
    from prefect.artifacts import create_markdown_artifact

    from tasks.versions import show_version

    shown = show_version(source, experiment, version)
    create_markdown_artifact(
        key="version",
        markdown=_markdown_block(shown.text),
        description=f"{experiment}/{shown.version}",
    )
    return RegistryOutcome(text=shown.text, data=shown.manifest)


@kubetrain_flow(name="versions-diff")
def versions_diff(
    old: str,
    new: str = "LATEST",
    source: str = "./artifacts",
    experiment: str = "default",
) -> RegistryOutcome:
    """Compare two versions: changed parameters, data fingerprint, per-model score changes.

    Args:
        old: The version to compare from: a version name, @alias or LATEST.
        new: The version to compare to: a version name, @alias or LATEST.
        source: The store: a folder, file:///abs/path or sftp://user@host[:port]/path.
        experiment: Experiment both versions belong to.
    """
    from prefect.artifacts import create_table_artifact

    from tasks.versions import diff_versions

    diff = diff_versions(source, experiment, old, new)
    create_table_artifact(
        key="versions-diff-scores",
        table=diff.score_rows(),
        description=f"Scores {diff.old} → {diff.new}",
    )
    create_table_artifact(
        key="versions-diff-parameters",
        table=diff.parameter_rows() or [{"parameter": "(none changed)"}],
        description=f"Parameters {diff.old} → {diff.new}; data "
        + ("same" if diff.old_data == diff.new_data else "different"),
    )
    return RegistryOutcome(text=diff.text, data=diff)


@kubetrain_flow(name="versions-promote")
def versions_promote(
    alias: str,
    version: str,
    reason: str = "",
    source: str = "./artifacts",
    experiment: str = "default",
) -> RegistryOutcome:
    """Point an alias (e.g. production) at a version; the move is recorded in the history.

    Args:
        alias: Alias to move, e.g. production or staging (letters, digits, '.', '_', '-').
        version: Version to point it at: a version name, another @alias or LATEST.
        reason: Why, kept in the alias history.
        source: The store: a folder, file:///abs/path or sftp://user@host[:port]/path.
        experiment: Experiment the version belongs to.
    """
    from prefect.artifacts import create_table_artifact

    from tasks.versions import promote

    event = promote(source, experiment, alias, version, reason or "promoted by hand")
    create_table_artifact(key="alias-move", table=[event.as_dict()], description=f"@{alias} moved")
    text = f"@{alias}: {event.from_version or 'unset'} -> {event.to_version} (event {event.id})"
    return RegistryOutcome(text=text, data=event)


@kubetrain_flow(name="versions-history")
def versions_history(
    alias: str | None = None, source: str = "./artifacts", experiment: str = "default"
) -> RegistryOutcome:
    """Every recorded alias move, oldest first: who, when, from, to, why.

    Args:
        alias: Only this alias's moves; empty for all aliases.
        source: The store: a folder, file:///abs/path or sftp://user@host[:port]/path.
        experiment: Experiment whose alias history to show.
    """
    from prefect.artifacts import create_table_artifact

    from kubetrain.registry.catalog import format_table
    from tasks.versions import alias_history

    events = alias_history(source, experiment, alias or None)
    rows = [
        {
            "when": e.when[:19].replace("T", " "),
            "alias": f"@{e.alias}",
            "from": e.from_version or "-",
            "to": e.to_version or "-",
            "who": e.who,
            "why": e.why,
        }
        for e in events
    ]
    create_table_artifact(key="alias-history", table=rows or [{"when": "(no moves)"}])
    return RegistryOutcome(text=format_table(rows, empty="(no alias moves)"), data=events)


@kubetrain_flow(name="versions-prune")
def versions_prune(
    source: str = "./artifacts",
    experiment: str = "default",
    keep_last: int = 10,
    keep_days: float = 30.0,
    grace_hours: float = 24.0,
    delete: bool = False,
    list_cache: bool = False,
) -> RegistryOutcome:
    """Plan (and with delete, carry out) removing old versions, fit-cache entries and staging.

    Args:
        source: The store: a folder, file:///abs/path or sftp://user@host[:port]/path.
        experiment: Experiment to prune.
        keep_last: Always keep this many newest complete versions (at least 1).
        keep_days: Always keep versions younger than this many days; fit-cache entries go once
            cached longer ago than this.
        grace_hours: Remove incomplete leftovers (no manifest, fan-out staging, fit-cache
            entries without a record) only once older than this; make it longer than your
            longest training run, whose publish may still be under way.
        delete: Really delete. Without it the plan is only printed.
        list_cache: List every fit-cache entry; without it, one line per action and reason.
    """
    from prefect.artifacts import create_table_artifact
    from prefect.logging import get_run_logger

    from kubetrain.registry.prune import plan_text
    from tasks.versions import execute_prune, plan_prune

    plan = plan_prune(source, experiment, keep_last, keep_days, grace_hours)
    result = execute_prune(source, plan) if delete else None
    text = plan_text(plan, result, list_cache)
    create_table_artifact(
        key="prune-plan",
        table=plan.rows(list_cache) or [{"version": "(nothing stored)"}],
        description=text.split("\n", 1)[0] + ("" if delete else " (dry run)"),
    )
    get_run_logger().info("%s", text)
    return RegistryOutcome(text=text, data={"plan": plan, "result": result})
