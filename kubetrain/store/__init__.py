"""The artifact store: versioned, checksummed, atomically published model sets.

`protocol` holds the publishing protocol once, written against a few filesystem primitives
(`Backend`); `local` implements them on a folder and `sftp` over SFTP. `open_store` picks the
backend from a destination URL.
"""

from __future__ import annotations

from kubetrain.locations import LocalPath, parse_location
from kubetrain.store.local import LocalBackend
from kubetrain.store.protocol import (
    DEFAULT_VERIFY_LIMIT_BYTES,
    LATEST,
    MANIFEST,
    MAX_CLOCK_SKEW,
    PART_SUFFIX,
    ArtifactStore,
    Backend,
    IntegrityError,
    ProgressCallback,
    PublishedVersion,
    StoreError,
    VersionNotFoundError,
    manifest_files,
    sha256_file,
    validate_name,
)

__all__ = [
    "DEFAULT_VERIFY_LIMIT_BYTES",
    "LATEST",
    "MANIFEST",
    "MAX_CLOCK_SKEW",
    "PART_SUFFIX",
    "ArtifactStore",
    "Backend",
    "IntegrityError",
    "LocalBackend",
    "ProgressCallback",
    "PublishedVersion",
    "StoreError",
    "VersionNotFoundError",
    "manifest_files",
    "open_store",
    "sha256_file",
    "validate_name",
]


def open_store(
    destination: str, verify_limit_bytes: int = DEFAULT_VERIFY_LIMIT_BYTES
) -> ArtifactStore:
    """An ArtifactStore for a destination URL: a plain path, file:///abs/path or sftp://…"""
    location = parse_location(destination, what="destination", allow_http=False, error=StoreError)
    if isinstance(location, LocalPath):
        return ArtifactStore(LocalBackend(location.path.resolve()), verify_limit_bytes)
    from kubetrain.store.sftp import open_sftp_backend  # paramiko is only imported when needed

    return ArtifactStore(open_sftp_backend(destination), verify_limit_bytes)
