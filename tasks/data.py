"""Tasks: load the training data; fetch data to score."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from kubetrain.data import Dataset, fetch_source, load_dataset
from tasks.retries import IO_RETRIES


@task(name="load-data", cache_policy=NO_CACHE, **IO_RETRIES)
def load_data(data: str, target: str, drop_columns: list[str], folds: int) -> Dataset:
    """Load, fingerprint and validate the training CSV."""
    return load_dataset(data, target, drop_columns, folds)


@task(name="fetch-data", cache_policy=NO_CACHE, **IO_RETRIES)
def fetch_data(data: str, workdir: Path) -> Path:
    """Download the CSV to score into workdir (a local path is used in place)."""
    return fetch_source(data, workdir)
