"""LocalBackend behaviour that surviving mutants showed untested: progress reports, size limits,
and the StoreError (naming the path) for every filesystem failure, with nothing left behind."""

from __future__ import annotations

import contextlib
import json
import resource
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kubetrain.store import StoreError, open_store, sha256_file
from kubetrain.store.local import LocalBackend

MIB = 1 << 20


def test_upload_reports_progress_per_block_and_copies_exactly(tmp_path: Path) -> None:
    source = tmp_path / "big.bin"
    content = bytes(range(256)) * (9 * MIB // 256)  # 9 MiB: two full 4 MiB blocks and a rest
    source.write_bytes(content)
    (tmp_path / "store").mkdir()
    backend = LocalBackend(tmp_path / "store")
    reports: list[tuple[int, int]] = []
    backend.upload(source, "big.bin.part", lambda done, total: reports.append((done, total)))
    assert reports == [(4 * MIB, 9 * MIB), (8 * MIB, 9 * MIB), (9 * MIB, 9 * MIB)]
    assert (tmp_path / "store" / "big.bin.part").read_bytes() == content
    backend.upload(source, "again.part", None)  # no callback: no error
    assert backend.sha256("again.part") == sha256_file(source)


def test_publish_passes_each_files_name_to_the_progress_callback(tmp_path: Path) -> None:
    files = {}
    for name in ("a.bin", "b.bin"):
        files[name] = tmp_path / name
        files[name].write_bytes(name.encode() * 10)
    manifest = {"files": {n: {"sha256": sha256_file(p)} for n, p in files.items()}}
    seen: list[tuple[str, int, int]] = []
    open_store(str(tmp_path / "store")).publish(
        "exp", "v1", files, manifest, progress=lambda *report: seen.append(report)
    )
    assert seen == [("a.bin", 50, 50), ("b.bin", 50, 50)]


def test_fetch_passes_each_files_name_to_the_progress_callback(tmp_path: Path) -> None:
    from kubetrain.store import ArtifactStore

    class Reporting(LocalBackend):
        """Reports progress on download as the SFTP backend does (LocalBackend does not)."""

        def download(self, path: str, destination: Path, progress: Any) -> None:
            super().download(path, destination, None)
            if progress:
                size = destination.stat().st_size
                progress(size // 2, size)
                progress(size, size)

    files = {}
    for name in ("a.bin", "b.bin"):
        files[name] = tmp_path / name
        files[name].write_bytes(name.encode() * 10)
    manifest = {"files": {n: {"sha256": sha256_file(p)} for n, p in files.items()}}
    store = ArtifactStore(Reporting(tmp_path / "store"))
    store.publish("exp", "v1", files, manifest)
    seen: list[tuple[str, int, int]] = []
    fetched = store.fetch("exp", "v1", tmp_path / "out", progress=lambda *r: seen.append(r))
    assert seen == [("a.bin", 25, 50), ("a.bin", 50, 50), ("b.bin", 25, 50), ("b.bin", 50, 50)]
    assert (fetched / "a.bin").read_bytes() == b"a.bin" * 10
    assert json.loads((fetched / "manifest.json").read_text()) == manifest
    store.fetch("exp", "v1", tmp_path / "quiet")  # no callback: no progress, no error


@pytest.mark.parametrize("size", [0, 1, 16])
def test_read_bytes_allows_exactly_the_limit_and_refuses_one_more(
    tmp_path: Path, size: int
) -> None:
    backend = LocalBackend(tmp_path)
    (tmp_path / "f").write_bytes(b"y" * size)
    assert backend.read_bytes("f", size) == b"y" * size
    if size:
        with pytest.raises(StoreError, match=rf"f is larger than the {size - 1} bytes allowed"):
            backend.read_bytes("f", size - 1)


def test_read_bytes_of_a_missing_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match=r"^cannot read .*/missing: No such file"):
        LocalBackend(tmp_path).read_bytes("missing", 10)


def test_writes_into_a_missing_folder_fail_naming_the_path_and_leave_nothing(
    tmp_path: Path,
) -> None:
    source = tmp_path / "src"
    source.write_bytes(b"data")
    root = tmp_path / "store"
    root.mkdir()
    backend = LocalBackend(root)
    with pytest.raises(StoreError, match=r"^cannot write .*/gone/f\.part: No such file"):
        backend.upload(source, "gone/f.part", None)
    with pytest.raises(StoreError, match=r"^cannot write .*/gone/g\.part: No such file"):
        backend.write_bytes("gone/g.part", b"data")
    assert list(root.iterdir()) == []


@contextlib.contextmanager
def _file_size_limit(limit: int) -> Iterator[None]:
    """Writes past limit bytes fail with EFBIG (a full disk, as far as the writer can tell)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)


def test_a_write_that_fails_midway_removes_its_partial_file(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.write_bytes(b"z" * 4096)
    root = tmp_path / "store"
    root.mkdir()
    backend = LocalBackend(root)
    with _file_size_limit(1024):
        with pytest.raises(StoreError, match=r"^cannot write .*/up\.part: File too large"):
            backend.upload(source, "up.part", None)
        with pytest.raises(StoreError, match=r"^cannot write .*/w\.part: File too large"):
            backend.write_bytes("w.part", b"z" * 4096)
    assert list(root.iterdir()) == []


def test_rename_failure_names_both_paths(tmp_path: Path) -> None:
    backend = LocalBackend(tmp_path)
    with pytest.raises(StoreError, match=r"^cannot rename .*/nope\.part to .*/nope: No such file"):
        backend.replace("nope.part", "nope")


def test_rmdir_of_a_file_is_an_error_naming_it(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(StoreError, match=r"^cannot remove .*/file: Not a directory"):
        LocalBackend(tmp_path).rmdir("file")


def test_makedirs_reports_only_the_missing_parents_and_names_a_failure(tmp_path: Path) -> None:
    backend = LocalBackend(tmp_path)
    (tmp_path / "a").mkdir()
    assert backend.makedirs("a/b/c") == ["a/b", "a/b/c"]
    assert backend.makedirs("a/b/c") == []
    (tmp_path / "blocker").write_bytes(b"")
    with pytest.raises(
        StoreError, match=r"cannot create .*/blocker/x: .*; choose a destination you can write to$"
    ):
        backend.makedirs("blocker/x")


def test_listdir_is_sorted_and_kind_sees_symlinks(tmp_path: Path) -> None:
    backend = LocalBackend(tmp_path)
    for name in ("b", "a", "c"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "d").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "d")
    assert backend.listdir("") == ["a", "b", "c", "d", "link"]
    assert [backend.kind(n) for n in ("a", "d", "link", "none")] == [
        "file",
        "dir",
        "symlink",
        None,
    ]


def test_download_stages_next_to_the_destination_not_in_the_system_temp_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The staged copy is renamed into place: on the destination's own filesystem that rename is
    # atomic, and a full or missing system temp dir does not matter.
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "no-such-temp-dir"))
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "f").write_bytes(b"content")
    (tmp_path / "out").mkdir()
    LocalBackend(tmp_path / "store").download("f", tmp_path / "out" / "f", None)
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["f"]
    assert (tmp_path / "out" / "f").read_bytes() == b"content"


@pytest.mark.parametrize("how", ["write_bytes", "upload"])
def test_a_folder_where_a_file_must_go_is_a_store_error_and_stays(tmp_path: Path, how: str) -> None:
    """A folder squatting on a name (e.g. `LATEST.part`) fails the write with a StoreError that
    names it; the cleanup of the failed write must not turn that into a bare OSError."""
    backend = LocalBackend(tmp_path)
    (tmp_path / "LATEST.part").mkdir()
    (tmp_path / "LATEST.part" / "keep").write_text("x")
    source = tmp_path / "source"
    source.write_bytes(b"v1")
    write = {
        "write_bytes": lambda: backend.write_bytes("LATEST.part", b"v1"),
        "upload": lambda: backend.upload(source, "LATEST.part", None),
    }[how]
    with pytest.raises(StoreError, match=r"^cannot write .*LATEST\.part: Is a directory"):
        write()
    assert (tmp_path / "LATEST.part" / "keep").read_text() == "x"
