"""Tasks that talk to the artifact store: check, serialize, publish, fetch."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from kubetrain.inference import LoadedVersion, load_version
from kubetrain.manifest import write_version_files
from kubetrain.store import StoreError, open_store, validate_name
from kubetrain.training.engine import ModelResult


@task(name="check-destination", cache_policy=NO_CACHE)
def check_destination(destination: str, experiment: str, version: str) -> None:
    """Fail before training when the destination cannot be written (probe file, then removed)."""
    validate_name("experiment", experiment)
    with open_store(destination) as store:
        probe = f"{experiment}/.write-probe-{version}.part"
        try:
            store.backend.makedirs(experiment)
            store.backend.write_bytes(probe, b"")
            store.backend.remove(probe)
        except StoreError:
            raise
        except OSError as error:
            raise StoreError(
                f"destination {destination!r} cannot be written: {error}; "
                "choose a destination you can write to"
            ) from error


@task(name="serialize", cache_policy=NO_CACHE)
def serialize(results: Mapping[str, ModelResult], directory: Path) -> dict[str, Path]:
    """Write the model files, metadata.json and cv_results.csv into directory."""
    return write_version_files(results, directory)


# No task-level retries: the SFTP backend retries transient I/O itself, and a repeated publish
# of a permanent failure (permissions, disk full) would only delay the error.
@task(name="publish", cache_policy=NO_CACHE)
def publish(
    destination: str,
    experiment: str,
    version: str,
    files: dict[str, Path],
    manifest: dict[str, Any],
) -> str:
    """Publish the files, then manifest.json, then LATEST; a retry resumes where it stopped."""
    with open_store(destination) as store:
        return store.publish(experiment, version, files, manifest).location


@task(name="load-version", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[2, 8])
def fetch_version(
    source: str, experiment: str, version: str | None, workdir: Path
) -> LoadedVersion:
    """Fetch a published version with checksum verification and load its models."""
    return load_version(source, experiment, version, workdir)
