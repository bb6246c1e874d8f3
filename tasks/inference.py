"""Tasks: predict a CSV with a loaded version; put the predictions in a store."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from kubetrain import inference
from kubetrain.inference import LoadedVersion, PredictionRun, predict_csv
from kubetrain.locations import redact_url
from tasks.retries import IO_RETRIES


@task(name="score", cache_policy=NO_CACHE)
def score_data(loaded: LoadedVersion, path: Path, source: str, output: Path) -> PredictionRun:
    """Predict a local CSV chunk by chunk with every model of the version (source names it)."""
    return predict_csv(loaded, path, redact_url(source), output)


@task(name="check-output", cache_policy=NO_CACHE, **IO_RETRIES)
def check_predictions_store(output: str, source: str, experiment: str) -> None:
    """Fail before scoring when the predictions store is the model store or cannot be written."""
    inference.check_predictions_store(output, source, experiment)


@task(name="upload-predictions", cache_policy=NO_CACHE, **IO_RETRIES)
def upload_predictions(local: Path, output: str, experiment: str, name: str) -> str:
    """Upload the predictions CSV to the store (.part, verified, renamed); returns its URL."""
    return inference.upload_predictions(local, output, experiment, name)
