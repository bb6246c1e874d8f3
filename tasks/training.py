"""Task: fit and cross-validate the models."""

from __future__ import annotations

import numpy as np
from prefect import task
from prefect.cache_policies import NO_CACHE

from kubetrain.training.engine import ModelResult, TrainingConfig, train_models


@task(name="fit-and-cross-validate", cache_policy=NO_CACHE)
def fit_and_cross_validate(
    X: np.ndarray, y: np.ndarray, config: TrainingConfig, workers: int | None = None
) -> dict[str, ModelResult]:
    """Fit every model on all rows and cross-validate it, fits and folds in parallel."""
    return train_models(X, y, config, workers)
