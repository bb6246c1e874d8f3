"""Retention: delete old versions the plan does not protect, never one a reader could mistake.

Protected: the newest `keep_last` complete versions, every version an alias or LATEST names, and
every version younger than `keep_days`. Incomplete leftovers (no manifest) are removed once older
than `grace_hours` (an unfinished publish is named by its start time, so the grace period must
outlast the longest training run). Ages come from the UTC timestamp that starts every version
name (docs/design.md §3), else from the manifest's `created`; what cannot be dated is kept.

Deleting a version removes manifest.json first: from then on every reader treats the folder as
incomplete, so a prune killed at any point leaves complete versions or invisible leftovers, never
a version that looks complete with files missing. Just before and just after removing the
manifest, the pointers are read again: a version an alias was moved onto meanwhile is restored.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from kubetrain.registry.aliases import list_aliases
from kubetrain.registry.catalog import version_candidates
from kubetrain.store import (
    LATEST,
    MANIFEST,
    PART_SUFFIX,
    ArtifactStore,
    StoreError,
    validate_name,
)
from kubetrain.store.protocol import MAX_LATEST_BYTES, MAX_MANIFEST_BYTES

_STAMP = re.compile(r"^(\d{8}T\d{6})Z")


class PruneError(StoreError):
    """Retention settings a user can fix."""


def version_time(name: str, manifest: dict[str, Any] | None = None) -> datetime | None:
    """When a version was started: its name's UTC timestamp, else the manifest's `created`."""
    match = _STAMP.match(name)
    if match:
        return datetime.strptime(match.group(1), "%Y%m%dT%H%M%S").replace(tzinfo=UTC)
    created = (manifest or {}).get("created")
    if isinstance(created, str):
        try:
            moment = datetime.fromisoformat(created)
        except ValueError:
            return None
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return None


@dataclass(frozen=True)
class PrunePlan:
    """What a prune keeps (and why) and what it deletes."""

    experiment: str
    keep: dict[str, list[str]]  # version → reasons
    delete: list[str]
    delete_incomplete: list[str]
    keep_incomplete: dict[str, str]  # leftover → why it stays

    def rows(self) -> list[dict[str, str]]:
        """One row per version or leftover, newest first: the plan as a table."""
        rows = [{"version": v, "action": "keep", "why": ", ".join(r)} for v, r in self.keep.items()]
        rows += [{"version": v, "action": "DELETE", "why": "not protected"} for v in self.delete]
        rows += [
            {"version": v, "action": "DELETE", "why": "incomplete, older than the grace period"}
            for v in self.delete_incomplete
        ]
        rows += [
            {"version": v, "action": "keep", "why": why} for v, why in self.keep_incomplete.items()
        ]
        return sorted(rows, key=lambda r: r["version"], reverse=True)


def _pointed_at(store: ArtifactStore, experiment: str) -> dict[str, list[str]]:
    """version → the pointers naming it now (LATEST read raw: it may name a half-pruned one)."""
    pointers: dict[str, list[str]] = {}
    for alias, version in list_aliases(store, experiment).items():
        pointers.setdefault(version, []).append(f"@{alias}")
    latest_path = posixpath.join(experiment, LATEST)
    if store.backend.exists(latest_path):
        latest = store.backend.read_bytes(latest_path, MAX_LATEST_BYTES).decode().strip()
        pointers.setdefault(latest, []).append(LATEST)
    return pointers


def plan_prune(
    store: ArtifactStore,
    experiment: str,
    keep_last: int,
    keep_days: float,
    grace_hours: float,
    now: datetime | None = None,
) -> PrunePlan:
    """Decide, without changing anything, which versions and leftovers go."""
    if keep_last < 1:
        raise PruneError(f"keep_last must be at least 1, got {keep_last}; keep the newest N >= 1")
    if keep_days < 0 or grace_hours < 0:
        raise PruneError("keep_days and grace_hours must be >= 0; pass ages to protect")
    now = now or datetime.now(UTC)
    complete = sorted(store.list_versions(experiment), reverse=True)
    pointers = _pointed_at(store, experiment)
    keep: dict[str, list[str]] = {}
    delete: list[str] = []
    for index, version in enumerate(complete):
        reasons = list(pointers.get(version, []))
        if index < keep_last:
            reasons.append(f"newest {keep_last}")
        moment = version_time(version)
        if moment is None:
            moment = version_time(version, store.read_manifest(experiment, version))
        if moment is None:
            reasons.append("age unknown")
        elif now - moment < timedelta(days=keep_days):
            reasons.append(f"younger than {keep_days:g} days")
        if reasons:
            keep[version] = reasons
        else:
            delete.append(version)
    delete_incomplete: list[str] = []
    keep_incomplete: dict[str, str] = {}
    for name in sorted(set(version_candidates(store, experiment)) - set(complete), reverse=True):
        moment = version_time(name)
        if moment is None:
            keep_incomplete[name] = "incomplete, age unknown (name has no timestamp)"
        elif now - moment < timedelta(hours=grace_hours):
            keep_incomplete[name] = f"incomplete, within the {grace_hours:g} h grace period"
        else:
            delete_incomplete.append(name)
    # Oldest first: a prune stopped half-way has removed the versions least likely to be wanted.
    return PrunePlan(experiment, keep, sorted(delete), sorted(delete_incomplete), keep_incomplete)


@dataclass
class PruneResult:
    """What a prune deleted and what it left, with why."""

    deleted: list[str] = field(default_factory=list)
    deleted_incomplete: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)


def _remove_directory(store: ArtifactStore, path: str) -> None:
    store.backend.rmdir(path)  # leaves a non-empty folder: a later prune reports it


def _remove_folder(store: ArtifactStore, folder: str) -> None:
    """Remove every file of a version folder (no manifest left by now), then the folder."""
    for entry in store.backend.listdir(folder):
        store.backend.remove(posixpath.join(folder, entry))
    _remove_directory(store, folder)


def _try_remove_folder(store: ArtifactStore, folder: str, name: str, result: PruneResult) -> bool:
    try:
        _remove_folder(store, folder)
    except (StoreError, OSError) as error:
        # Its manifest is gone already: what is left is an invisible leftover a later prune removes.
        result.skipped[name] = f"left as an incomplete leftover: {type(error).__name__}"
        return False
    return True


def execute_prune(store: ArtifactStore, plan: PrunePlan) -> PruneResult:
    """Carry out a plan: manifest first, then the files, then the folder; re-checking pointers."""
    experiment = plan.experiment
    result = PruneResult()
    for version in plan.delete:
        validate_name("version", version)
        folder = posixpath.join(experiment, version)
        manifest_path = posixpath.join(folder, MANIFEST)
        if not store.backend.exists(manifest_path):
            result.skipped[version] = "already gone"
            continue
        if version in _pointed_at(store, experiment):
            result.skipped[version] = "a pointer was moved onto it after the plan"
            continue
        manifest = store.backend.read_bytes(manifest_path, MAX_MANIFEST_BYTES)
        store.backend.remove(manifest_path)  # from here on no reader treats it as complete
        if version in _pointed_at(store, experiment):
            part = f"{manifest_path}.restore{PART_SUFFIX}"
            store.backend.write_bytes(part, manifest)
            store.backend.replace(part, manifest_path)
            result.skipped[version] = "a pointer was moved onto it during the prune: restored"
            continue
        if _try_remove_folder(store, folder, version, result):
            result.deleted.append(version)
    for name in plan.delete_incomplete:
        folder = posixpath.join(experiment, validate_name("version", name))
        if store.backend.exists(posixpath.join(folder, MANIFEST)):
            result.skipped[name] = "its publish completed after the plan"
            continue
        if not store.backend.exists(folder):
            result.skipped[name] = "already gone"
            continue
        if _try_remove_folder(store, folder, name, result):
            result.deleted_incomplete.append(name)
    return result


def plan_text(plan: PrunePlan, result: PruneResult | None) -> str:
    """What `kubetrain versions prune` prints: the plan, and what was done when it was run."""
    from kubetrain.registry.catalog import format_table

    lines = [
        f"{plan.experiment}: keep {len(plan.keep)} version(s), delete {len(plan.delete)}; "
        f"incomplete leftovers: delete {len(plan.delete_incomplete)}, "
        f"keep {len(plan.keep_incomplete)}",
        format_table(plan.rows(), empty="(nothing stored)"),
    ]
    if result is None:
        if plan.delete or plan.delete_incomplete:
            lines.append("dry run: nothing was deleted; run again with delete=true to delete")
    else:
        lines.append(
            f"deleted {len(result.deleted)} version(s) and "
            f"{len(result.deleted_incomplete)} leftover(s)"
        )
        lines += [f"skipped {name}: {why}" for name, why in result.skipped.items()]
    return "\n".join(lines)
