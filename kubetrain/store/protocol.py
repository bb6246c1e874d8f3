"""ArtifactStore: publish, list and fetch versioned model sets on a local folder or over SFTP.

The publishing protocol lives here once, written against a few filesystem primitives
(`Backend`); `LocalBackend` implements them on the local disk, `SftpBackend` over SFTP.

Layout of a version (docs/design.md §3):  <root>/<experiment>/<version>/{files..., manifest.json}
and <root>/<experiment>/LATEST naming the newest complete version. Every file is written as
`<name>.part` and renamed into place; manifest.json is written last and is the commit marker.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from kubetrain.errors import UserError

MANIFEST = "manifest.json"
LATEST = "LATEST"
PART_SUFFIX = ".part"
DEFAULT_VERIFY_LIMIT_BYTES = 256 * 1024 * 1024
_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")

ProgressCallback = Callable[[int, int], None]


class StoreError(UserError):
    """A destination problem a user can fix (bad URL, permissions, disk full, bad name)."""


class IntegrityError(StoreError):
    """A stored file does not match the checksum its manifest records."""


class VersionNotFoundError(StoreError):
    """The requested experiment or version has no complete (manifested) version."""


def validate_name(kind: str, name: str) -> str:
    """Return name if it is a safe single path component for an experiment or version."""
    if not isinstance(name, str) or not _NAME_PATTERN.fullmatch(name) or ".." in name:
        raise StoreError(
            f"invalid {kind} name {name!r}: use 1-128 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit, with no '..', '/' or control characters"
        )
    return name


def sha256_file(path: Path) -> str:
    """Hex sha256 of a local file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class Backend(Protocol):
    """Filesystem primitives the publishing protocol needs; paths are POSIX, below the root."""

    url: str

    def makedirs(self, path: str) -> None: ...
    def upload(self, source: Path, path: str, progress: ProgressCallback | None) -> None: ...
    def write_bytes(self, path: str, data: bytes) -> None: ...
    def read_bytes(self, path: str) -> bytes: ...
    def download(self, path: str, destination: Path, progress: ProgressCallback | None) -> None: ...
    def size(self, path: str) -> int: ...
    def sha256(self, path: str) -> str: ...
    def replace(self, source: str, target: str) -> None: ...
    def exists(self, path: str) -> bool: ...
    def listdir(self, path: str) -> list[str]: ...
    def remove(self, path: str) -> None: ...
    def close(self) -> None: ...


@dataclass(frozen=True)
class PublishedVersion:
    """Where a published version went."""

    store_url: str
    experiment: str
    version: str

    @property
    def location(self) -> str:
        return f"{self.store_url.rstrip('/')}/{self.experiment}/{self.version}"


class ArtifactStore:
    """Versioned, atomic publishing of model sets on top of a Backend."""

    def __init__(
        self, backend: Backend, verify_limit_bytes: int = DEFAULT_VERIFY_LIMIT_BYTES
    ) -> None:
        self.backend = backend
        self.verify_limit_bytes = verify_limit_bytes

    @property
    def url(self) -> str:
        return self.backend.url

    def __enter__(self) -> ArtifactStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.backend.close()

    # -- publishing -------------------------------------------------------------------------

    def publish(
        self,
        experiment: str,
        version: str,
        files: Mapping[str, Path],
        manifest: Mapping[str, Any],
        progress: Callable[[str, int, int], None] | None = None,
    ) -> PublishedVersion:
        """Publish files then manifest.json, then move LATEST; safe to call again to resume."""
        validate_name("experiment", experiment)
        validate_name("version", version)
        for name in files:
            validate_name("file", name)
            if name in (MANIFEST, LATEST):
                raise StoreError(f"file name {name!r} is reserved by the store")
        version_dir = posixpath.join(experiment, version)
        self.backend.makedirs(version_dir)
        self._remove_stale_parts(version_dir)
        for name, source in files.items():
            callback = (lambda done, total, n=name: progress(n, done, total)) if progress else None
            self._put_verified(source, posixpath.join(version_dir, name), callback)
        manifest_bytes = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
        self._put_bytes_atomic(posixpath.join(version_dir, MANIFEST), manifest_bytes)
        self._advance_latest(experiment, version)
        return PublishedVersion(self.url, experiment, version)

    def _remove_stale_parts(self, version_dir: str) -> None:
        for entry in self.backend.listdir(version_dir):
            if entry.endswith(PART_SUFFIX):
                self.backend.remove(posixpath.join(version_dir, entry))

    def _put_verified(self, source: Path, target: str, progress: ProgressCallback | None) -> None:
        expected_size = source.stat().st_size
        expected_sha = sha256_file(source)
        if (
            self.backend.exists(target)
            and self.backend.size(target) == expected_size
            and self.backend.sha256(target) == expected_sha
        ):
            return  # already published by an earlier, interrupted attempt
        part = target + PART_SUFFIX
        self.backend.upload(source, part, progress)
        actual_size = self.backend.size(part)
        if actual_size != expected_size:
            raise StoreError(
                f"{self.url}/{part}: wrote {actual_size} bytes, expected {expected_size}"
            )
        if expected_size <= self.verify_limit_bytes and self.backend.sha256(part) != expected_sha:
            raise IntegrityError(f"{self.url}/{part}: sha256 read back differs from the source")
        self.backend.replace(part, target)

    def _put_bytes_atomic(self, target: str, data: bytes) -> None:
        part = target + PART_SUFFIX
        self.backend.write_bytes(part, data)
        self.backend.replace(part, target)

    def _advance_latest(self, experiment: str, version: str) -> None:
        # Version names start with a UTC timestamp, so the largest complete name is the newest.
        # Two publishers can read LATEST at once and the older one rename last; so each one
        # writes the newest complete version it can see and re-reads until LATEST names it.
        # The last action of every publisher is then a read that found LATEST up to date.
        for _ in range(8):
            newest = self._newest_complete(experiment, at_least=version)
            if self.latest(experiment) == newest:
                return
            part = posixpath.join(experiment, f"{LATEST}.{version}{PART_SUFFIX}")
            self.backend.write_bytes(part, (newest + "\n").encode())
            self.backend.replace(part, posixpath.join(experiment, LATEST))

    def _newest_complete(self, experiment: str, at_least: str) -> str:
        # Only names newer than our own complete version need their manifest checked: one
        # listing, not a stat per old version (many round trips over SFTP).
        newer = sorted((e for e in self._version_names(experiment) if e > at_least), reverse=True)
        for entry in newer:
            if self.backend.exists(posixpath.join(experiment, entry, MANIFEST)):
                return entry
        return at_least

    # -- reading ----------------------------------------------------------------------------

    def list_versions(self, experiment: str) -> list[str]:
        """Complete versions (those with a manifest), oldest first."""
        validate_name("experiment", experiment)
        if not self.backend.exists(experiment):
            return []
        return sorted(
            entry
            for entry in self._version_names(experiment)
            if self.backend.exists(posixpath.join(experiment, entry, MANIFEST))
        )

    def _version_names(self, experiment: str) -> list[str]:
        """Entries of an experiment that may be versions (complete or not)."""
        return [
            entry
            for entry in self.backend.listdir(experiment)
            if _NAME_PATTERN.fullmatch(entry)
            and entry != LATEST
            and not entry.endswith(PART_SUFFIX)
        ]

    def latest(self, experiment: str) -> str | None:
        """The version LATEST names, or None when the experiment has no complete version."""
        validate_name("experiment", experiment)
        latest_path = posixpath.join(experiment, LATEST)
        if not self.backend.exists(latest_path):
            return None
        version = self.backend.read_bytes(latest_path).decode().strip()
        validate_name("version", version)
        if not self.backend.exists(posixpath.join(experiment, version, MANIFEST)):
            return None
        return version

    def read_manifest(self, experiment: str, version: str) -> dict[str, Any]:
        """The parsed manifest of a complete version."""
        validate_name("experiment", experiment)
        validate_name("version", version)
        path = posixpath.join(experiment, version, MANIFEST)
        if not self.backend.exists(path):
            raise VersionNotFoundError(
                f"{self.url}/{experiment}/{version} is not a complete version (no {MANIFEST}); "
                f"complete versions: {self.list_versions(experiment) or 'none'}"
            )
        manifest: dict[str, Any] = json.loads(self.backend.read_bytes(path))
        return manifest

    def fetch(
        self,
        experiment: str,
        version: str | None,
        destination: Path,
        verify: bool = True,
        progress: Callable[[str, int, int], None] | None = None,
    ) -> Path:
        """Download a complete version (LATEST if version is None) into destination/<version>.

        With verify, every file's sha256 is checked against the manifest before it is kept:
        joblib files execute code when loaded.
        """
        if version is None:
            version = self.latest(experiment)
            if version is None:
                raise VersionNotFoundError(f"{self.url}/{experiment} has no complete version")
        manifest = self.read_manifest(experiment, version)
        target_dir = destination / version
        target_dir.mkdir(parents=True, exist_ok=True)
        for name, expected in manifest_files(manifest).items():
            validate_name("file", name)
            local = target_dir / name
            callback = (lambda done, total, n=name: progress(n, done, total)) if progress else None
            self.backend.download(posixpath.join(experiment, version, name), local, callback)
            if verify and sha256_file(local) != expected:
                local.unlink()
                raise IntegrityError(
                    f"{self.url}/{experiment}/{version}/{name}: sha256 differs from the manifest; "
                    "the file was changed after publishing and was not kept"
                )
        (target_dir / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        return target_dir


def manifest_files(manifest: Mapping[str, Any]) -> dict[str, str]:
    """name → sha256 of every file a manifest covers (its `files` map, else its models)."""
    files = manifest.get("files")
    if isinstance(files, Mapping):
        return {name: str(entry["sha256"]) for name, entry in files.items()}
    return {str(m["file"]): str(m["sha256"]) for m in manifest.get("models", {}).values()}
