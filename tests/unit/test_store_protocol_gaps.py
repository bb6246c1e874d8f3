"""More store protocol rules that surviving mutants showed unasserted: resuming skips finished
files, failed uploads leave no .part, the verify limit's boundary, which entries can be
versions, the clock-skew boundary and its warning, and what invalid names and LATEST files say."""

from __future__ import annotations

import logging
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from kubetrain.store import ArtifactStore, IntegrityError, LocalBackend, StoreError, sha256_file
from kubetrain.store.protocol import validate_name

V1 = "20260101T000000Z-00000001"
V2 = "20260102T000000Z-00000002"
V3 = "20260103T000000Z-00000003"
NOW = datetime(2026, 1, 4, tzinfo=UTC)
RULE = (
    "use 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit, with no '..', "
    "'/' or control characters"
)


class Recording(LocalBackend):
    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.uploads: list[str] = []

    def upload(self, source: Path, path: str, progress: Any) -> None:
        self.uploads.append(path)
        super().upload(source, path, progress)


def _sources(tmp_path: Path, size: int = 10) -> dict[str, Path]:
    files = {}
    for name in ("a.bin", "b.bin"):
        files[name] = tmp_path / name
        files[name].write_bytes(name[0].encode() * size)
    return files


def _manifest(files: dict[str, Path]) -> dict[str, Any]:
    return {"files": {n: {"sha256": sha256_file(p)} for n, p in files.items()}}


def _plant(root: Path, version: str, complete: bool = True) -> None:
    (root / "exp" / version).mkdir(parents=True)
    if complete:
        (root / "exp" / version / "manifest.json").write_text('{"files": {}}')


def test_a_resumed_publish_uploads_only_what_is_missing_or_different(tmp_path: Path) -> None:
    root = tmp_path / "store"
    files = _sources(tmp_path)
    ArtifactStore(LocalBackend(root)).publish("exp", V1, files, _manifest(files))
    (root / "exp" / V1 / "manifest.json").unlink()  # interrupted before the commit marker
    (root / "exp" / V1 / "b.bin").write_bytes(b"bbbbbbbbbX")  # same size, other content
    backend = Recording(root)
    ArtifactStore(backend).publish("exp", V1, files, _manifest(files))
    assert backend.uploads == [f"exp/{V1}/b.bin.part"]
    (root / "exp" / V1 / "manifest.json").unlink()
    (root / "exp" / V1 / "a.bin").write_bytes(b"a")  # other size
    backend.uploads.clear()
    ArtifactStore(backend).publish("exp", V1, files, _manifest(files))
    assert backend.uploads == [f"exp/{V1}/a.bin.part"]
    assert (root / "exp" / V1 / "a.bin").read_bytes() == b"a" * 10


def test_a_short_upload_is_refused_and_its_part_removed(tmp_path: Path) -> None:
    class Truncating(LocalBackend):
        def upload(self, source: Path, path: str, progress: Any) -> None:
            super().upload(source, path, progress)
            with open(self.root / path, "r+b") as part:
                part.truncate(3)

    root = tmp_path / "store"
    files = _sources(tmp_path)
    with pytest.raises(StoreError, match=rf"/exp/{V1}/a\.bin\.part: wrote 3 bytes, expected 10$"):
        ArtifactStore(Truncating(root)).publish("exp", V1, files, _manifest(files))
    assert not list(root.rglob("*.part"))


def test_a_file_exactly_at_the_verify_limit_is_still_read_back(tmp_path: Path) -> None:
    class FlipsAByte(LocalBackend):
        def upload(self, source: Path, path: str, progress: Any) -> None:
            super().upload(source, path, progress)
            target = self.root / path
            data = bytearray(target.read_bytes())
            data[-1] ^= 0x01
            target.write_bytes(bytes(data))

    root = tmp_path / "store"
    files = _sources(tmp_path, size=10)
    store = ArtifactStore(FlipsAByte(root), verify_limit_bytes=10)
    with pytest.raises(IntegrityError, match="sha256 read back differs from the source"):
        store.publish("exp", V1, files, _manifest(files))
    # Above the limit the read-back is skipped (documented trade-off for huge files).
    store = ArtifactStore(FlipsAByte(root), verify_limit_bytes=9)
    store.publish("exp", V2, files, _manifest(files))


def test_an_incomplete_newer_version_does_not_hide_a_complete_one(tmp_path: Path) -> None:
    root = tmp_path / "store"
    _plant(root, V3, complete=False)
    _plant(root, V2)
    files = _sources(tmp_path)
    ArtifactStore(LocalBackend(root), clock=lambda: NOW).publish("exp", V1, files, _manifest(files))
    assert (root / "exp" / "LATEST").read_text() == f"{V2}\n"


def test_a_version_dated_exactly_at_the_skew_limit_is_still_newest(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "store"
    at_limit = "20260104T010000Z-at-the-limit"  # NOW + MAX_CLOCK_SKEW (one hour)
    beyond = "20260104T010001Z-a-second-more"
    files = _sources(tmp_path)
    _plant(root, at_limit)
    store = ArtifactStore(LocalBackend(root), clock=lambda: NOW)
    store.publish("exp", V1, files, _manifest(files))
    assert store.latest("exp") == at_limit

    _plant(root, beyond)
    caplog.set_level(logging.WARNING, logger="kubetrain.store.protocol")
    store.publish("exp", V2, files, _manifest(files))
    assert store.latest("exp") == at_limit
    assert caplog.messages == [
        f"{root.as_uri()}/exp/{beyond} is dated more than 1:00:00 ahead of this machine's clock "
        "(a planted version, or a publisher whose clock runs ahead): not taken as newest; check "
        "the clocks, or remove that version if nobody published it"
    ]


def test_part_and_latest_entries_are_never_versions(tmp_path: Path) -> None:
    root = tmp_path / "store"
    _plant(root, V1)
    _plant(root, f"{V3}.part")  # a version directory renamed half-way, say
    _plant(root, ".hidden")
    store = ArtifactStore(LocalBackend(root))
    assert store.list_versions("exp") == [V1]
    (root / "exp" / "LATEST").mkdir()  # even a LATEST folder holding a manifest
    (root / "exp" / "LATEST" / "manifest.json").write_text("{}")
    assert store.list_versions("exp") == [V1]


def test_entry_kinds_of_special_files(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "file").write_bytes(b"")
    backend = LocalBackend(tmp_path)
    assert (backend.kind("fifo"), backend.kind("file")) == ("other", "file")


def test_invalid_names_are_shown_cut_at_60_characters_with_the_rule() -> None:
    name = "." + "n" * 99
    with pytest.raises(StoreError) as raised:
        validate_name("version", name)
    assert str(raised.value) == f"invalid version name {name[:60]!r}: {RULE}"
    with pytest.raises(StoreError) as raised:
        validate_name("file", None)  # type: ignore[arg-type]
    assert str(raised.value) == f"invalid file name None: {RULE}"


def test_publish_names_an_invalid_file_name_as_a_file(tmp_path: Path) -> None:
    source = tmp_path / "s"
    source.write_bytes(b"x")
    store = ArtifactStore(LocalBackend(tmp_path / "store"))
    with pytest.raises(StoreError, match=r"^invalid file name '\.\./x'"):
        store.publish("exp", V1, {"../x": source}, {})


def test_publishing_into_a_symlinked_version_says_what_to_do(tmp_path: Path) -> None:
    root = tmp_path / "store"
    (root / "exp").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    (root / "exp" / V1).symlink_to(tmp_path / "elsewhere")
    files = _sources(tmp_path)
    with pytest.raises(StoreError) as raised:
        ArtifactStore(LocalBackend(root)).publish("exp", V1, files, _manifest(files))
    assert str(raised.value).endswith(
        f"/exp/{V1} is not a directory inside the store (a symlink?); remove it or publish "
        "under another version name"
    )


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"\xff\xfe\n", "it is not UTF-8 text"),
        (b"x" * 2000, "{root}/exp/LATEST is larger than the 1024 bytes allowed for it"),
        (("." + "v" * 99).encode(), repr("." + "v" * 59) + " is not a version name"),
    ],
    ids=["not-utf8", "too-large", "long-invalid-name"],
)
def test_an_invalid_latest_says_what_is_wrong_with_it(
    tmp_path: Path, content: bytes, problem: str
) -> None:
    root = tmp_path / "store"
    _plant(root, V1)
    (root / "exp" / "LATEST").write_bytes(content)
    with pytest.raises(StoreError) as raised:
        ArtifactStore(LocalBackend(root)).latest("exp")
    problem = problem.replace("{root}", str(root))
    assert f"/exp/LATEST is invalid: {problem}; fetch a version by name" in str(raised.value)
