"""kubetrain/store over LocalBackend: the publishing protocol the train flow relies on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kubetrain.store import (
    IntegrityError,
    StoreError,
    VersionNotFoundError,
    open_store,
    sha256_file,
)

V1 = "20260101T000000Z-00000001"
V2 = "20260102T000000Z-00000002"


def _files(tmp_path: Path, tag: str) -> dict[str, Path]:
    src = tmp_path / f"src-{tag}"
    src.mkdir()
    (src / "clf_lda.joblib").write_bytes(f"model {tag}".encode())
    (src / "metadata.json").write_text(json.dumps({"train_accuracy_lda": 0.5}))
    return {p.name: p for p in src.iterdir()}


def _manifest(version: str, files: dict[str, Path]) -> dict:
    return {
        "version": version,
        "files": {
            n: {"sha256": sha256_file(p), "bytes": p.stat().st_size} for n, p in files.items()
        },
    }


def test_publish_list_latest_fetch_roundtrip(tmp_path: Path) -> None:
    root = tmp_path / "store"
    files = _files(tmp_path, "a")
    with open_store(str(root)) as store:
        published = store.publish("exp", V1, files, _manifest(V1, files))
        assert published.location == f"{root.as_uri()}/exp/{V1}"
        assert store.list_versions("exp") == [V1]
        assert store.latest("exp") == V1
        assert store.read_manifest("exp", V1)["version"] == V1
        fetched = store.fetch("exp", None, tmp_path / "out")
    assert (root / "exp" / "LATEST").read_text().strip() == V1
    assert sorted(p.name for p in (root / "exp" / V1).iterdir()) == [
        "clf_lda.joblib",
        "manifest.json",
        "metadata.json",
    ]
    for name, path in files.items():
        assert (fetched / name).read_bytes() == path.read_bytes()
    assert not list(root.rglob("*.part"))


def test_file_url_and_plain_path_are_the_same_store(tmp_path: Path) -> None:
    files = _files(tmp_path, "a")
    open_store((tmp_path / "s").as_uri()).publish("exp", V1, files, _manifest(V1, files))
    assert open_store(str(tmp_path / "s")).latest("exp") == V1


def test_fetch_refuses_a_tampered_file(tmp_path: Path) -> None:
    root = tmp_path / "store"
    files = _files(tmp_path, "a")
    store = open_store(str(root))
    store.publish("exp", V1, files, _manifest(V1, files))
    (root / "exp" / V1 / "clf_lda.joblib").write_bytes(b"evil")
    with pytest.raises(IntegrityError, match="sha256 differs from the manifest"):
        store.fetch("exp", V1, tmp_path / "out")
    assert not (tmp_path / "out" / V1 / "clf_lda.joblib").exists()


def test_version_without_manifest_is_invisible(tmp_path: Path) -> None:
    root = tmp_path / "store"
    (root / "exp" / V2).mkdir(parents=True)
    (root / "exp" / V2 / "clf_lda.joblib").write_bytes(b"half")
    store = open_store(str(root))
    assert store.list_versions("exp") == []
    assert store.latest("exp") is None
    with pytest.raises(VersionNotFoundError, match="not a complete version"):
        store.fetch("exp", V2, tmp_path / "out")
    with pytest.raises(VersionNotFoundError, match="has no complete version"):
        store.fetch("exp", None, tmp_path / "out")


def test_stale_part_files_are_cleared_when_publishing_resumes(tmp_path: Path) -> None:
    root = tmp_path / "store"
    (root / "exp" / V1).mkdir(parents=True)
    (root / "exp" / V1 / "clf_lda.joblib.part").write_bytes(b"interrupted upload")
    files = _files(tmp_path, "a")
    open_store(str(root)).publish("exp", V1, files, _manifest(V1, files))
    assert not list(root.rglob("*.part"))
    assert (root / "exp" / V1 / "clf_lda.joblib").read_bytes() == b"model a"


def test_latest_only_moves_forward(tmp_path: Path) -> None:
    """A slower, older run finishing late writes the newest version into LATEST, not its own."""
    from kubetrain.store import LocalBackend

    root = tmp_path / "store"
    store = open_store(str(root))
    new, old = _files(tmp_path, "new"), _files(tmp_path, "old")
    store.publish("exp", V2, new, _manifest(V2, new))
    (root / "exp" / "LATEST").unlink()  # so the older publisher's write path runs

    renamed: list[str] = []

    class Recording(LocalBackend):
        def replace(self, source: str, target: str) -> None:
            renamed.append(target)
            super().replace(source, target)

    from kubetrain.store import ArtifactStore

    ArtifactStore(Recording(root)).publish("exp", V1, old, _manifest(V1, old))
    assert "exp/LATEST" in renamed
    assert (root / "exp" / "LATEST").read_text() == f"{V2}\n"
    assert store.latest("exp") == V2
    assert store.list_versions("exp") == [V1, V2]


@pytest.mark.parametrize("bad", ["../up", "a/b", "", ".hidden", "x" * 129, "a..b"])
def test_bad_experiment_and_version_names(tmp_path: Path, bad: str) -> None:
    store = open_store(str(tmp_path / "store"))
    files = _files(tmp_path, "a")
    with pytest.raises(StoreError, match="invalid experiment name"):
        store.publish(bad, V1, files, {})
    with pytest.raises(StoreError, match="invalid version name"):
        store.publish("exp", bad, files, {})
    assert not list((tmp_path / "store").rglob("*"))


def test_reserved_file_names(tmp_path: Path) -> None:
    files = _files(tmp_path, "a")
    with pytest.raises(StoreError, match="reserved"):
        open_store(str(tmp_path / "s")).publish(
            "exp", V1, {"manifest.json": files["metadata.json"]}, {}
        )


def test_unwritable_destination_names_the_path(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    files = _files(tmp_path, "a")
    with pytest.raises(StoreError, match=r"cannot create .*a-file/dest/exp/.*write to"):
        open_store(str(blocker / "dest")).publish("exp", V1, files, _manifest(V1, files))


def test_unsupported_destinations(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="unsupported scheme 'ftp'"):
        open_store("ftp://127.0.0.1/x")
    with pytest.raises(StoreError, match="must be absolute"):
        open_store("file://relative/path")


def test_latest_names_the_newest_version_when_the_older_publisher_renames_last(
    tmp_path: Path,
) -> None:
    """The race: V1's publisher reads LATEST, V2 publishes completely, then V1 renames."""
    from kubetrain.store import ArtifactStore, LocalBackend

    root = tmp_path / "store"
    files_old, files_new = _files(tmp_path, "old"), _files(tmp_path, "new")

    class NewerPublishesMidway(LocalBackend):
        fired = False

        def replace(self, source: str, target: str) -> None:
            if target.endswith("/LATEST") and not self.fired:
                self.fired = True
                with open_store(str(root)) as other:
                    other.publish("exp", V2, files_new, _manifest(V2, files_new))
            super().replace(source, target)

    racing = ArtifactStore(NewerPublishesMidway(root))
    racing.publish("exp", V1, files_old, _manifest(V1, files_old))
    assert racing.backend.fired  # type: ignore[attr-defined]
    assert (root / "exp" / "LATEST").read_text().strip() == V2
