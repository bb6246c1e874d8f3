"""Store behaviour mutation testing found untested: probes and failed publishes leave nothing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kubetrain.store import StoreError, open_store


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_check_writable_leaves_no_folder_and_no_probe(tmp_path: Path) -> None:
    root = tmp_path / "store"
    with open_store(str(root)) as store:
        store.check_writable("exp", "tok1")
        assert _tree(root) == []  # the experiment folder it created is gone again
        (root / "exp").mkdir()
        (root / "exp" / "kept.txt").write_text("x")
        store.check_writable("exp", "tok2")
    assert _tree(root) == ["exp", "exp/kept.txt"]  # an existing folder stays, probe removed


def test_check_writable_refuses_bad_names(tmp_path: Path) -> None:
    with open_store(str(tmp_path)) as store:
        with pytest.raises(StoreError, match=r"invalid experiment name '\.\./x'"):
            store.check_writable("../x", "tok")
        with pytest.raises(StoreError, match=r"invalid probe name 'a/b'"):
            store.check_writable("exp", "a/b")
    assert _tree(tmp_path) == []


def test_a_failed_publish_removes_the_folders_it_created_deepest_first(tmp_path: Path) -> None:
    root = tmp_path / "store"
    missing = tmp_path / "never-written.joblib"
    with open_store(str(root)) as store, pytest.raises(FileNotFoundError):
        store.publish("exp", "v1", {"clf_lda.joblib": missing}, {"version": "v1"})
    assert _tree(root) == []  # neither exp/v1 nor exp is left behind


def test_a_failed_publish_keeps_folders_that_existed(tmp_path: Path) -> None:
    root = tmp_path / "store"
    (root / "exp").mkdir(parents=True)
    with open_store(str(root)) as store, pytest.raises(FileNotFoundError):
        store.publish("exp", "v1", {"a.bin": tmp_path / "missing"}, {"version": "v1"})
    assert _tree(root) == ["exp"]


def test_local_backend_basics(tmp_path: Path) -> None:
    from kubetrain.store.local import LocalBackend

    backend = LocalBackend(tmp_path)
    assert not backend.exists("f")
    backend.write_bytes("f", b"abc")
    assert backend.exists("f")
    assert backend.size("f") == 3
    backend.remove("f")
    backend.remove("f")  # removing what is already gone is not an error
    assert not backend.exists("f")
    assert backend.makedirs("a/b/c") == ["a", "a/b", "a/b/c"]
    assert backend.makedirs("a/b/d") == ["a/b/d"]
    backend.rmdir("a/b/c")
    backend.rmdir("a/b/c")  # gone already: fine
    backend.rmdir("a")  # not empty: left alone, not an error
    assert os.path.isdir(tmp_path / "a" / "b" / "d")


def test_the_write_probe_goes_into_the_experiment_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kubetrain.store.local import LocalBackend

    written: list[tuple[str, bytes]] = []
    original = LocalBackend.write_bytes

    def spy(self: LocalBackend, path: str, data: bytes) -> None:
        written.append((path, data))
        original(self, path, data)

    monkeypatch.setattr(LocalBackend, "write_bytes", spy)
    with open_store(str(tmp_path)) as store:
        store.check_writable("exp", "tok")
    assert written == [("exp/.write-probe-tok.part", b"")]
