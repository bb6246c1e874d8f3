"""Scenarios for the registry (kubetrain/registry), run on a local folder and over real SFTP.

Versions are hand-made (tiny joblib files, small manifests) and published through the store's
own ArtifactStore.publish, so every scenario runs in seconds on either backend.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pickle
import posixpath
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import joblib
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from kubetrain.registry import aliases, prune
from kubetrain.registry.signing import sign_manifest
from kubetrain.store import MANIFEST, ArtifactStore, open_store, sha256_file
from kubetrain.training.engine import FitOutcome
from kubetrain.training.handoff import (
    CACHE_DIR,
    RECORD,
    STAGING_DIR,
    Entry,
    read_outcome,
    write_outcome,
)

EXP = "letters"


def version_name(day: int, tag: int = 0) -> str:
    """A version name of the store's form, `day` days after 2026-01-01 (UTC)."""

    moment = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(days=day, seconds=tag)
    return f"{moment:%Y%m%dT%H%M%SZ}-{tag:08x}"


def make_version(
    store: ArtifactStore,
    workdir: Path,
    version: str,
    scores: Mapping[str, float],
    parameters: Mapping[str, Any] | None = None,
    data_sha256: str = "d" * 64,
    key: Ed25519PrivateKey | None = None,
    experiment: str = EXP,
) -> dict[str, Any]:
    """Publish a small version whose models have the given mean accuracies; return its manifest."""
    folder = workdir / f"src-{version}"
    folder.mkdir(parents=True)
    files: dict[str, Path] = {}
    models: dict[str, Any] = {}
    for model, mean in scores.items():
        path = folder / f"clf_{model}.joblib"
        joblib.dump({"model": model, "version": version}, path)
        files[path.name] = path
        models[model] = {
            "file": path.name,
            "sha256": sha256_file(path),
            "bytes": path.stat().st_size,
            "params": {},
            "cv": {"accuracy": {"folds": [mean] * 3, "mean": mean, "std": 0.01}},
        }
    manifest: dict[str, Any] = {
        "version": version,
        "created": f"{version[:4]}-{version[4:6]}-{version[6:8]}T00:00:00+00:00",
        "flow_run_id": None,
        "data": {
            "source": "data/sample.csv",
            "sha256": data_sha256,
            "rows": 10,
            "columns": ["a", "b", "# Letter"],
            "target": "# Letter",
        },
        "parameters": dict(parameters or {"folds": 5, "normalize": "l2"}),
        "models": models,
        "files": {
            n: {"sha256": sha256_file(p), "bytes": p.stat().st_size} for n, p in files.items()
        },
    }
    if key is not None:
        manifest = sign_manifest(manifest, key)
    store.publish(experiment, version, files, manifest)
    return manifest


def run_concurrently(count: int, work: Callable[[int], None], timeout: float = 60) -> None:
    """Run work(0..count-1) in threads released together; re-raise the first failure."""
    barrier = threading.Barrier(count)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            barrier.wait(timeout)
            work(i)
        except BaseException as error:  # collected and re-raised in the test's thread
            errors.append(error)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
        assert not thread.is_alive(), "a concurrent worker hung"
    if errors:
        raise errors[0]


def promote_race(url: str, workdir: Path, count: int = 8) -> None:
    """count concurrent promotes of different versions to one alias: one wins, all recorded."""
    with open_store(url) as store:
        versions = [version_name(i) for i in range(count)]
        for version in versions:
            make_version(store, workdir, version, {"lda": 0.8})

    def promote(i: int) -> None:
        with open_store(url) as own:  # one connection per writer, as separate runs would have
            aliases.promote(own, EXP, "production", versions[i], f"writer-{i}", f"race {i}")

    run_concurrently(count, promote)
    with open_store(url) as store:
        winner = aliases.read_alias(store, EXP, "production")
        assert winner in versions
        events = aliases.history(store, EXP, "production")
        assert sorted(e.to_version or "" for e in events) == versions
        assert sorted(e.who for e in events) == sorted(f"writer-{i}" for i in range(count))
        # The alias names the event that put it there: the winning move is identifiable.
        current = aliases.current_event(store, EXP, "production")
        assert [e.to_version for e in events if e.id == current] == [winner]
        leftovers = [
            entry
            for folder in (f"{EXP}/aliases", f"{EXP}/aliases/history")
            for entry in store.backend.listdir(folder)
            if entry.endswith(".part")
        ]
        assert leftovers == []


def assert_no_visible_partial_version(store: ArtifactStore, workdir: Path) -> None:
    """Every version a reader can see is whole: fetch (which checks every sha256) succeeds."""
    for version in store.list_versions(EXP):
        store.fetch(EXP, version, workdir / "check", verify=True)
        manifest = store.read_manifest(EXP, version)
        for name in manifest["files"]:
            assert store.backend.exists(posixpath.join(EXP, version, name)), (version, name)


class Killed(BaseException):
    """Stands in for SIGKILL: nothing in the code under test catches a BaseException."""


def kill_on_remove(store: ArtifactStore, after: int) -> None:
    """Make the store's backend die at its `after`-th remove (the remove itself does not happen)."""
    real = store.backend.remove
    calls = {"n": 0}

    def remove(path: str) -> None:
        calls["n"] += 1
        if calls["n"] >= after:
            raise Killed(path)
        real(path)

    store.backend.remove = remove  # type: ignore[method-assign]


def manifest_path(version: str) -> str:
    return posixpath.join(EXP, version, MANIFEST)


# -- retention: a store with every kind of version, and the checks on it --------------

NOW = datetime(2026, 3, 1, tzinfo=UTC)  # version_name(59) is 2026-03-01
OLD = [version_name(day) for day in range(0, 10)]  # 50-59 days old
RECENT = version_name(55)  # 4 days old
NEWEST = [version_name(57), version_name(58)]
LEFTOVER_OLD, LEFTOVER_YOUNG = version_name(20), version_name(59, tag=1)


def populate(url: str, workdir: Path) -> None:
    """Ten old versions, a recent one, two newest, an alias on an old one, two leftovers."""
    with open_store(url) as store:
        for version in [*OLD, RECENT, *NEWEST]:
            make_version(store, workdir, version, {"lda": 0.8})
        aliases.promote(store, EXP, "production", OLD[2], "x", "pinned")
        # Leftovers without a manifest: an interrupted publish and one still under way.
        for name in (LEFTOVER_OLD, LEFTOVER_YOUNG):
            store.backend.makedirs(f"{EXP}/{name}")
            store.backend.write_bytes(f"{EXP}/{name}/clf_lda.joblib.part", b"half")


def plan(url: str) -> prune.PrunePlan:
    with open_store(url) as store:
        return prune.plan_prune(store, EXP, keep_last=2, keep_days=7, grace_hours=24, now=NOW)


def check_plan(plan_: prune.PrunePlan) -> None:
    assert sorted(plan_.keep) == sorted([OLD[2], RECENT, *NEWEST])
    assert plan_.keep[OLD[2]] == ["@production"]
    assert "newest 2" in plan_.keep[NEWEST[1]]
    assert "LATEST" in plan_.keep[NEWEST[1]]
    assert plan_.keep[RECENT] == ["younger than 7 days"]
    assert sorted(plan_.delete) == sorted(v for v in OLD if v != OLD[2])
    assert plan_.delete_incomplete == [LEFTOVER_OLD]
    assert list(plan_.keep_incomplete) == [LEFTOVER_YOUNG]


def run_prune_and_check(url: str, workdir: Path) -> None:
    """The plan, a dry run that changes nothing, then the deletion (shared with the SFTP test)."""
    populate(url, workdir)
    first = plan(url)
    check_plan(first)
    text = prune.plan_text(first, None)
    assert "dry run: nothing was deleted" in text
    with open_store(url) as store:
        assert len(store.list_versions(EXP)) == 13
        result = prune.execute_prune(store, first)
        assert sorted(result.deleted) == sorted(first.delete)
        assert result.deleted_incomplete == [LEFTOVER_OLD]
        assert result.skipped == {}
        assert store.list_versions(EXP) == sorted(first.keep)
        remaining = set(store.backend.listdir(EXP))
        assert not remaining & {*first.delete, LEFTOVER_OLD}  # folders gone, not just files
        assert LEFTOVER_YOUNG in remaining
        assert store.latest(EXP) == NEWEST[1]
        assert aliases.read_alias(store, EXP, "production") == OLD[2]
        assert_no_visible_partial_version(store, workdir)
    assert plan(url).delete == []


def killed_prune_never_shows_a_partial_version(url: str, workdir: Path, points: list[int]) -> None:
    """Kill a prune at its n-th remove, for each n in points (a fresh store each time): readers
    only ever see whole versions, and a later prune finishes the job."""
    for after in points:
        store_url = f"{url}/kill-{after}"
        populate(store_url, workdir / f"src-{after}")
        with open_store(store_url) as store:
            kill_on_remove(store, after)
            with pytest.raises(Killed):
                prune.execute_prune(store, plan(store_url))
        with open_store(store_url) as store:
            assert_no_visible_partial_version(store, workdir / f"check-{after}")
            prune.execute_prune(store, plan(store_url))
            assert store.list_versions(EXP) == sorted([OLD[2], RECENT, *NEWEST])
            assert plan(store_url).delete_incomplete == []


# -- the fit cache and fan-out staging left in the experiment folder -----------------------

# The plans' clock: files the scenarios write now are 2 days old by it.
T0 = datetime.now(UTC).replace(microsecond=0) + timedelta(days=2)
CACHE_OLD, CACHE_YOUNG, CACHE_LEGACY = "a" * 64, "b" * 64, "c" * 64
CACHE_BROKEN, CACHE_ORPHAN, CACHE_WRITING = "d" * 64, "e" * 64, "f" * 64
STAGED_OLD = f"{T0 - timedelta(days=3):%Y%m%dT%H%M%SZ}-0000dead"
STAGED_YOUNG = f"{T0 - timedelta(hours=1):%Y%m%dT%H%M%SZ}-00000001"
OUTCOME = FitOutcome("lda", 0, 0.5, scores={"accuracy": 0.9})


def cache_row(key: str) -> str:
    """How the plan table names a cache entry."""
    return f"{CACHE_DIR}/{key[:12]}…"


def populate_cache_and_staging(url: str, root: Path) -> None:
    """Written through the store at url, whose folder is root on this machine: cache entries of
    every kind, an abandoned staging area (with a stray file) and a running parent's."""
    with open_store(url) as store:
        backend = store.backend
        stamp = {
            CACHE_OLD: (T0 - timedelta(days=40)).isoformat(),
            CACHE_YOUNG: (T0 - timedelta(days=1)).isoformat(),
        }
        for key, written in stamp.items():
            write_outcome(store, Entry.cached(EXP, key), OUTCOME, key=key, written=written)
        write_outcome(store, Entry.cached(EXP, CACHE_LEGACY), OUTCOME, key=CACHE_LEGACY)
        write_outcome(store, Entry.cached(EXP, CACHE_BROKEN), OUTCOME, key=CACHE_BROKEN)
        backend.write_bytes(f"{EXP}/{CACHE_DIR}/{CACHE_BROKEN}/{RECORD}", b"{")
        # A write killed before its record, and one under way now (files touched an hour ago).
        for key in (CACHE_ORPHAN, CACHE_WRITING):
            backend.makedirs(f"{EXP}/{CACHE_DIR}/{key}")
            backend.write_bytes(f"{EXP}/{CACHE_DIR}/{key}/{'0' * 64}.joblib.1a2b.part", b"half")
        for version in (STAGED_OLD, STAGED_YOUNG):
            for fold in (0, 1):
                staged = dataclasses.replace(OUTCOME, fold=fold)
                write_outcome(store, Entry.staged(EXP, version, "lda", fold), staged)
        backend.write_bytes(f"{EXP}/{STAGING_DIR}/{STAGED_OLD}/stray.part", b"x")
    writing = root / EXP / CACHE_DIR / CACHE_WRITING
    recent = (T0 - timedelta(hours=1)).timestamp()
    for path in (writing, *writing.iterdir()):
        os.utime(path, (recent, recent))


def plan_at_t0(url: str) -> prune.PrunePlan:
    """The plan at T0 keeping 30 days with a 24 h grace period."""
    with open_store(url) as store:
        return prune.plan_prune(store, EXP, keep_last=1, keep_days=30, grace_hours=24, now=T0)


def run_cache_prune_and_check(url: str, root: Path) -> None:
    """Plan, dry run and deletion of the cache and staging scenario (shared with the SFTP test)."""
    populate_cache_and_staging(url, root)
    planned = plan_at_t0(url)
    rows = {row["version"]: row for row in planned.rows(list_cache=True)}
    expected = [
        (CACHE_OLD, "DELETE", "written more than 30 days ago"),
        (CACHE_YOUNG, "keep", "written within 30 days"),
        (CACHE_LEGACY, "keep", "age unknown"),
        (CACHE_BROKEN, "DELETE", "not a fit record"),
        (CACHE_ORPHAN, "DELETE", "no record.json"),
        (CACHE_WRITING, "keep", "grace period"),
    ]
    for key, action, why in expected:
        assert rows[cache_row(key)]["action"] == action, key
        assert why in rows[cache_row(key)]["why"], key
    assert rows[f".staging/{STAGED_OLD}"]["action"] == "DELETE"
    assert rows[f".staging/{STAGED_YOUNG}"]["action"] == "keep"
    assert "grace period" in rows[f".staging/{STAGED_YOUNG}"]["why"]

    before = sorted(str(p) for p in root.rglob("*"))
    text = prune.plan_text(planned, None)
    assert "fit cache: delete 3 entries, keep 3" in text
    assert "staging: delete 1 folder(s), keep 1" in text
    assert "dry run: nothing was deleted" in text
    assert sorted(str(p) for p in root.rglob("*")) == before

    store = open_store(url)
    # A run reusing the old entry does not keep it alive: its age is since it was cached.
    assert read_outcome(store, Entry.cached(EXP, CACHE_OLD), "lda", 0) is not None
    result = prune.execute_prune(store, planned)
    assert result.skipped == {}, result.skipped
    cache = root / EXP / CACHE_DIR
    assert sorted(p.name for p in cache.iterdir()) == sorted(
        [CACHE_YOUNG, CACHE_LEGACY, CACHE_WRITING]
    )
    staging = root / EXP / STAGING_DIR
    assert [p.name for p in staging.iterdir()] == [STAGED_YOUNG]
    for key in (CACHE_YOUNG, CACHE_LEGACY):
        assert read_outcome(store, Entry.cached(EXP, key), "lda", 0) is not None
    assert read_outcome(store, Entry.staged(EXP, STAGED_YOUNG, "lda", 1), "lda", 1) is not None
    assert "deleted 0 version(s) and 0 leftover(s), 3 fit-cache entries, 1 staging folder(s)" in (
        prune.plan_text(planned, result)
    )
    # Once the last staging area is abandoned too, `.staging` itself goes.
    later = prune.plan_prune(store, EXP, 1, 30, 24, now=T0 + timedelta(days=1))
    prune.execute_prune(store, later)
    assert not staging.exists()
    assert (cache / CACHE_WRITING).exists() is False  # its write never finished: a leftover now
    store.backend.close()


# -- signing ---------------------------------------------------------------------------


def private_pem(key: Ed25519PrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


class RunsOnLoad:
    """A pickle payload that, when loaded, creates a marker file: proof joblib.load ran it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (str(self.marker), "w"))


def rewrite_model_and_manifest(root: Path, version: str, marker: Path) -> None:
    """What someone with write access to the store can do: change a model and its checksums."""
    folder = root / EXP / version
    evil = pickle.dumps(RunsOnLoad(marker))
    (folder / "clf_lda.joblib").write_bytes(evil)
    manifest = json.loads((folder / "manifest.json").read_text())
    digest = hashlib.sha256(evil).hexdigest()
    manifest["files"]["clf_lda.joblib"] = {"sha256": digest, "bytes": len(evil)}
    manifest["models"]["lda"].update(sha256=digest, bytes=len(evil))
    (folder / "manifest.json").write_text(json.dumps(manifest))
