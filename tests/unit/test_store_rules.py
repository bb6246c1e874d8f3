"""The store's rules (kubetrain/store/protocol.py docstring) on a local folder.

Bad LATEST files, symlinks and far-future names, integrity failures, leftovers of failed runs,
and the order of writes (recorded backend calls) that makes publishing atomic.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import resource
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from kubetrain.errors import TransientError, is_transient
from kubetrain.store import (
    ArtifactStore,
    IntegrityError,
    LocalBackend,
    StoreError,
    VersionNotFoundError,
    sha256_file,
)

V1 = "20260101T000000Z-00000001"
V2 = "20260102T000000Z-00000002"
NOW = datetime(2026, 1, 3, tzinfo=UTC)


def _files(tmp_path: Path, tag: str) -> dict[str, Path]:
    src = tmp_path / f"src-{tag}"
    src.mkdir()
    (src / "clf_lda.joblib").write_bytes(f"model {tag}".encode())
    (src / "metadata.json").write_text(json.dumps({"tag": tag}))
    return {p.name: p for p in sorted(src.iterdir())}


def _manifest(version: str, files: dict[str, Path]) -> dict[str, Any]:
    return {
        "version": version,
        "files": {n: {"sha256": sha256_file(p)} for n, p in files.items()},
    }


def _store(root: Path, backend: LocalBackend | None = None) -> ArtifactStore:
    return ArtifactStore(backend or LocalBackend(root))


def _publish(store: ArtifactStore, tmp_path: Path, version: str, tag: str | None = None) -> None:
    files = _files(tmp_path, tag or version)
    store.publish("exp", version, files, _manifest(version, files))


@contextlib.contextmanager
def _memory_capped(extra_bytes: int = 1 << 30) -> Iterator[None]:
    """Cap this process's address space (LATEST -> /dev/zero must not eat the machine)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    in_use = int(Path("/proc/self/statm").read_text().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    resource.setrlimit(resource.RLIMIT_AS, (in_use + extra_bytes, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


class Recording(LocalBackend):
    """LocalBackend that records every call that writes or renames, in order."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.calls: list[tuple[str, ...]] = []

    def upload(self, source: Path, path: str, progress: Any) -> None:
        self.calls.append(("upload", path))
        super().upload(source, path, progress)

    def write_bytes(self, path: str, data: bytes) -> None:
        self.calls.append(("write", path))
        super().write_bytes(path, data)

    def replace(self, source: str, target: str) -> None:
        self.calls.append(("replace", source, target))
        super().replace(source, target)


# -- issue #10 (8): a bad LATEST never fails a publish -----------------------------------------


@pytest.mark.parametrize(
    "bad",
    ["empty", "not-utf8", "traversal", "dev-zero", "empty-dir"],
)
def test_publisher_replaces_an_invalid_latest_with_a_warning(
    tmp_path: Path, bad: str, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "store"
    store = _store(root)
    _publish(store, tmp_path, V1)
    latest = root / "exp" / "LATEST"
    latest.unlink()
    if bad == "empty":
        latest.write_bytes(b"")
    elif bad == "not-utf8":
        latest.write_bytes(b"\xff\xfe\x00garbage")
    elif bad == "traversal":
        latest.write_text("../../etc\n")
    elif bad == "dev-zero":
        latest.symlink_to("/dev/zero")
    else:
        latest.mkdir()
    with _memory_capped():
        with pytest.raises(StoreError, match=r"LATEST is invalid.*publish a new version"):
            store.latest("exp")  # a reader gets a clear error, not a crash
        caplog.set_level(logging.WARNING, logger="kubetrain.store.protocol")
        _publish(store, tmp_path, V2)  # must not raise

    assert latest.is_file()
    assert not latest.is_symlink()
    assert latest.read_text() == f"{V2}\n"
    assert store.latest("exp") == V2
    assert "LATEST was invalid" in caplog.text or bad == "empty-dir"
    assert not list((root / "exp").glob("LATEST.*"))


def test_latest_that_cannot_be_replaced_does_not_fail_a_complete_publish(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "store"
    store = _store(root)
    (root / "exp" / "LATEST" / "something").mkdir(parents=True)  # in the way, not empty
    caplog.set_level(logging.WARNING, logger="kubetrain.store.protocol")
    _publish(store, tmp_path, V1)
    assert store.list_versions("exp") == [V1]
    assert "LATEST could not be updated" in caplog.text
    assert "fetch this version by name" in caplog.text
    assert not list((root / "exp").glob("LATEST.*.part"))


# -- issue #10 (9): LATEST follows names, not trust --------------------------------------------


def _planted(tmp_path: Path, version: str) -> Path:
    outside = tmp_path / "outside" / version
    outside.mkdir(parents=True)
    (outside / "clf_lda.joblib").write_bytes(b"planted")
    (outside / "manifest.json").write_text(
        json.dumps(
            {"files": {"clf_lda.joblib": {"sha256": sha256_file(outside / "clf_lda.joblib")}}}
        )
    )
    return outside


def test_symlinked_version_pointing_outside_is_not_a_version(tmp_path: Path) -> None:
    root = tmp_path / "store"
    store = _store(root)
    _publish(store, tmp_path, V1)
    evil = "29990101T000000Z-planted"
    (root / "exp" / evil).symlink_to(_planted(tmp_path, evil))
    _publish(store, tmp_path, V2)
    assert store.latest("exp") == V2
    assert store.list_versions("exp") == [V1, V2]
    with pytest.raises(VersionNotFoundError):
        store.fetch("exp", evil, tmp_path / "out")
    (root / "exp" / "LATEST").write_text(evil + "\n")
    assert store.latest("exp") is None  # names no complete version inside the store


def test_symlinked_files_inside_a_version_are_not_followed(tmp_path: Path) -> None:
    root = tmp_path / "store"
    store = _store(root)
    _publish(store, tmp_path, V1)
    planted = _planted(tmp_path, "x")
    model = root / "exp" / V1 / "clf_lda.joblib"
    model.unlink()
    model.symlink_to(planted / "clf_lda.joblib")
    with pytest.raises(StoreError, match="not a regular file"):
        store.fetch("exp", V1, tmp_path / "out", verify=False)
    manifest = root / "exp" / V1 / "manifest.json"
    manifest.unlink()
    manifest.symlink_to(planted / "manifest.json")
    assert store.list_versions("exp") == []


def test_far_future_version_does_not_take_latest(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "store"
    store = ArtifactStore(LocalBackend(root), clock=lambda: NOW)
    # Dated 2 h after this publisher's clock (NOW): a clock running ahead, or planted.
    ahead = "20260103T020000Z-fast-clock"
    ArtifactStore(LocalBackend(root), clock=lambda: datetime(2026, 1, 3, 2, tzinfo=UTC)).publish(
        "exp", ahead, _files(tmp_path, "ahead"), _manifest(ahead, _files(tmp_path, "ahead2"))
    )
    assert store.latest("exp") == ahead
    caplog.set_level(logging.WARNING, logger="kubetrain.store.protocol")
    _publish(store, tmp_path, V2)
    assert store.latest("exp") == V2
    assert f"{ahead} is dated more than 1:00:00 ahead" in caplog.text
    # Within the allowed skew, a newer name still wins.
    near = "20260103T003000Z-slightly-ahead"
    store.publish("exp", near, _files(tmp_path, "near"), _manifest(near, _files(tmp_path, "n2")))
    _publish(store, tmp_path, "20260102T120000Z-older")
    assert store.latest("exp") == near


# -- issue #10 (11): integrity failures are permanent ------------------------------------------


def test_integrity_error_is_permanent() -> None:
    error = IntegrityError("sha256 differs")
    assert not isinstance(error, TransientError)
    assert not is_transient(error)


def test_integrity_error_is_not_retried_by_the_sftp_backend(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from kubetrain.ssh import KeySource, SshEndpoint
    from kubetrain.store import sftp as sftp_module

    backend = sftp_module.SftpBackend(
        sftp_module.SftpUrl("u", "127.0.0.1", 2222, "/srv"),
        SshEndpoint("127.0.0.1", "u", KeySource(), Path("/nonexistent"), 2222),
        base_delay=0.01,
    )
    monkeypatch.setattr(backend, "_session", lambda: None)
    monkeypatch.setattr(sftp_module.time, "sleep", lambda _s: None)
    calls: list[int] = []

    def corrupt(_sftp: object) -> None:
        calls.append(1)
        raise IntegrityError("sha256 read back differs")

    with pytest.raises(IntegrityError):
        backend._run("verify", "exp/v/a.part", corrupt)
    assert calls == [1]


# -- failed runs leave no folders of their own -------------------------------------------------


def test_failed_publish_leaves_no_empty_folders(tmp_path: Path) -> None:
    root = tmp_path / "store"
    root.mkdir()

    class Failing(LocalBackend):
        def upload(self, source: Path, path: str, progress: Any) -> None:
            raise StoreError("disk full")

    with pytest.raises(StoreError, match="disk full"):
        _publish(_store(root, Failing(root)), tmp_path, V1)
    assert list(root.iterdir()) == []


def test_failed_publish_keeps_folders_it_did_not_create(tmp_path: Path) -> None:
    root = tmp_path / "store"
    store = _store(root)
    _publish(store, tmp_path, V1)

    class Failing(LocalBackend):
        def upload(self, source: Path, path: str, progress: Any) -> None:
            raise StoreError("disk full")

    with pytest.raises(StoreError):
        _publish(_store(root, Failing(root)), tmp_path, V2)
    assert sorted(os.listdir(root / "exp")) == [V1, "LATEST"]


def test_write_probe_leaves_nothing_behind(tmp_path: Path) -> None:
    root = tmp_path / "store"
    root.mkdir()
    store = _store(root)
    store.check_writable("exp", V1)
    assert list(root.iterdir()) == []
    _publish(store, tmp_path, V1)
    store.check_writable("exp", V2)
    assert sorted(os.listdir(root / "exp")) == [V1, "LATEST"]


def test_write_probe_survives_another_runs_probe_removing_the_experiment_folder(
    tmp_path: Path,
) -> None:
    # Ten runs at once on one experiment: another run's probe created the experiment folder and
    # removes it again, empty, right after this run's makedirs found it there.
    root = tmp_path / "store"
    (root / "exp").mkdir(parents=True)

    class OtherRunCleansUp(LocalBackend):
        def makedirs(self, path: str) -> list[str]:
            created = super().makedirs(path)
            if not created and path == "exp":
                (self.root / "exp").rmdir()
            return created

    store = _store(root, OtherRunCleansUp(root))
    store.check_writable("exp", V1)  # its probe is written all the same
    assert list(root.iterdir()) == []  # and the folder it had to create again is gone


def test_write_probe_reports_an_unwritable_destination(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(StoreError, match="cannot create"):
        _store(blocker / "store").check_writable("exp", V1)


# -- issue #17: tests that catch the bugs they name --------------------------------------------


def test_corrupted_upload_is_caught_by_the_read_back_and_never_renamed(tmp_path: Path) -> None:
    root = tmp_path / "store"

    class FlipsAByte(Recording):
        def upload(self, source: Path, path: str, progress: Any) -> None:
            super().upload(source, path, progress)
            target = self.root / path
            data = bytearray(target.read_bytes())
            data[0] ^= 0x01
            target.write_bytes(bytes(data))

    backend = FlipsAByte(root)
    with pytest.raises(IntegrityError, match="sha256 read back differs"):
        _publish(_store(root, backend), tmp_path, V1)
    assert not [c for c in backend.calls if c[0] == "replace"]
    assert not (root / "exp" / V1 / "clf_lda.joblib").exists()
    assert not list(root.rglob("*.part"))


def test_stale_part_files_of_other_names_are_removed(tmp_path: Path) -> None:
    root = tmp_path / "store"
    version_dir = root / "exp" / V1
    version_dir.mkdir(parents=True)
    (version_dir / "clf_nn.joblib.part").write_bytes(b"from a crashed run with other models")
    _publish(_store(root), tmp_path, V1)
    assert sorted(os.listdir(version_dir)) == ["clf_lda.joblib", "manifest.json", "metadata.json"]


def test_final_names_appear_only_through_a_rename_and_manifest_after_files(
    tmp_path: Path,
) -> None:
    root = tmp_path / "store"
    backend = Recording(root)
    _publish(_store(root, backend), tmp_path, V1)
    finals = {f"exp/{V1}/clf_lda.joblib", f"exp/{V1}/metadata.json", f"exp/{V1}/manifest.json"}
    finals.add("exp/LATEST")
    written = [c[1] for c in backend.calls if c[0] in ("upload", "write")]
    assert all(path.endswith(".part") for path in written), written
    assert not finals & set(written)
    renamed = [c[2] for c in backend.calls if c[0] == "replace"]
    assert set(renamed) == finals
    # Model files first, then the manifest (the commit marker), then LATEST.
    assert renamed[-2:] == [f"exp/{V1}/manifest.json", "exp/LATEST"]


def test_publish_next_to_a_newer_version_without_manifest(tmp_path: Path) -> None:
    root = tmp_path / "store"
    (root / "exp" / V2).mkdir(parents=True)
    (root / "exp" / V2 / "clf_lda.joblib").write_bytes(b"half")
    store = _store(root)
    _publish(store, tmp_path, V1)
    assert store.latest("exp") == V1
    assert (root / "exp" / "LATEST").read_text() == f"{V1}\n"


def test_latest_naming_a_version_without_manifest_reads_as_none(tmp_path: Path) -> None:
    root = tmp_path / "store"
    store = _store(root)
    _publish(store, tmp_path, V1)
    (root / "exp" / V1 / "manifest.json").unlink()
    assert store.latest("exp") is None
    with pytest.raises(VersionNotFoundError, match="has no complete version"):
        store.fetch("exp", None, tmp_path / "out")


@pytest.mark.parametrize("name", ["../x", "/etc/passwd", "a/b", "manifest.json"])
def test_fetch_refuses_manifest_file_names_outside_the_version(tmp_path: Path, name: str) -> None:
    root = tmp_path / "store"
    store = _store(root)
    _publish(store, tmp_path, V1)
    manifest = root / "exp" / V1 / "manifest.json"
    content = json.loads(manifest.read_text())
    content["files"][name] = {"sha256": "0" * 64}
    manifest.write_text(json.dumps(content))
    out = tmp_path / "out" / "inner"
    with pytest.raises(StoreError, match=r"invalid file name|reserved name"):
        store.fetch("exp", V1, out)
    assert not (out / V1).exists()  # refused before anything was written
    assert not (out / "x").exists()
