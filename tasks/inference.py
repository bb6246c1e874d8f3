"""Task: predict a CSV with a loaded version."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from kubetrain.data import fetch_source
from kubetrain.inference import LoadedVersion, PredictionRun, predict_csv
from kubetrain.locations import redact_url
from tasks.retries import IO_RETRIES


@task(name="score", cache_policy=NO_CACHE, **IO_RETRIES)
def score_data(loaded: LoadedVersion, data: str, workdir: Path, output: Path) -> PredictionRun:
    """Fetch the CSV to score and predict it chunk by chunk with every model of the version."""
    return predict_csv(loaded, fetch_source(data, workdir), redact_url(data), output)
