"""Scenarios for the registry (kubetrain/registry), run on a local folder and over real SFTP.

Versions are hand-made (tiny joblib files, small manifests) and published through the store's
own ArtifactStore.publish, so every scenario runs in seconds on either backend.
"""

from __future__ import annotations

import posixpath
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import joblib
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from kubetrain.registry import aliases
from kubetrain.registry.signing import sign_manifest
from kubetrain.store import MANIFEST, ArtifactStore, open_store, sha256_file

EXP = "letters"


def version_name(day: int, tag: int = 0) -> str:
    """A version name of the store's form, `day` days after 2026-01-01 (UTC)."""
    from datetime import UTC, datetime, timedelta

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
