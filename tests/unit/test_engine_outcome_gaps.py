"""training/engine.py: what one fit reports (durations, fold indices and predictions), how the
pool runs fits (here for one worker, in capped worker processes for more), how outcomes are
collected into results, and the progress a run logs."""

from __future__ import annotations

import logging
import os
import time
import warnings
from typing import Any, cast

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import StratifiedKFold
from sklearn.preprocessing import normalize as l2_normalize

from kubetrain.training import engine
from kubetrain.training.catalog import CATALOG, build_estimator
from kubetrain.training.engine import (
    FitOutcome,
    FitPool,
    TrainingConfig,
    collect,
    describe_fit,
    empty_results,
    fit_one,
    plan_jobs,
    train_models,
)

# Restated, not imported: a test that read the engine's own list could not notice one dropped.
THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "BLIS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMBA_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)


def _data(rows_per_class: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """Three string-labelled classes, separable but not perfectly."""
    rng = np.random.default_rng(1)
    y = np.repeat(["ant", "bee", "cat"], rows_per_class)
    X = rng.normal(size=(len(y), 4))
    X[y == "bee"] += 1.5
    X[y == "cat"] -= 1.5
    return X, y


def _progress(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "kubetrain.training"]


# --- fit_one -----------------------------------------------------------------------------------


def test_a_fold_outcome_carries_its_test_rows_and_the_fold_models_predictions() -> None:
    X, y = _data()
    config = TrainingConfig(models=["knn"], folds=3, shuffle=True, seed=4)
    train, test = list(StratifiedKFold(3, shuffle=True, random_state=4).split(X, y))[1]
    expected = build_estimator("knn", 4).fit(l2_normalize(X)[train], y[train])

    outcome = fit_one(X, y, config, "knn", 1)

    assert outcome.test_index is not None
    assert outcome.predictions is not None
    np.testing.assert_array_equal(outcome.test_index, test)
    np.testing.assert_array_equal(outcome.predictions, expected.predict(l2_normalize(X)[test]))
    assert set(outcome.predictions) <= {"ant", "bee", "cat"}
    assert outcome.estimator is None  # a fold's model is scored, not kept


def test_a_final_fit_outcome_has_the_model_and_no_fold_data() -> None:
    X, y = _data()
    outcome = fit_one(X, y, TrainingConfig(models=["lda"], folds=3), "lda", None)
    assert (outcome.test_index, outcome.predictions, outcome.scores) == (None, None, {})
    assert outcome.estimator is not None


@pytest.mark.parametrize("fold", [None, 0])
def test_a_fits_duration_is_the_time_it_took(fold: int | None) -> None:
    X, y = _data()
    before = time.perf_counter()
    outcome = fit_one(X, y, TrainingConfig(models=["lda"], folds=3), "lda", fold)
    elapsed = time.perf_counter() - before
    assert 0 < outcome.seconds <= elapsed


def test_standard_normalize_makes_the_scaler_part_of_the_fitted_model() -> None:
    X, y = _data()
    X = X * 100.0 + 50.0
    config = TrainingConfig(models=["svc"], normalize="standard", folds=3)
    final = fit_one(X, y, config, "svc", None)
    reference = build_estimator("svc", 0, None, "standard").fit(X, y)
    assert list(final.estimator.named_steps) == ["scale", "model"]
    np.testing.assert_array_equal(final.estimator.predict(X), reference.predict(X))


def test_warnings_about_the_data_still_reach_the_user_while_convergence_ones_do_not() -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(23, 3))
    y = np.array(["a"] * 10 + ["b"] * 10 + ["c"] * 3)  # "c" is too rare for five folds
    config = TrainingConfig(
        models=["nn"], folds=5, model_params={"nn": {"hidden_layer_sizes": [3], "max_iter": 2}}
    )
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        fit_one(X, y, config, "nn", 0)
    messages = [(w.category, str(w.message)) for w in seen]
    assert any(
        issubclass(category, UserWarning) and "only 3 members" in text and "n_splits=5" in text
        for category, text in messages
    ), messages
    assert not any(issubclass(category, ConvergenceWarning) for category, _ in messages)


# --- plan_jobs ---------------------------------------------------------------------------------


@pytest.mark.parametrize("folds", [2, 5])
def test_a_fold_job_costs_what_training_on_its_share_of_the_rows_costs(folds: int) -> None:
    jobs = plan_jobs(TrainingConfig(models=["lda"], folds=folds), rows=120)
    final = next(job for job in jobs if job.fold is None)
    fold_costs = {job.cost for job in jobs if job.fold is not None}
    assert final.cost == CATALOG["lda"].cost * 120
    assert fold_costs == {CATALOG["lda"].cost * 120 * (folds - 1) / folds}


# --- FitPool -----------------------------------------------------------------------------------


def test_a_one_worker_pool_fits_in_this_process(monkeypatch: pytest.MonkeyPatch) -> None:
    def where(*args: Any) -> int:
        return os.getpid()

    monkeypatch.setattr(engine, "fit_one", where)
    future = FitPool(1).submit(*_data(), TrainingConfig(models=["lda"]), "lda", None)
    assert future.result(timeout=60) == os.getpid()


def test_a_two_worker_pool_fits_in_two_worker_processes_capped_at_one_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from joblib.externals.loky import reusable_executor

    def where(*args: Any) -> tuple[int, dict[str, str | None]]:
        return os.getpid(), {name: os.environ.get(name) for name in THREAD_VARIABLES}

    monkeypatch.setattr(engine, "fit_one", where)
    for name in THREAD_VARIABLES:  # the caps must come from the pool, not from this process
        monkeypatch.setenv(name, "4")
    # Were the pool sized by the CPU count instead of its workers, it would show here.
    monkeypatch.setattr(reusable_executor, "cpu_count", lambda *a, **k: 3)
    future = FitPool(2).submit(*_data(), TrainingConfig(models=["lda"]), "lda", None)
    # The stand-in returns where it ran instead of a FitOutcome.
    pid, environment = cast(tuple[int, dict[str, str | None]], future.result(timeout=120))
    assert pid != os.getpid()
    assert environment == dict.fromkeys(THREAD_VARIABLES, "1")
    assert reusable_executor._executor is not None
    assert reusable_executor._executor._max_workers == 2


# --- empty_results and collect ------------------------------------------------------------------


def test_empty_results_show_each_models_configured_parameters_and_unscored_folds() -> None:
    config = TrainingConfig(
        models=["nn", "lda"],
        model_params={"nn": {"hidden_layer_sizes": [7]}},
        normalize="standard",
        folds=3,
        seed=5,
        metrics=["f1_macro"],
    )
    results = empty_results(config)
    assert list(results) == ["nn", "lda"]
    nn = results["nn"]
    assert (nn.name, nn.estimator, results["lda"].name) == ("nn", None, "lda")
    assert nn.params["scale"] == "StandardScaler()"
    assert nn.params["model"]["hidden_layer_sizes"] == [7]
    assert nn.params["model"]["random_state"] == 5
    assert results["lda"].params["model"]["solver"] == "svd"
    for result in results.values():
        assert list(result.scores) == ["accuracy", "f1_macro"]
        assert all(len(s) == 3 and all(np.isnan(s)) for s in result.scores.values())


def _fold(
    fold: int, seconds: float, accuracy: float, rows: list[int], labels: list[str]
) -> FitOutcome:
    """A fold's outcome as fit_one returns it."""
    return FitOutcome(
        "lda", fold, seconds, scores={"accuracy": accuracy},
        test_index=np.array(rows), predictions=np.array(labels),
    )  # fmt: skip


def test_collect_adds_up_the_seconds_and_places_string_predictions_by_row() -> None:
    y = np.array(["ant", "bee", "cat", "ant"])
    config = TrainingConfig(models=["lda"], folds=2)
    results = empty_results(config)
    collect(FitOutcome("lda", None, 1.5, estimator="model"), results, y)
    collect(_fold(1, 2.0, 0.5, [1, 3], ["bee", "cat"]), results, y)
    collect(_fold(0, 0.25, 1.0, [0, 2], ["ant", "cat"]), results, y)
    result = results["lda"]
    assert result.seconds == 3.75
    assert result.estimator == "model"
    assert result.scores["accuracy"] == [1.0, 0.5]
    assert result.oof_predictions is not None
    assert list(result.oof_predictions) == ["ant", "bee", "cat", "cat"]


def test_a_fold_outcome_without_predictions_records_its_scores_only() -> None:
    y = np.array(["ant", "bee", "cat", "ant"])
    results = empty_results(TrainingConfig(models=["lda"], folds=2))
    collect(
        FitOutcome("lda", 0, 1.0, scores={"accuracy": 0.5}, test_index=np.array([0, 2])),
        results,
        y,
    )
    assert results["lda"].scores["accuracy"][0] == 0.5
    assert results["lda"].oof_predictions is None


def test_fits_are_named_for_people_with_folds_counted_from_one() -> None:
    assert describe_fit("nn", None) == "nn final fit"
    assert describe_fit("nn", 0) == "nn fold 1"
    assert describe_fit("rf", 4) == "rf fold 5"


# --- train_models' progress --------------------------------------------------------------------


def test_a_run_logs_its_plan_and_each_finished_fit(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The worker count asked for wins over the default (which must not start a pool here).
    monkeypatch.setattr(engine, "default_workers", lambda: 3)
    caplog.set_level(logging.INFO, logger="kubetrain.training")
    X, y = _data()
    train_models(X, y, TrainingConfig(models=["lda"], folds=3), workers=1)
    lines = _progress(caplog)
    assert len(lines) == 5, lines
    assert "4 fits" in lines[0]
    assert "1 models" in lines[0]
    assert "on 1 worker" in lines[0]
    done = lines[1:]
    assert [line.split("]")[0] for line in done] == ["[1/4", "[2/4", "[3/4", "[4/4"]
    named = sorted(line.split("] ")[1].split(" done in ")[0] for line in done)
    assert named == ["lda final fit", "lda fold 1", "lda fold 2", "lda fold 3"]
    for line in done:
        seconds = float(line.rsplit(" done in ", 1)[1].removesuffix("s"))
        assert 0 <= seconds < 60


def test_without_a_worker_count_the_default_is_capped_by_the_fits_to_run(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(engine, "default_workers", lambda: 1)
    caplog.set_level(logging.INFO, logger="kubetrain.training")
    X, y = _data()
    results = train_models(X, y, TrainingConfig(models=["lda"], folds=2))
    assert "on 1 worker" in _progress(caplog)[0]
    assert results["lda"].estimator is not None
