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

Two more things live in the experiment folder (kubetrain/training/handoff.py). Fit-cache entries
go once their record's `written` time is older than `keep_days` (the cache lives as long as the
versions it helped; reusing an entry does not refresh it); one with a valid record but no
`written` (an older kubetrain) is kept, age unknown. An entry without a valid record is never
reused: it goes once nothing in it changed for `grace_hours`, since a write may be under way.
Fan-out staging `.staging/<version>` goes once its version's timestamp is older than
`grace_hours` (its parent was killed before clearing it), then `.staging` if empty. An entry's
record is removed first, so a prune killed at any point leaves no entry a reader would load.
"""

from __future__ import annotations

import posixpath
import re
from collections import Counter
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
    IntegrityError,
    StoreError,
    validate_name,
)
from kubetrain.store.protocol import MAX_LATEST_BYTES, MAX_MANIFEST_BYTES
from kubetrain.training.handoff import (
    CACHE_DIR,
    STAGING_DIR,
    Entry,
    read_record,
    remove_entry,
    remove_tree,
)

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
class LeftoverDecision:
    """A fit-cache entry (by key) or a staging folder (by version): whether it goes, and why."""

    name: str
    delete: bool
    why: str


def _action(delete: bool) -> str:
    """The plan table's action column."""
    return "DELETE" if delete else "keep"


def _entries(count: int, kind: str = "") -> str:
    """'1 entry', '3 fit-cache entries'."""
    return f"{count} {kind}{'entry' if count == 1 else 'entries'}"


@dataclass(frozen=True)
class PrunePlan:
    """What a prune keeps (and why) and what it deletes."""

    experiment: str
    keep: dict[str, list[str]]  # version → reasons
    delete: list[str]
    delete_incomplete: list[str]
    keep_incomplete: dict[str, str]  # leftover → why it stays
    cache: list[LeftoverDecision] = field(default_factory=list)
    staging: list[LeftoverDecision] = field(default_factory=list)
    # The rules and clock the plan was made with: deletion judges each cache entry again.
    keep_days: float = 0.0
    grace_hours: float = 0.0
    now: datetime | None = None

    def rows(self, list_cache: bool = False) -> list[dict[str, str]]:
        """The plan as a table: versions newest first, staging, then the fit cache.

        The cache may hold thousands of entries: one row per action and reason, unless listed.
        """
        rows = [{"version": v, "action": "keep", "why": ", ".join(r)} for v, r in self.keep.items()]
        rows += [{"version": v, "action": "DELETE", "why": "not protected"} for v in self.delete]
        rows += [
            {"version": v, "action": "DELETE", "why": "incomplete, older than the grace period"}
            for v in self.delete_incomplete
        ]
        rows += [
            {"version": v, "action": "keep", "why": why} for v, why in self.keep_incomplete.items()
        ]
        rows.sort(key=lambda r: r["version"], reverse=True)
        rows += [
            {"version": f"{STAGING_DIR}/{d.name}", "action": _action(d.delete), "why": d.why}
            for d in sorted(self.staging, key=lambda d: d.name, reverse=True)
        ]
        if list_cache:
            rows += [
                {
                    "version": f"{CACHE_DIR}/{d.name[:12]}…",
                    "action": _action(d.delete),
                    "why": d.why,
                }
                for d in sorted(self.cache, key=lambda d: (not d.delete, d.why, d.name))
            ]
        else:
            groups = Counter((_action(d.delete), d.why) for d in self.cache)
            rows += [
                {"version": f"{CACHE_DIR} ({_entries(count)})", "action": action, "why": why}
                for (action, why), count in sorted(groups.items())
            ]
        return rows


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
    return PrunePlan(
        experiment,
        keep,
        sorted(delete),
        sorted(delete_incomplete),
        keep_incomplete,
        cache=[
            _judge_cache_entry(store, experiment, key, now, keep_days, grace_hours)
            for key in _folder_names(store, posixpath.join(experiment, CACHE_DIR))
        ],
        staging=[
            _judge_staging(name, now, grace_hours)
            for name in _folder_names(store, posixpath.join(experiment, STAGING_DIR))
        ],
        keep_days=keep_days,
        grace_hours=grace_hours,
        now=now,
    )


def _folder_names(store: ArtifactStore, folder: str) -> list[str]:
    """The entries of folder, sorted by name; none when it is no folder (or a symlink)."""
    if store.backend.kind(folder) != "dir":
        return []
    return sorted(store.backend.listdir(folder))


def _written_time(written: object) -> datetime | None:
    """A record's `written` time (ISO 8601, UTC if it names no zone); None when absent or bad."""
    if not isinstance(written, str):
        return None
    try:
        moment = datetime.fromisoformat(written)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _last_change(store: ArtifactStore, folder: str) -> datetime | None:
    """When anything directly in folder, or folder itself, last changed; None when it is gone."""
    backend = store.backend
    moments = [backend.modified(folder)]
    if backend.kind(folder) == "dir":
        moments += [backend.modified(posixpath.join(folder, n)) for n in backend.listdir(folder)]
    known = [m for m in moments if m is not None]
    return datetime.fromtimestamp(max(known), UTC) if known else None


def _judge_cache_entry(
    store: ArtifactStore,
    experiment: str,
    key: str,
    now: datetime,
    keep_days: float,
    grace_hours: float,
) -> LeftoverDecision:
    """Whether one fit-cache entry goes: by its record's `written` time, else by its files'."""
    entry = Entry.cached(experiment, key)
    if store.backend.kind(entry.folder) != "dir":
        return LeftoverDecision(key, False, "not a cache entry (no folder): remove it by hand")
    try:
        record = read_record(store, entry)
    except IntegrityError:
        problem = "record.json is not a fit record"
    else:
        if record is not None:
            written = _written_time(record.get("written"))
            if written is None:
                return LeftoverDecision(key, False, "age unknown (record has no written time)")
            if now - written < timedelta(days=keep_days):
                return LeftoverDecision(key, False, f"written within {keep_days:g} days")
            return LeftoverDecision(key, True, f"written more than {keep_days:g} days ago")
        problem = "no record.json"
    # Never reused; but a run may be writing it right now, so its files' age decides.
    changed = _last_change(store, entry.folder)
    if changed is not None and now - changed < timedelta(hours=grace_hours):
        return LeftoverDecision(
            key, False, f"{problem} yet, changed within the {grace_hours:g} h grace period"
        )
    return LeftoverDecision(key, True, f"{problem}: never reused, unchanged for {grace_hours:g} h")


def _judge_staging(version: str, now: datetime, grace_hours: float) -> LeftoverDecision:
    """Whether one run's staging folder goes: by the UTC time its version's name starts with."""
    moment = version_time(version)
    if moment is None:
        return LeftoverDecision(version, False, "age unknown (name has no timestamp)")
    if now - moment < timedelta(hours=grace_hours):
        return LeftoverDecision(
            version, False, f"within the {grace_hours:g} h grace period: its run may still be going"
        )
    return LeftoverDecision(
        version, True, f"older than the {grace_hours:g} h grace period: its run never cleared it"
    )


@dataclass
class PruneResult:
    """What a prune deleted and what it left, with why."""

    deleted: list[str] = field(default_factory=list)
    deleted_incomplete: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    deleted_cache: list[str] = field(default_factory=list)
    deleted_staging: list[str] = field(default_factory=list)


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
    _remove_staging(store, plan, result)
    _remove_cache_entries(store, plan, result)
    return result


def _remove_staging(store: ArtifactStore, plan: PrunePlan, result: PruneResult) -> None:
    """Remove the staging folders the plan names, records first; then `.staging` if empty."""
    staging = posixpath.join(plan.experiment, STAGING_DIR)
    backend = store.backend
    for decision in plan.staging:
        if not decision.delete:
            continue
        folder = posixpath.join(staging, decision.name)
        shown = f"{STAGING_DIR}/{decision.name}"
        try:
            if backend.kind(folder) == "dir":
                for name in backend.listdir(folder):
                    fit = posixpath.join(folder, name)
                    if backend.kind(fit) == "dir":
                        remove_entry(store, Entry(fit))
            remove_tree(store, folder)
        except (StoreError, OSError) as error:
            result.skipped[shown] = f"not fully removed ({error}); prune again"
            continue
        if backend.kind(folder) is not None:
            result.skipped[shown] = "not fully removed (not empty); prune again"
            continue
        result.deleted_staging.append(decision.name)
    if any(d.delete for d in plan.staging):
        backend.rmdir(staging)  # only if no other run is staging right now


def _remove_cache_entries(store: ArtifactStore, plan: PrunePlan, result: PruneResult) -> None:
    """Remove the cache entries the plan names that the rules still condemn: record first."""
    now = plan.now or datetime.now(UTC)
    for decision in plan.cache:
        if not decision.delete:
            continue
        shown = f"{CACHE_DIR}/{decision.name}"
        entry = Entry.cached(plan.experiment, decision.name)
        if store.backend.kind(entry.folder) is None:
            result.skipped[shown] = "already gone"
            continue
        again = _judge_cache_entry(
            store, plan.experiment, decision.name, now, plan.keep_days, plan.grace_hours
        )
        if not again.delete:
            result.skipped[shown] = f"changed after the plan: {again.why}"
            continue
        try:
            remove_entry(store, entry)
        except (StoreError, OSError) as error:
            # Its record is gone already: nobody reuses it, a later prune removes the rest.
            result.skipped[shown] = f"not fully removed ({error}); prune again"
            continue
        result.deleted_cache.append(decision.name)


MAX_SKIPPED_LINES = 20


def plan_text(plan: PrunePlan, result: PruneResult | None, list_cache: bool = False) -> str:
    """What `kubetrain versions prune` prints: the plan, and what was done when it was run."""
    from kubetrain.registry.catalog import format_table

    lines = [
        f"{plan.experiment}: keep {len(plan.keep)} version(s), delete {len(plan.delete)}; "
        f"incomplete leftovers: delete {len(plan.delete_incomplete)}, "
        f"keep {len(plan.keep_incomplete)}",
    ]
    cache_gone = sum(d.delete for d in plan.cache)
    staging_gone = sum(d.delete for d in plan.staging)
    if plan.cache or plan.staging:
        lines.append(
            f"fit cache: delete {_entries(cache_gone)}, keep {len(plan.cache) - cache_gone}; "
            f"staging: delete {staging_gone} folder(s), keep {len(plan.staging) - staging_gone}"
        )
    lines.append(format_table(plan.rows(list_cache), empty="(nothing stored)"))
    if plan.cache and not list_cache:
        lines.append("fit cache: one line per reason; run again with list_cache=true to list all")
    if result is None:
        if plan.delete or plan.delete_incomplete or cache_gone or staging_gone:
            lines.append("dry run: nothing was deleted; run again with delete=true to delete")
    else:
        done = (
            f"deleted {len(result.deleted)} version(s) and "
            f"{len(result.deleted_incomplete)} leftover(s)"
        )
        if plan.cache or plan.staging:
            done += (
                f", {_entries(len(result.deleted_cache), 'fit-cache ')}, "
                f"{len(result.deleted_staging)} staging folder(s)"
            )
        lines.append(done)
        skipped = list(result.skipped.items())
        lines += [f"skipped {name}: {why}" for name, why in skipped[:MAX_SKIPPED_LINES]]
        if len(skipped) > MAX_SKIPPED_LINES:
            lines.append(f"… and {len(skipped) - MAX_SKIPPED_LINES} more skipped")
    return "\n".join(lines)
