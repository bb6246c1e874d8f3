"""Task: score a CSV with a loaded version."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from kubetrain.data import fetch_source, read_csv
from kubetrain.inference import LoadedVersion, Scores, score


@task(name="score", cache_policy=NO_CACHE)
def score_data(loaded: LoadedVersion, data: str, workdir: Path) -> Scores:
    """Read the CSV to score and predict it with every model of the version."""
    frame = read_csv(fetch_source(data, workdir), data)
    return score(loaded, frame, data)
