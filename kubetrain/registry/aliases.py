"""Aliases: named pointers to versions, moved atomically, every move kept in an append-only history.

An alias is the file `<experiment>/aliases/<name>` holding `{"version": …, "event": …}`. It is
written as a uniquely named `.part` file and renamed onto the alias (as the store does for LATEST):
concurrent promotes each rename a whole file, so the alias always names one of them, never a torn
mix. Each move is first written as its own history file `aliases/history/<UTC time>-<random>.json`
(no read-modify-write, so concurrent writers never lose an event); the alias then names that event,
which tells which of several concurrent moves won.
"""

from __future__ import annotations

import json
import posixpath
import secrets
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from kubetrain.locations import quote_value
from kubetrain.store import (
    LATEST,
    MANIFEST,
    PART_SUFFIX,
    ArtifactStore,
    StoreError,
    VersionNotFoundError,
    validate_name,
)

ALIASES = "aliases"
HISTORY = "history"
ALIAS_PREFIX = "@"
ALIAS_MAX_BYTES = 64 * 1024  # an alias or history event is a few hundred bytes of JSON
# Entries of an experiment folder that are not versions.
RESERVED = frozenset({LATEST, ALIASES})


class AliasError(StoreError):
    """An alias name or reference a user can fix."""


@dataclass(frozen=True)
class AliasEvent:
    """One move of an alias: who moved it, when, from which version to which, and why."""

    id: str
    experiment: str
    alias: str
    from_version: str | None
    to_version: str | None
    who: str
    when: str
    why: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def validate_alias(name: str) -> str:
    """Return name if it can be an alias (a safe file name other than the reserved ones)."""
    validate_name("alias", name)
    if name == HISTORY or name.upper() == LATEST or name.endswith(PART_SUFFIX):
        raise AliasError(
            f"alias name {quote_value(name)} is reserved; choose another, e.g. production"
        )
    return name


def _alias_path(experiment: str, alias: str) -> str:
    return posixpath.join(experiment, ALIASES, alias)


def _history_dir(experiment: str) -> str:
    return posixpath.join(experiment, ALIASES, HISTORY)


def read_alias(store: ArtifactStore, experiment: str, alias: str) -> str | None:
    """The version an alias names, or None if the alias was never set."""
    validate_name("experiment", experiment)
    path = _alias_path(experiment, validate_alias(alias))
    if not store.backend.exists(path):
        return None
    try:
        version = json.loads(store.backend.read_bytes(path, ALIAS_MAX_BYTES))["version"]
        return validate_name("version", version)
    except (ValueError, KeyError, TypeError):
        raise AliasError(
            f"{store.url}/{path} is not an alias file kubetrain wrote; "
            f"set it again with `kubetrain versions promote --alias {alias} --version …`"
        ) from None


def list_aliases(store: ArtifactStore, experiment: str) -> dict[str, str]:
    """alias → version for every alias of an experiment."""
    folder = posixpath.join(validate_name("experiment", experiment), ALIASES)
    if not store.backend.exists(folder):
        return {}
    aliases = {}
    for entry in store.backend.listdir(folder):
        if entry == HISTORY or entry.endswith(PART_SUFFIX):
            continue
        version = read_alias(store, experiment, entry)
        if version is not None:
            aliases[entry] = version
    return aliases


def resolve(store: ArtifactStore, experiment: str, ref: str | None) -> str:
    """The complete version a reference names: a version, `@alias`, or LATEST (also when empty)."""
    if not ref or ref.upper() == LATEST:
        latest = store.latest(experiment)
        if latest is None:
            raise VersionNotFoundError(f"{store.url}/{experiment} has no complete version")
        return latest
    if ref.startswith(ALIAS_PREFIX):
        alias = ref[len(ALIAS_PREFIX) :]
        version = read_alias(store, experiment, alias)
        if version is None:
            known = sorted(list_aliases(store, experiment))
            raise AliasError(
                f"alias {quote_value(alias)} is not set in {store.url}/{experiment} (aliases: "
                f"{', '.join(known) or 'none'}); set it with `kubetrain versions promote`"
            )
    else:
        version = validate_name("version", ref)
    store.read_manifest(experiment, version)  # raises, naming the complete versions, if it is not
    return version


def new_event_id(now: datetime | None = None) -> str:
    """A unique, time-sortable history file stem: YYYYMMDDTHHMMSS.ffffffZ-<8 hex> (UTC)."""
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    return f"{moment:%Y%m%dT%H%M%S.%fZ}-{secrets.token_hex(4)}"


def _put_atomic(store: ArtifactStore, path: str, data: bytes, unique: str) -> None:
    part = f"{path}.{unique}{PART_SUFFIX}"
    store.backend.write_bytes(part, data)
    store.backend.replace(part, path)


def _move(
    store: ArtifactStore,
    experiment: str,
    alias: str,
    previous: str | None,
    version: str | None,
    who: str,
    why: str,
) -> AliasEvent:
    now = datetime.now(UTC)
    event = AliasEvent(
        id=new_event_id(now),
        experiment=experiment,
        alias=alias,
        from_version=previous,
        to_version=version,
        who=who,
        when=now.isoformat(),
        why=why,
    )
    history = _history_dir(experiment)
    store.backend.makedirs(history)
    record = json.dumps(event.as_dict(), indent=2, sort_keys=True).encode() + b"\n"
    _put_atomic(store, posixpath.join(history, f"{event.id}.json"), record, "w")
    if version is None:
        store.backend.remove(_alias_path(experiment, alias))
        return event
    pointer = json.dumps({"version": version, "event": event.id}).encode() + b"\n"
    _put_atomic(store, _alias_path(experiment, alias), pointer, event.id)
    return event


def promote(
    store: ArtifactStore, experiment: str, alias: str, ref: str, who: str, why: str
) -> AliasEvent:
    """Point alias at the version ref names (a version, @alias or LATEST); record the move."""
    validate_alias(alias)
    version = resolve(store, experiment, ref)
    previous = read_alias(store, experiment, alias)
    event = _move(store, experiment, alias, previous, version, who, why)
    # A prune may have removed the version between the check above and the rename: then put the
    # alias back (recorded too) rather than leave it naming nothing.
    if not store.backend.exists(posixpath.join(experiment, version, MANIFEST)):
        _move(store, experiment, alias, version, previous, who, "undo: the version was pruned")
        raise VersionNotFoundError(
            f"{experiment}/{version} was pruned while {alias!r} was being moved to it; the alias "
            "was put back: promote a version that prune keeps"
        )
    return event


def history(store: ArtifactStore, experiment: str, alias: str | None = None) -> list[AliasEvent]:
    """Every recorded move (of one alias, or of all), oldest first."""
    folder = _history_dir(validate_name("experiment", experiment))
    if alias is not None:
        validate_alias(alias)
    if not store.backend.exists(folder):
        return []
    events = []
    for entry in store.backend.listdir(folder):
        if not entry.endswith(".json"):
            continue  # a .part still being written
        raw = json.loads(store.backend.read_bytes(posixpath.join(folder, entry), ALIAS_MAX_BYTES))
        event = AliasEvent(**{k: raw.get(k) for k in AliasEvent.__dataclass_fields__})
        if alias is None or event.alias == alias:
            events.append(event)
    return sorted(events, key=lambda e: e.id)


def current_event(store: ArtifactStore, experiment: str, alias: str) -> str | None:
    """The id of the history event the alias was last moved by (which concurrent move won)."""
    path = _alias_path(experiment, validate_alias(alias))
    if not store.backend.exists(path):
        return None
    event = json.loads(store.backend.read_bytes(path, ALIAS_MAX_BYTES)).get("event")
    return str(event) if event else None
