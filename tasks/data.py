"""Tasks: load the training data; fetch and fingerprint data to score."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from kubetrain.data import Dataset, fetch_source, load_dataset
from kubetrain.store import sha256_file
from tasks.retries import IO_RETRIES


@dataclass(frozen=True)
class FetchedData:
    """A local copy (or the local file itself) of data to score, and its sha256."""

    path: Path
    sha256: str


@task(name="load-data", cache_policy=NO_CACHE, **IO_RETRIES)
def load_data(data: str, target: str, drop_columns: list[str], folds: int) -> Dataset:
    """Load, fingerprint and validate the training CSV."""
    return load_dataset(data, target, drop_columns, folds)


@task(name="fetch-data", cache_policy=NO_CACHE, **IO_RETRIES)
def fetch_data(data: str, workdir: Path) -> FetchedData:
    """Download the CSV to score (a local path is used in place) and fingerprint it."""
    path = fetch_source(data, workdir)
    return FetchedData(path=path, sha256=sha256_file(path))
