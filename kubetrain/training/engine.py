"""Fit and cross-validate models, all fits and folds concurrently over processes.

Every requested model gets one final fit on all rows plus one fit per CV fold. These jobs are
independent, so they run in a pool of worker processes (joblib/loky) with BLAS/OpenMP capped
at one thread each, longest first. Each job does exactly what `cross_val_score` does for its
fold (same splitter, same clone, same scorer), so the scores are bit-identical to running
the original procedure one fit after another.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kubetrain.settings import get_settings
from kubetrain.training.catalog import CATALOG, build_estimator, estimator_params, fit_and_score

# metadata.json (the original's contract) needs mean CV accuracy, so it is always scored.
REQUIRED_METRIC = "accuracy"


@dataclass(frozen=True)
class TrainingConfig:
    """What to train and how to cross-validate it."""

    models: list[str]
    model_params: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    normalize: str = "l2"
    folds: int = 5
    shuffle: bool = False
    seed: int = 0
    metrics: list[str] = field(default_factory=lambda: [REQUIRED_METRIC])

    @property
    def scored_metrics(self) -> list[str]:
        """The requested metrics, accuracy first and always included."""
        return [REQUIRED_METRIC, *(m for m in self.metrics if m != REQUIRED_METRIC)]


@dataclass(frozen=True)
class Job:
    """One fit: the final one on all rows (fold None) or one CV fold."""

    model: str
    fold: int | None
    cost: float


@dataclass
class ModelResult:
    """A fitted model, its parameters and its per-fold CV scores."""

    name: str
    estimator: Any
    params: dict[str, Any]
    scores: dict[str, list[float]]
    seconds: float = 0.0

    def mean(self, metric: str) -> float:
        """Mean over folds, computed like numpy's (as cross_val_score(...).mean())."""
        return float(np.asarray(self.scores[metric]).mean())

    def std(self, metric: str) -> float:
        """Population std over folds (numpy's default, as the tutorial would print)."""
        return float(np.asarray(self.scores[metric]).std())


def _logger() -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
    try:
        from prefect.logging import get_run_logger

        return get_run_logger()
    except Exception:  # outside a flow/task run
        return logging.getLogger("kubetrain.training")


def default_workers() -> int:
    """Worker processes: KUBETRAIN_TRAIN_WORKERS, else the CPUs this process may use."""
    configured = get_settings().train_workers
    if configured:
        return configured
    from joblib import cpu_count

    # loky's count honours CPU affinity and the cgroup CPU quota (a Kubernetes limit).
    return max(1, int(cpu_count()))


def cv_splits(
    y: np.ndarray, folds: int, shuffle: bool, seed: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """The (train, test) indices cross_val_score(cv=folds) uses for a classifier."""
    from sklearn.model_selection import StratifiedKFold

    splitter = StratifiedKFold(
        n_splits=folds, shuffle=shuffle, random_state=seed if shuffle else None
    )
    return list(splitter.split(np.zeros((len(y), 1)), y))


def preprocess(X: np.ndarray, normalize: str) -> np.ndarray:
    """Row-wise L2 scaling for normalize="l2" (stateless, as the original); else X unchanged."""
    if normalize == "l2":
        from sklearn.preprocessing import normalize as l2_normalize

        return np.asarray(l2_normalize(X, norm="l2"))
    return X


def plan_jobs(config: TrainingConfig, rows: int) -> list[Job]:
    """Every fit to run, longest first, so the slow ones never start last."""
    train_rows = rows * (config.folds - 1) / config.folds
    jobs = [Job(m, None, CATALOG[m].cost * rows) for m in config.models]
    jobs += [
        Job(m, fold, CATALOG[m].cost * train_rows)
        for m in config.models
        for fold in range(config.folds)
    ]
    return sorted(jobs, key=lambda job: -job.cost)


def train_models(
    X: np.ndarray, y: np.ndarray, config: TrainingConfig, workers: int | None = None
) -> dict[str, ModelResult]:
    """Final fits and CV folds of every model; concurrent over `workers` processes."""
    log = _logger()
    X = preprocess(X, config.normalize)
    splits = cv_splits(y, config.folds, config.shuffle, config.seed)
    jobs = plan_jobs(config, len(y))
    workers = min(workers or default_workers(), len(jobs))
    results = {
        m: ModelResult(
            name=m,
            estimator=None,
            params=estimator_params(
                build_estimator(m, config.seed, config.model_params.get(m), config.normalize)
            ),
            scores={metric: [float("nan")] * config.folds for metric in config.scored_metrics},
        )
        for m in config.models
    }
    log.info(
        "training %d fits (%d models) on %d worker process(es)", len(jobs), len(results), workers
    )
    if workers == 1:
        _collect((_call(job, X, y, splits, config) for job in jobs), results, log, len(jobs))
        return results
    from joblib import Parallel, delayed, parallel_config

    # loky starts fresh interpreters with OMP/OpenBLAS/MKL threads capped, so two workers on
    # two cores never oversubscribe; the pool is reused by later runs in the same process.
    with parallel_config(backend="loky", inner_max_num_threads=1):
        outcomes = Parallel(
            n_jobs=workers, batch_size=1, pre_dispatch="all", return_as="generator_unordered"
        )(delayed(fit_and_score)(*_arguments(job, X, y, splits, config)) for job in jobs)
        _collect(outcomes, results, log, len(jobs))
    return results


def _arguments(
    job: Job,
    X: np.ndarray,
    y: np.ndarray,
    splits: Sequence[tuple[np.ndarray, np.ndarray]],
    config: TrainingConfig,
) -> tuple[Any, ...]:
    # Plain values only: workers unpickle them without importing this (prefect-importing) module.
    return (
        (job.model, job.fold),
        config.seed,
        dict(config.model_params.get(job.model) or {}),
        config.normalize,
        X,
        y,
        None if job.fold is None else splits[job.fold],
        config.scored_metrics,
    )


def _call(
    job: Job,
    X: np.ndarray,
    y: np.ndarray,
    splits: Sequence[tuple[np.ndarray, np.ndarray]],
    config: TrainingConfig,
) -> tuple[tuple[str, int | None], Any, float]:
    return fit_and_score(*_arguments(job, X, y, splits, config))


def _collect(
    outcomes: Iterable[tuple[tuple[str, int | None], Any, float]],
    results: dict[str, ModelResult],
    log: Any,
    total: int,
) -> None:
    for done, ((model, fold), payload, seconds) in enumerate(outcomes, start=1):
        what = "final fit" if fold is None else f"fold {fold + 1}"
        log.info("[%d/%d] %s %s done in %.1fs", done, total, model, what, seconds)
        result = results[model]
        result.seconds += seconds
        if fold is None:
            result.estimator = payload
        else:
            for metric, score in payload.items():
                result.scores[metric][fold] = score
