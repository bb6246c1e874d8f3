"""Fit and cross-validate models, all fits and folds concurrently over processes.

Every requested model gets one final fit on all rows plus one fit per CV fold. `fit_one` performs
one of these fits (the unit the train flow shows as one task run, and the unit a scale-out run
ships elsewhere). The fits are independent, so they run in a pool of worker processes (loky)
with BLAS/OpenMP capped at one thread each, longest first. Each fold fit does exactly what
`cross_val_score` does for its fold (same splitter, same clone, same scorer), so the scores are
bit-identical to running the original procedure one fit after another.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Iterable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kubetrain.settings import get_settings
from kubetrain.training.catalog import CATALOG, build_estimator, estimator_params

# metadata.json (the original's contract) needs mean CV accuracy, so it is always scored.
REQUIRED_METRIC = "accuracy"
# The thread-count variables joblib's loky backend caps for `inner_max_num_threads=1`.
_THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "BLIS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMBA_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)


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


@dataclass(frozen=True)
class FitOutcome:
    """What one fit produced: the fitted model (final fit) or a fold's scores and predictions."""

    model: str
    fold: int | None
    seconds: float
    estimator: Any = None
    scores: dict[str, float] = field(default_factory=dict)
    test_index: np.ndarray | None = None
    predictions: np.ndarray | None = None


@dataclass
class ModelResult:
    """A fitted model, its parameters, its per-fold CV scores and out-of-fold predictions."""

    name: str
    estimator: Any
    params: dict[str, Any]
    scores: dict[str, list[float]]
    seconds: float = 0.0
    # Each row's prediction by the fold model that did not train on it (for confusion matrices).
    oof_predictions: np.ndarray | None = None

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


def fit_one(
    X: np.ndarray, y: np.ndarray, config: TrainingConfig, model: str, fold: int | None
) -> FitOutcome:
    """One fit of `model` on the raw data: all rows (fold None) or CV fold `fold` (0-based).

    Self-contained (preprocessing and the fold split are recomputed here, both deterministic and
    cheap), so it runs unchanged in a pool worker or in another process entirely.
    """
    from sklearn.base import clone
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.metrics import get_scorer

    started = time.perf_counter()
    X = preprocess(X, config.normalize)
    estimator = build_estimator(
        model, config.seed, config.model_params.get(model), config.normalize
    )
    with warnings.catch_warnings():
        # A capped max_iter is the user's choice; the original ran with the warning too.
        warnings.simplefilter("ignore", ConvergenceWarning)
        if fold is None:
            estimator.fit(X, y)
            return FitOutcome(model, None, time.perf_counter() - started, estimator=estimator)
        train_idx, test_idx = cv_splits(y, config.folds, config.shuffle, config.seed)[fold]
        fold_model = clone(estimator).fit(X[train_idx], y[train_idx])
        scores = {
            metric: float(get_scorer(metric)(fold_model, X[test_idx], y[test_idx]))
            for metric in config.scored_metrics
        }
        predictions = np.asarray(fold_model.predict(X[test_idx]))
    return FitOutcome(
        model,
        fold,
        time.perf_counter() - started,
        scores=scores,
        test_index=np.asarray(test_idx),
        predictions=predictions,
    )


class FitPool:
    """Worker processes for `fit_one`, one BLAS/OpenMP thread each; reused across runs.

    workers == 1 fits in this process instead (no pool to start).
    """

    def __init__(self, workers: int | None = None) -> None:
        self.workers = workers or default_workers()

    def submit(
        self, X: np.ndarray, y: np.ndarray, config: TrainingConfig, model: str, fold: int | None
    ) -> Future[FitOutcome]:
        """Start one fit; the future resolves to its FitOutcome."""
        if self.workers == 1:
            done: Future[FitOutcome] = Future()
            try:
                done.set_result(fit_one(X, y, config, model, fold))
            except Exception as error:
                done.set_exception(error)
            return done
        from joblib.externals.loky import get_reusable_executor

        # loky starts fresh interpreters with the thread caps in their environment, so two
        # workers on two cores never oversubscribe; the pool is reused by later runs.
        executor = get_reusable_executor(
            max_workers=self.workers, timeout=300, env=dict.fromkeys(_THREAD_VARIABLES, "1")
        )
        return executor.submit(fit_one, X, y, config, model, fold)

    def fit(
        self, X: np.ndarray, y: np.ndarray, config: TrainingConfig, model: str, fold: int | None
    ) -> FitOutcome:
        """One fit in the pool, waited for."""
        return self.submit(X, y, config, model, fold).result()


def empty_results(config: TrainingConfig) -> dict[str, ModelResult]:
    """A ModelResult per model with its parameters and NaN scores, to be filled by `collect`."""
    return {
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


def collect(outcome: FitOutcome, results: dict[str, ModelResult], y: np.ndarray) -> None:
    """Record one fit's outcome in its model's result."""
    result = results[outcome.model]
    result.seconds += outcome.seconds
    if outcome.fold is None:
        result.estimator = outcome.estimator
        return
    for metric, score in outcome.scores.items():
        result.scores[metric][outcome.fold] = score
    if outcome.test_index is not None and outcome.predictions is not None:
        if result.oof_predictions is None:
            result.oof_predictions = np.empty(len(y), dtype=outcome.predictions.dtype)
        result.oof_predictions[outcome.test_index] = outcome.predictions


def describe_fit(model: str, fold: int | None) -> str:
    """How a fit is named for people: 'nn final fit' or 'nn fold 3' (folds counted from 1)."""
    return f"{model} final fit" if fold is None else f"{model} fold {fold + 1}"


def train_models(
    X: np.ndarray, y: np.ndarray, config: TrainingConfig, workers: int | None = None
) -> dict[str, ModelResult]:
    """Final fits and CV folds of every model; concurrent over `workers` processes."""
    log = _logger()
    jobs = plan_jobs(config, len(y))
    pool = FitPool(min(workers or default_workers(), len(jobs)))
    results = empty_results(config)
    log.info(
        "training %d fits (%d models) on %d worker process(es)",
        len(jobs),
        len(results),
        pool.workers,
    )
    futures = [pool.submit(X, y, config, job.model, job.fold) for job in jobs]
    _collect_all(_completed(futures), results, y, log, len(jobs))
    return results


def _completed(futures: list[Future[FitOutcome]]) -> Iterable[FitOutcome]:
    from concurrent.futures import as_completed

    for future in as_completed(futures):
        yield future.result()


def _collect_all(
    outcomes: Iterable[FitOutcome],
    results: dict[str, ModelResult],
    y: np.ndarray,
    log: Any,
    total: int,
) -> None:
    for done, outcome in enumerate(outcomes, start=1):
        what = describe_fit(outcome.model, outcome.fold)
        log.info("[%d/%d] %s done in %.1fs", done, total, what, outcome.seconds)
        collect(outcome, results, y)


def check_fit_constraints(config: TrainingConfig) -> None:
    """Fail now on override values scikit-learn accepts when set and rejects only inside fit.

    `catalog.check_configuration` runs scikit-learn's own parameter checks; these are the
    constraints of catalog models that scikit-learn checks only once a fit starts.
    """
    from kubetrain.training.catalog import ModelConfigError, build_estimator

    for name in config.models:
        if not config.model_params.get(name):
            continue
        estimator = build_estimator(name, config.seed, config.model_params.get(name), "none")
        params = estimator.get_params(deep=False)
        problem = _fit_time_problem(name, params)
        if problem:
            raise ModelConfigError(f"model_params for {name!r}: {problem}")


def _fit_time_problem(name: str, params: Mapping[str, Any]) -> str | None:
    if name == "nn":
        sizes = params["hidden_layer_sizes"]
        sizes = sizes if isinstance(sizes, tuple | list) else (sizes,)
        if not sizes or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in sizes):
            shown = list(sizes)[:10]
            return (
                f"hidden_layer_sizes must be a list of positive whole numbers (neurons per "
                f"layer), got {shown}; use e.g. [100] or [256, 64]"
            )
    if name == "rf" and not params["bootstrap"]:
        if params["oob_score"]:
            return "oob_score needs bootstrap=true; set bootstrap to true or drop oob_score"
        if params["max_samples"] is not None:
            return "max_samples needs bootstrap=true; set bootstrap to true or drop max_samples"
    if name == "lda" and params["solver"] == "svd" and params["shrinkage"] is not None:
        return "shrinkage does not work with solver 'svd'; set solver to 'lsqr' or 'eigen'"
    return None
