"""Task: predict a CSV with a loaded version."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from kubetrain.inference import LoadedVersion, PredictionRun, predict_csv
from kubetrain.locations import redact_url


@task(name="score", cache_policy=NO_CACHE)
def score_data(loaded: LoadedVersion, path: Path, source: str, output: Path) -> PredictionRun:
    """Predict a local CSV chunk by chunk with every model of the version (source names it)."""
    return predict_csv(loaded, path, redact_url(source), output)
