"""Task: load the training data."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from kubetrain.data import Dataset, load_dataset
from tasks.retries import IO_RETRIES


@task(name="load-data", cache_policy=NO_CACHE, **IO_RETRIES)
def load_data(data: str, target: str, drop_columns: list[str], folds: int) -> Dataset:
    """Load, fingerprint and validate the training CSV."""
    return load_dataset(data, target, drop_columns, folds)
