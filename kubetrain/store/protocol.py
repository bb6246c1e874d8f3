"""ArtifactStore: publish, list and fetch versioned model sets on a local folder or over SFTP.

The publishing protocol lives here once, written against a few filesystem primitives
(`Backend`); `LocalBackend` implements them on the local disk, `SftpBackend` over SFTP.

Layout of a version (docs/design.md §3):  <root>/<experiment>/<version>/{files..., manifest.json}
and <root>/<experiment>/LATEST naming the newest complete version. Every file is written as
`<name>.part` and renamed into place; manifest.json is written last and is the commit marker.

Which versions count, and which is newest (LATEST follows names, not trust):
- A version is a real directory directly inside the experiment directory holding a regular
  file manifest.json. Symlinks are never versions, manifests or model files: nothing outside
  the store is followed (the backends report symlinks as such: lstat, not stat).
- Version names compare as strings; the ones the train flow makes start with a UTC timestamp
  (YYYYMMDDTHHMMSSZ), so the largest complete name is the newest.
- A publisher does not take as newest a version whose timestamp is more than MAX_CLOCK_SKEW
  ahead of its own clock (planted, or published from a machine whose clock runs ahead): it
  logs a warning naming it and moves LATEST past it, so one such name cannot pin LATEST.
- LATEST is read with a size limit (MAX_LATEST_BYTES). A publisher replaces a LATEST that is
  empty, not UTF-8, not a version name, too large, not a regular file or that names no complete
  version, with a warning. If LATEST cannot be replaced at all (say, a directory is in its way)
  the publish still succeeds, since the version is complete, and a warning says what to fix.
- Integrity failures (IntegrityError) are permanent: never retried, never transient.

Over 400 lines on purpose: publishing and reading are one protocol whose rules (above) are
easiest to check side by side.
"""

from __future__ import annotations

import hashlib
import json
import logging
import posixpath
import re
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, Protocol

from kubetrain.errors import UserError

MANIFEST = "manifest.json"
LATEST = "LATEST"
PART_SUFFIX = ".part"
DEFAULT_VERIFY_LIMIT_BYTES = 256 * 1024 * 1024
MAX_LATEST_BYTES = 1024
MAX_MANIFEST_BYTES = 16 * 1024 * 1024
MAX_CLOCK_SKEW = timedelta(hours=1)
_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_TIMESTAMP = re.compile(r"^\d{8}T\d{6}Z")
_TIMESTAMP_FORMAT = "%Y%m%dT%H%M%SZ"

logger = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int], None]
EntryKind = Literal["file", "dir", "symlink", "other"]


class StoreError(UserError):
    """A destination problem a user can fix (bad URL, permissions, disk full, bad name)."""


class IntegrityError(StoreError):
    """A stored file does not match the checksum its manifest records."""


class VersionNotFoundError(StoreError):
    """The requested experiment or version has no complete (manifested) version."""


def _is_name(name: object) -> bool:
    return isinstance(name, str) and bool(_NAME_PATTERN.fullmatch(name)) and ".." not in name


def entry_kind(mode: int) -> EntryKind:
    """The kind of a directory entry from its lstat mode (a symlink is never followed)."""
    if stat.S_ISLNK(mode):
        return "symlink"
    if stat.S_ISDIR(mode):
        return "dir"
    return "file" if stat.S_ISREG(mode) else "other"


def validate_name(kind: str, name: str) -> str:
    """Return name if it is a safe single path component for an experiment or version."""
    if not _is_name(name):
        shown = name[:60] if isinstance(name, str) else name
        raise StoreError(
            f"invalid {kind} name {shown!r}: use 1-128 letters, digits, '.', '_' or '-', "
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

    def makedirs(self, path: str) -> list[str]:
        """Create path and missing parents; return the ones created, outermost first."""
        ...

    def rmdir(self, path: str) -> None:
        """Remove path if it is an empty directory; otherwise leave it."""
        ...

    def kind(self, path: str) -> EntryKind | None:
        """What path is, without following a symlink; None when it does not exist."""
        ...

    def modified(self, path: str) -> float | None:
        """When path last changed (POSIX seconds, lstat); None when it does not exist."""
        ...

    def upload(self, source: Path, path: str, progress: ProgressCallback | None) -> None: ...
    def write_bytes(self, path: str, data: bytes) -> None: ...
    def read_bytes(self, path: str, limit: int) -> bytes:
        """The content of a file; StoreError when it is larger than limit bytes."""
        ...

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


# How often a write probe is tried when its experiment folder vanished under it.
PROBE_ATTEMPTS = 3


class ArtifactStore:
    """Versioned, atomic publishing of model sets on top of a Backend."""

    def __init__(
        self,
        backend: Backend,
        verify_limit_bytes: int = DEFAULT_VERIFY_LIMIT_BYTES,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.backend = backend
        self.verify_limit_bytes = verify_limit_bytes
        self.clock = clock

    @property
    def url(self) -> str:
        return self.backend.url

    def __enter__(self) -> ArtifactStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.backend.close()

    # -- publishing -------------------------------------------------------------------------

    def check_writable(self, experiment: str, token: str) -> None:
        """Write and remove a probe file in the experiment; leaves no folder it created."""
        validate_name("experiment", experiment)
        validate_name("probe", token)
        probe = posixpath.join(experiment, f".write-probe-{token}{PART_SUFFIX}")
        for attempt in range(1, PROBE_ATTEMPTS + 1):
            created = self.backend.makedirs(experiment)
            try:
                self.backend.write_bytes(probe, b"")
            except StoreError:
                self._remove_empty(created)
                # Another run's probe may have removed the folder it created, empty, between
                # this makedirs and this write (runs started together): make it again.
                if attempt == PROBE_ATTEMPTS or self.backend.kind(experiment) is not None:
                    raise
                continue
            try:
                self.backend.remove(probe)
            finally:
                self._remove_empty(created)
            return

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
        created = self.backend.makedirs(version_dir)
        try:
            if self.backend.kind(version_dir) != "dir":
                raise StoreError(
                    f"{self.url}/{version_dir} is not a directory inside the store (a symlink?); "
                    "remove it or publish under another version name"
                )
            self._remove_stale_parts(version_dir)
            for name, source in files.items():
                callback = (
                    (lambda done, total, n=name: progress(n, done, total)) if progress else None
                )
                self._put_verified(source, posixpath.join(version_dir, name), callback)
            manifest_bytes = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
            self._put_bytes_atomic(posixpath.join(version_dir, MANIFEST), manifest_bytes)
        except BaseException:
            self._remove_empty(created)  # a failed run leaves no empty folders of its own
            raise
        self._advance_latest(experiment, version)
        return PublishedVersion(self.url, experiment, version)

    def _remove_empty(self, created: list[str]) -> None:
        for directory in reversed(created):
            try:
                self.backend.rmdir(directory)
            except Exception as error:  # best effort: never hide the error being raised
                logger.debug("could not remove %s: %s", directory, error)

    def _remove_stale_parts(self, version_dir: str) -> None:
        for entry in self.backend.listdir(version_dir):
            if entry.endswith(PART_SUFFIX):
                self.backend.remove(posixpath.join(version_dir, entry))

    def _put_verified(self, source: Path, target: str, progress: ProgressCallback | None) -> None:
        expected_size = source.stat().st_size
        expected_sha = sha256_file(source)
        if (
            self.backend.kind(target) == "file"
            and self.backend.size(target) == expected_size
            and self.backend.sha256(target) == expected_sha
        ):
            return  # already published by an earlier, interrupted attempt
        part = target + PART_SUFFIX
        self.backend.upload(source, part, progress)
        actual_size = self.backend.size(part)
        if actual_size != expected_size:
            self.backend.remove(part)
            raise StoreError(
                f"{self.url}/{part}: wrote {actual_size} bytes, expected {expected_size}"
            )
        if expected_size <= self.verify_limit_bytes and self.backend.sha256(part) != expected_sha:
            self.backend.remove(part)
            raise IntegrityError(f"{self.url}/{part}: sha256 read back differs from the source")
        self.backend.replace(part, target)

    def _put_bytes_atomic(self, target: str, data: bytes) -> None:
        part = target + PART_SUFFIX
        self.backend.write_bytes(part, data)
        self.backend.replace(part, target)

    def _advance_latest(self, experiment: str, version: str) -> None:
        # Two publishers can read LATEST at once and the older one rename last; so each one
        # writes the newest complete version it can see and re-reads until LATEST names it.
        # The last action of every publisher is then a read that found LATEST up to date.
        latest_path = posixpath.join(experiment, LATEST)
        part = posixpath.join(experiment, f"{LATEST}.{version}{PART_SUFFIX}")
        try:
            for _ in range(8):
                newest = self._newest_complete(experiment, at_least=version)
                current, problem = self._read_latest(experiment)
                if current == newest:
                    return
                if problem:
                    logger.warning(
                        "%s/%s was invalid (%s); replacing it with %s",
                        self.url,
                        latest_path,
                        problem,
                        newest,
                    )
                if self.backend.kind(latest_path) == "dir":
                    self.backend.rmdir(latest_path)  # only if empty; else the rename fails
                self.backend.write_bytes(part, (newest + "\n").encode())
                self.backend.replace(part, latest_path)
        except StoreError as error:
            try:
                self.backend.remove(part)
            except Exception as cleanup:
                logger.debug("could not remove %s: %s", part, cleanup)
            logger.warning(
                "%s/%s/%s is published and complete, but LATEST could not be updated: %s. "
                "Make %s/%s a writable file (or remove it) and publish again, or fetch this "
                "version by name",
                self.url,
                experiment,
                version,
                error,
                self.url,
                latest_path,
            )

    def _newest_complete(self, experiment: str, at_least: str) -> str:
        # Only names newer than our own complete version need their manifest checked: one
        # listing, not a stat per old version (many round trips over SFTP).
        horizon = (self.clock() + MAX_CLOCK_SKEW).strftime(_TIMESTAMP_FORMAT)
        newer = sorted((e for e in self._version_names(experiment) if e > at_least), reverse=True)
        for entry in newer:
            if not self._is_complete(experiment, entry):
                continue
            stamp = _TIMESTAMP.match(entry)
            if stamp and stamp[0] > horizon:
                logger.warning(
                    "%s/%s/%s is dated more than %s ahead of this machine's clock (a planted "
                    "version, or a publisher whose clock runs ahead): not taken as newest; "
                    "check the clocks, or remove that version if nobody published it",
                    self.url,
                    experiment,
                    entry,
                    MAX_CLOCK_SKEW,
                )
                continue
            return entry
        return at_least

    # -- reading ----------------------------------------------------------------------------

    def _is_complete(self, experiment: str, version: str) -> bool:
        """A real directory (not a symlink) holding a regular-file manifest."""
        version_dir = posixpath.join(experiment, version)
        return (
            self.backend.kind(version_dir) == "dir"
            and self.backend.kind(posixpath.join(version_dir, MANIFEST)) == "file"
        )

    def list_versions(self, experiment: str) -> list[str]:
        """Complete versions (those with a manifest), oldest first."""
        validate_name("experiment", experiment)
        if self.backend.kind(experiment) != "dir":
            return []
        return sorted(
            entry
            for entry in self._version_names(experiment)
            if self._is_complete(experiment, entry)
        )

    def _version_names(self, experiment: str) -> list[str]:
        """Entries of an experiment that may be versions (complete or not)."""
        return [
            entry
            for entry in self.backend.listdir(experiment)
            if _is_name(entry) and entry != LATEST and not entry.endswith(PART_SUFFIX)
        ]

    def _read_latest(self, experiment: str) -> tuple[str | None, str | None]:
        """(complete version LATEST names or None, what is wrong with LATEST or None)."""
        path = posixpath.join(experiment, LATEST)
        kind = self.backend.kind(path)
        if kind is None:
            return None, None
        if kind != "file":
            return None, f"it is a {kind}, not a regular file"
        try:
            data = self.backend.read_bytes(path, MAX_LATEST_BYTES)
        except StoreError as error:
            return None, str(error)
        try:
            name = data.decode("utf-8").strip()
        except UnicodeDecodeError:
            return None, "it is not UTF-8 text"
        if not _is_name(name):
            return None, f"{name[:60]!r} is not a version name"
        if not self._is_complete(experiment, name):
            return None, None  # names a version being removed or never finished: replaceable
        return name, None

    def latest(self, experiment: str) -> str | None:
        """The version LATEST names, or None when the experiment has no complete version."""
        validate_name("experiment", experiment)
        version, problem = self._read_latest(experiment)
        if problem:
            raise StoreError(
                f"{self.url}/{experiment}/{LATEST} is invalid: {problem}; fetch a version by "
                f"name (complete versions: {self.list_versions(experiment) or 'none'}) or "
                "publish a new version, which repairs LATEST"
            )
        return version

    def read_manifest(self, experiment: str, version: str) -> dict[str, Any]:
        """The parsed manifest of a complete version."""
        validate_name("experiment", experiment)
        validate_name("version", version)
        if not self._is_complete(experiment, version):
            raise VersionNotFoundError(
                f"{self.url}/{experiment}/{version} is not a complete version (no {MANIFEST}); "
                f"complete versions: {self.list_versions(experiment) or 'none'}"
            )
        path = posixpath.join(experiment, version, MANIFEST)
        raw = self.backend.read_bytes(path, MAX_MANIFEST_BYTES)
        try:
            manifest = json.loads(raw)
        except ValueError as error:
            raise StoreError(f"{self.url}/{path} is not valid JSON: {error}") from None
        if not isinstance(manifest, dict):
            raise StoreError(f"{self.url}/{path} is not a JSON object")
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
        try:
            expected_files = manifest_files(manifest)
        except (KeyError, TypeError, AttributeError) as error:
            raise StoreError(
                f"{self.url}/{experiment}/{version}/{MANIFEST} does not list its files "
                f"(name -> sha256): {type(error).__name__}"
            ) from None
        for name in expected_files:  # all names first: nothing is written for a bad manifest
            validate_name("file", name)
            if name in (MANIFEST, LATEST):
                raise StoreError(f"{MANIFEST} of {version} lists the reserved name {name!r}")
        target_dir = destination / version
        target_dir.mkdir(parents=True, exist_ok=True)
        for name, expected in expected_files.items():
            remote = posixpath.join(experiment, version, name)
            if self.backend.kind(remote) != "file":
                raise StoreError(
                    f"{self.url}/{remote} is missing or not a regular file (symlinks are not "
                    "followed); publish the version again"
                )
            local = target_dir / name
            callback = (lambda done, total, n=name: progress(n, done, total)) if progress else None
            self.backend.download(remote, local, callback)
            if verify and sha256_file(local) != expected:
                local.unlink()
                raise IntegrityError(
                    f"{self.url}/{remote}: sha256 differs from the manifest; "
                    "the file was changed after publishing and was not kept"
                )
        (target_dir / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        return target_dir


def manifest_files(manifest: Mapping[str, Any]) -> dict[str, str]:
    """name → sha256 of every file a manifest covers (its `files` map, else its models)."""
    files = manifest.get("files")
    if isinstance(files, Mapping):
        return {str(name): str(entry["sha256"]) for name, entry in files.items()}
    return {str(m["file"]): str(m["sha256"]) for m in manifest.get("models", {}).values()}
