"""Store behaviour that surviving mutants showed untested: what read errors say, and manifests
that list their files only under `models` (the form manifest_files falls back to)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from kubetrain.store import (
    ArtifactStore,
    IntegrityError,
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
