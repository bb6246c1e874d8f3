"""The store on a local folder: os.replace gives the atomic rename."""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

from kubetrain.store.protocol import (
    EntryKind,
    ProgressCallback,
    StoreError,
    entry_kind,
    sha256_file,
)


class LocalBackend:
    """Backend on a local directory; os.replace gives the atomic rename."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.url = root.as_uri()

    def _path(self, path: str) -> Path:
        return self.root / path

    def makedirs(self, path: str) -> list[str]:
        missing: list[str] = []
        current = path
        while current and not self._path(current).exists():
            missing.append(current)
            current = os.path.dirname(current)
        try:
            self._path(path).mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise StoreError(
                f"cannot create {self._path(path)}: {error.strerror}; "
                "choose a destination you can write to"
            ) from error
        return missing[::-1]

    def rmdir(self, path: str) -> None:
        try:
            self._path(path).rmdir()
        except OSError as error:
            if error.errno not in (errno.ENOENT, errno.ENOTEMPTY, errno.EEXIST):
                raise StoreError(f"cannot remove {self._path(path)}: {error.strerror}") from error

    def kind(self, path: str) -> EntryKind | None:
        try:
            mode = self._path(path).lstat().st_mode
        except FileNotFoundError:
            return None
        return entry_kind(mode)

    def modified(self, path: str) -> float | None:
        """When path last changed (lstat: a symlink's own time); None when it does not exist."""
        try:
            return self._path(path).lstat().st_mtime
        except FileNotFoundError:
            return None

    def upload(self, source: Path, path: str, progress: ProgressCallback | None) -> None:
        total = source.stat().st_size
        target = self._path(path)
        try:
            with source.open("rb") as reader, target.open("wb") as writer:
                done = 0
                for block in iter(lambda: reader.read(4 << 20), b""):
                    writer.write(block)
                    done += len(block)
                    if progress:
                        progress(done, total)
                writer.flush()
                os.fsync(writer.fileno())
        except OSError as error:
            _discard_file(target)
            raise StoreError(f"cannot write {target}: {error.strerror}") from error

    def write_bytes(self, path: str, data: bytes) -> None:
        target = self._path(path)
        try:
            with target.open("wb") as writer:
                writer.write(data)
                writer.flush()
                os.fsync(writer.fileno())
        except OSError as error:
            _discard_file(target)
            raise StoreError(f"cannot write {target}: {error.strerror}") from error

    def read_bytes(self, path: str, limit: int) -> bytes:
        target = self._path(path)
        try:
            with target.open("rb") as reader:
                data = reader.read(limit + 1)
        except OSError as error:
            raise StoreError(f"cannot read {target}: {error.strerror}") from error
        if len(data) > limit:
            raise StoreError(f"{target} is larger than the {limit} bytes allowed for it")
        return data

    def download(self, path: str, destination: Path, progress: ProgressCallback | None) -> None:
        with (
            tempfile.NamedTemporaryFile(dir=destination.parent, delete=False) as tmp,
            self._path(path).open("rb") as reader,
        ):
            for block in iter(lambda: reader.read(4 << 20), b""):
                tmp.write(block)
        os.replace(tmp.name, destination)

    def size(self, path: str) -> int:
        return self._path(path).stat().st_size

    def sha256(self, path: str) -> str:
        return sha256_file(self._path(path))

    def replace(self, source: str, target: str) -> None:
        try:
            os.replace(self._path(source), self._path(target))
        except OSError as error:
            raise StoreError(
                f"cannot rename {self._path(source)} to {self._path(target)}: {error.strerror}"
            ) from error

    def exists(self, path: str) -> bool:
        return self._path(path).exists()

    def listdir(self, path: str) -> list[str]:
        return sorted(os.listdir(self._path(path)))

    def remove(self, path: str) -> None:
        self._path(path).unlink(missing_ok=True)

    def close(self) -> None:
        return None


def _discard_file(target: Path) -> None:
    """Remove what a failed write left at `target`; a folder already there is not ours."""
    if not target.is_dir():
        target.unlink(missing_ok=True)
