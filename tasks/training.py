"""Task: one fit (a model's final fit or one CV fold), run in the training worker pool."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from kubetrain.data import Dataset
from kubetrain.training.engine import FitOutcome, FitPool, TrainingConfig


def fit_run_name(parameters: dict[str, Any]) -> str:
    """The task run's name in the UI: fit-nn-final, fit-nn-fold-3 (folds counted from 1)."""
    model, fold = parameters["model"], parameters["fold"]
    return f"fit-{model}-final" if fold is None else f"fit-{model}-fold-{fold + 1}"


# Prefect passes `parameters` to a name callback; its Protocol also wants a classmethod.
@task(name="fit", task_run_name=fit_run_name, cache_policy=NO_CACHE)  # type: ignore[arg-type]
def fit(
    dataset: Dataset, config: TrainingConfig, model: str, fold: int | None, workers: int
) -> FitOutcome:
    """One fit in a worker process: a model on all rows, or on one CV fold's training rows."""
    return FitPool(workers).fit(dataset.X, dataset.y, config, model, fold)
