"""Store behaviour that surviving mutants showed untested: what read errors say, and manifests
that list their files only under `models` (the form manifest_files falls back to)."""

from __future__ import annotations

import json
import logging
import os
import resource
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from kubetrain.store import (
    ArtifactStore,
    IntegrityError,
    LocalBackend,
    StoreError,
    VersionNotFoundError,
    manifest_files,
    open_store,
    sha256_file,
)

V1 = "20260101T000000Z-00000001"


def _publish(root: Path, tmp_path: Path, manifest_extra: dict | None = None) -> Path:
    source = tmp_path / "clf_lda.joblib"
    source.write_bytes(b"model bytes")
    manifest = {"version": V1, "files": {source.name: {"sha256": sha256_file(source)}}}
    manifest.update(manifest_extra or {})
    open_store(str(root)).publish("exp", V1, {source.name: source}, manifest)
    return source


@pytest.mark.parametrize(
    ("call", "kind"),
    [
        (lambda s: s.list_versions("../up"), "experiment"),
        (lambda s: s.latest("a/b"), "experiment"),
        (lambda s: s.read_manifest("../up", V1), "experiment"),
        (lambda s: s.read_manifest("exp", "../up"), "version"),
    ],
    ids=["list_versions", "latest", "read_manifest-experiment", "read_manifest-version"],
)
def test_read_errors_say_which_name_is_invalid(
    tmp_path: Path, call: Callable[[ArtifactStore], object], kind: str
) -> None:
    with pytest.raises(StoreError, match=rf"^invalid {kind} name '"):
        call(open_store(str(tmp_path)))


def test_invalid_latest_error_lists_the_complete_versions_and_the_fix(tmp_path: Path) -> None:
    root = tmp_path / "store"
    _publish(root, tmp_path)
    (root / "exp" / "LATEST").write_text("../outside\n")
    store = open_store(str(root))
    with pytest.raises(StoreError) as raised:
        store.latest("exp")
    message = str(raised.value)
    assert f"complete versions: ['{V1}']" in message
    assert message.endswith("publish a new version, which repairs LATEST")

    (root / "exp" / V1 / "manifest.json").unlink()  # now no complete version at all
    with pytest.raises(StoreError, match=r"complete versions: none\)"):
        store.latest("exp")


def test_read_manifest_of_an_incomplete_version_lists_what_is_complete(tmp_path: Path) -> None:
    root = tmp_path / "store"
    store = open_store(str(root))
    (root / "exp" / V1).mkdir(parents=True)
    with pytest.raises(VersionNotFoundError, match=r"complete versions: none$"):
        store.read_manifest("exp", V1)


@pytest.mark.parametrize(
    ("content", "problem"),
    [("{not json", "is not valid JSON"), ("[1, 2]", "is not a JSON object")],
)
def test_unreadable_manifest_names_its_path_and_problem(
    tmp_path: Path, content: str, problem: str
) -> None:
    root = tmp_path / "store"
    _publish(root, tmp_path)
    (root / "exp" / V1 / "manifest.json").write_text(content)
    store = open_store(str(root))
    with pytest.raises(StoreError, match=rf"/exp/{V1}/manifest\.json {problem}"):
        store.read_manifest("exp", V1)


def test_manifest_files_falls_back_to_the_models_entries() -> None:
    manifest = {
        "models": {
            "lda": {"file": "clf_lda.joblib", "sha256": "a" * 64},
            "rf": {"file": "clf_rf.joblib", "sha256": "b" * 64},
        }
    }
    assert manifest_files(manifest) == {"clf_lda.joblib": "a" * 64, "clf_rf.joblib": "b" * 64}
    assert manifest_files({"version": V1}) == {}  # neither map: nothing is covered


def test_fetch_verifies_a_manifest_that_lists_files_only_under_models(tmp_path: Path) -> None:
    root = tmp_path / "store"
    source = _publish(root, tmp_path)
    manifest_path = root / "exp" / V1 / "manifest.json"
    models = {"lda": {"file": source.name, "sha256": sha256_file(source)}}
    manifest_path.write_text(json.dumps({"version": V1, "models": models}))
    store = open_store(str(root))
    fetched = store.fetch("exp", V1, tmp_path / "good")
    assert (fetched / source.name).read_bytes() == b"model bytes"

    (root / "exp" / V1 / source.name).write_bytes(b"tampered")
    with pytest.raises(
        IntegrityError,
        match=r"sha256 differs from the manifest; the file was changed after publishing and "
        r"was not kept$",
    ):
        store.fetch("exp", V1, tmp_path / "bad")
    assert not (tmp_path / "bad" / V1 / source.name).exists()


def test_a_manifest_whose_models_lack_file_entries_names_the_problem(tmp_path: Path) -> None:
    root = tmp_path / "store"
    _publish(root, tmp_path)
    (root / "exp" / V1 / "manifest.json").write_text(json.dumps({"models": {"lda": {}}}))
    with pytest.raises(StoreError) as raised:
        open_store(str(root)).fetch("exp", V1, tmp_path / "out")
    assert str(raised.value).endswith(
        f"/exp/{V1}/manifest.json does not list its files (name -> sha256): KeyError"
    )
    assert not (tmp_path / "out").exists()


def test_fetching_a_version_again_into_the_same_folder_refreshes_it(tmp_path: Path) -> None:
    root = tmp_path / "store"
    _publish(root, tmp_path)
    store = open_store(str(root))
    first = store.fetch("exp", V1, tmp_path / "out")
    (first / "clf_lda.joblib").write_bytes(b"stale local copy")
    again = store.fetch("exp", V1, tmp_path / "out")
    assert again == first
    assert (again / "clf_lda.joblib").read_bytes() == b"model bytes"


def test_a_listed_file_missing_from_the_store_says_to_publish_again(tmp_path: Path) -> None:
    root = tmp_path / "store"
    _publish(root, tmp_path)
    (root / "exp" / V1 / "clf_lda.joblib").unlink()
    with pytest.raises(StoreError) as raised:
        open_store(str(root)).fetch("exp", V1, tmp_path / "out")
    assert str(raised.value).endswith(
        f"/exp/{V1}/clf_lda.joblib is missing or not a regular file (symlinks are not "
        "followed); publish the version again"
    )


V2 = "20260102T000000Z-00000002"
V3 = "20260103T000000Z-00000003"


def _plant_complete(root: Path, version: str) -> None:
    """A complete version another publisher left without moving LATEST (it crashed)."""
    (root / "exp" / version).mkdir(parents=True)
    (root / "exp" / version / "manifest.json").write_text('{"files": {}}')


def test_latest_moves_to_the_newest_of_several_newer_complete_versions(tmp_path: Path) -> None:
    root = tmp_path / "store"
    _plant_complete(root, V2)
    _plant_complete(root, V3)
    clock = lambda: datetime(2026, 1, 4, tzinfo=UTC)  # noqa: E731
    source = tmp_path / "m.bin"
    source.write_bytes(b"m")
    store = ArtifactStore(LocalBackend(root), clock=clock)
    store.publish("exp", V1, {"m.bin": source}, {"files": {}})
    assert (root / "exp" / "LATEST").read_text() == f"{V3}\n"


def test_an_invalid_latest_is_replaced_with_a_warning_naming_it_and_its_successor(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "store"
    (root / "exp").mkdir(parents=True)
    (root / "exp" / "LATEST").write_text("../outside\n")
    caplog.set_level(logging.WARNING, logger="kubetrain.store.protocol")
    _publish(root, tmp_path)
    url = root.as_uri()
    assert caplog.messages == [
        f"{url}/exp/LATEST was invalid ('../outside' is not a version name); replacing it with {V1}"
    ]


def test_a_latest_that_cannot_be_written_warns_what_to_fix_and_leaves_no_part(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "store"
    (root / "exp" / "LATEST").mkdir(parents=True)
    (root / "exp" / "LATEST" / "keep").write_text("a folder in LATEST's way")
    caplog.set_level(logging.WARNING, logger="kubetrain.store.protocol")
    _publish(root, tmp_path)
    url = root.as_uri()
    invalid, message = caplog.messages
    assert invalid.endswith(
        f"/exp/LATEST was invalid (it is a dir, not a regular file); replacing it with {V1}"
    )
    assert message.startswith(
        f"{url}/exp/{V1} is published and complete, but LATEST could not be updated: cannot "
        f"rename {root}/exp/LATEST.{V1}.part to {root}/exp/LATEST: "
    )
    assert message.endswith(
        f". Make {url}/exp/LATEST a writable file (or remove it) and publish again, or fetch "
        "this version by name"
    )
    assert sorted(p.name for p in (root / "exp").iterdir()) == [V1, "LATEST"]  # no .part


def test_the_latest_part_file_is_written_inside_the_experiment(tmp_path: Path) -> None:
    root = tmp_path / "store"
    written: list[str] = []

    class Recording(LocalBackend):
        def write_bytes(self, path: str, data: bytes) -> None:
            written.append(path)
            super().write_bytes(path, data)

    source = tmp_path / "m.bin"
    source.write_bytes(b"m")
    ArtifactStore(Recording(root)).publish("exp", V1, {"m.bin": source}, {"files": {}})
    assert written == [f"exp/{V1}/manifest.json.part", f"exp/LATEST.{V1}.part"]


def test_read_bytes_reads_no_more_than_the_limit_from_an_endless_file(tmp_path: Path) -> None:
    (tmp_path / "zero").symlink_to("/dev/zero")
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    in_use = int(Path("/proc/self/statm").read_text().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    resource.setrlimit(resource.RLIMIT_AS, (in_use + (512 << 20), hard))  # an endless read fails
    try:
        with pytest.raises(StoreError, match=r"zero is larger than the 1024 bytes allowed"):
            LocalBackend(tmp_path).read_bytes("zero", 1024)
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
