"""training/engine.py: parallel fits and folds are bit-identical to sequential cross_val_score."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.preprocessing import normalize

from kubetrain.training.catalog import build_estimator
from kubetrain.training.engine import TrainingConfig, plan_jobs, train_models
from tests.train_helpers import original_layout_frame

SMALL_NN = {"hidden_layer_sizes": [16], "max_iter": 60}


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    frame = original_layout_frame(classes=6, per_class=12, features=5)
    return frame.drop(columns=["Line", "# Letter"]).to_numpy(), frame["# Letter"].to_numpy()


def _reference(name: str, X, y, config: TrainingConfig, scoring: str = "accuracy") -> list[float]:
    estimator = build_estimator(name, config.seed, config.model_params.get(name), config.normalize)
    cv = (
        StratifiedKFold(config.folds, shuffle=True, random_state=config.seed)
        if config.shuffle
        else config.folds
    )
    Xp = normalize(X, norm="l2") if config.normalize == "l2" else X
    return list(cross_val_score(estimator, Xp, y, cv=cv, scoring=scoring))


def test_parallel_scores_equal_sequential_cross_val_score(data) -> None:
    X, y = data
    config = TrainingConfig(
        models=["lda", "nn", "knn", "logreg"],
        model_params={"nn": SMALL_NN},
        metrics=["accuracy", "f1_macro", "balanced_accuracy", "roc_auc_ovr"],
    )
    results = train_models(X, y, config, workers=2)
    for name in config.models:
        for metric in config.scored_metrics:
            assert results[name].scores[metric] == _reference(name, X, y, config, metric), (
                name,
                metric,
            )
    # The final fit equals a sequential fit on all rows: same predictions.
    sequential = build_estimator("nn", 0, SMALL_NN).fit(normalize(X), y)
    np.testing.assert_array_equal(
        results["nn"].estimator.predict_proba(normalize(X)), sequential.predict_proba(normalize(X))
    )


def test_one_worker_and_two_workers_agree(data) -> None:
    X, y = data
    config = TrainingConfig(
        models=["nn", "rf"],
        model_params={"nn": SMALL_NN, "rf": {"n_estimators": 10}},
        shuffle=True,
        seed=3,
        folds=3,
    )
    one = train_models(X, y, config, workers=1)
    two = train_models(X, y, config, workers=2)
    for name in config.models:
        assert one[name].scores == two[name].scores
        assert one[name].scores["accuracy"] == _reference(name, X, y, config)


def test_standard_normalize_is_fitted_per_fold(data) -> None:
    X, y = data
    config = TrainingConfig(models=["svc"], normalize="standard", folds=4)
    results = train_models(X * 100.0, y, config, workers=2)
    assert results["svc"].scores["accuracy"] == _reference("svc", X * 100.0, y, config)
    assert results["svc"].estimator.named_steps["scale"].mean_.shape == (X.shape[1],)


def test_longest_jobs_are_planned_first() -> None:
    jobs = plan_jobs(TrainingConfig(models=["lda", "nn", "knn"], folds=5), rows=100)
    assert len(jobs) == 3 * 6
    costs = [job.cost for job in jobs]
    assert costs == sorted(costs, reverse=True)
    assert (jobs[0].model, jobs[0].fold) == ("nn", None)  # the all-rows fit is the longest
    assert {job.model for job in jobs[:6]} == {"nn"}


def test_accuracy_is_always_scored() -> None:
    assert TrainingConfig(models=["lda"], metrics=["f1_macro"]).scored_metrics == [
        "accuracy",
        "f1_macro",
    ]


def test_out_of_fold_predictions_equal_cross_val_predict(data) -> None:
    from sklearn.model_selection import cross_val_predict

    X, y = data
    config = TrainingConfig(models=["lda", "knn"], folds=4, shuffle=True, seed=2)
    results = train_models(X, y, config, workers=2)
    cv = StratifiedKFold(4, shuffle=True, random_state=2)
    for name in config.models:
        expected = cross_val_predict(build_estimator(name, 2), normalize(X), y, cv=cv)
        np.testing.assert_array_equal(results[name].oof_predictions, expected)


def test_one_fit_is_a_self_contained_unit(data) -> None:
    """fit_one on raw data gives a fold's scores and the final model, as the whole run does."""
    from kubetrain.training.engine import fit_one

    X, y = data
    config = TrainingConfig(models=["logreg"], folds=3, metrics=["f1_macro"])
    fold = fit_one(X, y, config, "logreg", 2)
    final = fit_one(X, y, config, "logreg", None)
    assert (fold.model, fold.fold, final.fold) == ("logreg", 2, None)
    assert fold.scores["accuracy"] == _reference("logreg", X, y, config)[2]
    assert fold.scores["f1_macro"] == _reference("logreg", X, y, config, "f1_macro")[2]
    whole = train_models(X, y, config, workers=1)["logreg"]
    np.testing.assert_array_equal(final.estimator.coef_, whole.estimator.coef_)
