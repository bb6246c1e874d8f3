"""Tasks that talk to the artifact store: check, serialize, publish, fetch."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from kubetrain.inference import LoadedVersion, load_version
from kubetrain.manifest import write_version_files
from kubetrain.store import open_store
from kubetrain.training.engine import ModelResult
from tasks.retries import IO_RETRIES


@task(name="check-destination", cache_policy=NO_CACHE, **IO_RETRIES)
def check_destination(destination: str, experiment: str, version: str) -> None:
    """Fail before training when the destination cannot be written (probe file, then removed)."""
    with open_store(destination) as store:
        store.check_writable(experiment, version)


@task(name="serialize", cache_policy=NO_CACHE)
def serialize(results: Mapping[str, ModelResult], directory: Path) -> dict[str, Path]:
    """Write the model files, metadata.json and cv_results.csv into directory."""
    return write_version_files(results, directory)


# The SFTP backend also retries single operations; a task retry after that resumes the version
# (files already verified are skipped). Permanent failures are UserErrors and are not retried.
@task(name="publish", cache_policy=NO_CACHE, **IO_RETRIES)
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


@task(name="load-version", cache_policy=NO_CACHE, **IO_RETRIES)
def fetch_version(
    source: str, experiment: str, version: str | None, workdir: Path
) -> LoadedVersion:
    """Fetch a published version with checksum verification and load its models."""
    return load_version(source, experiment, version, workdir)
