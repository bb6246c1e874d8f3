"""training/engine.py behaviour the unit tests left to the Prefect-server train-flow tests:
the fit-time constraints on model_params (refused before any fit starts), and FitPool.fit."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from kubetrain.training.catalog import ModelConfigError, build_estimator
from kubetrain.training.engine import FitPool, TrainingConfig, check_fit_constraints, fit_one

NN_RULE = r"^model_params for 'nn': hidden_layer_sizes must be a list of positive whole numbers"
REFUSED = [
    ("nn", {"hidden_layer_sizes": []}, NN_RULE + r" \(neurons per layer\), got \[\]; "),
    ("nn", {"hidden_layer_sizes": [8, 0]}, r"got \[8, 0\]; use e\.g\. \[100\] or \[256, 64\]$"),
    ("nn", {"hidden_layer_sizes": [True]}, NN_RULE + r".*got \[True\]"),
    ("nn", {"hidden_layer_sizes": [2.5]}, NN_RULE + r".*got \[2\.5\]"),
    ("nn", {"hidden_layer_sizes": [0] * 12}, r"got \[0(, 0){9}\]; use"),  # ten shown, not twelve
    (
        "rf",
        {"bootstrap": False, "oob_score": True},
        r"^model_params for 'rf': oob_score needs bootstrap=true; set bootstrap to true or drop "
        r"oob_score$",
    ),
    (
        "rf",
        {"bootstrap": False, "max_samples": 0.5},
        r"^model_params for 'rf': max_samples needs bootstrap=true; set bootstrap to true or drop "
        r"max_samples$",
    ),
    (
        "lda",
        {"solver": "svd", "shrinkage": 0.5},
        r"^model_params for 'lda': shrinkage does not work with solver 'svd'; set solver to "
        r"'lsqr' or 'eigen'$",
    ),
]

ACCEPTED = [
    ("nn", {"hidden_layer_sizes": [4, 3]}),
    ("nn", {"hidden_layer_sizes": [1]}),  # one neuron is a valid layer
    ("nn", {"hidden_layer_sizes": 4}),
    ("rf", {"bootstrap": True, "oob_score": True, "n_estimators": 5}),
    ("rf", {"bootstrap": True, "max_samples": 0.5, "n_estimators": 5}),
    ("rf", {"bootstrap": False, "n_estimators": 5}),
    ("lda", {"solver": "lsqr", "shrinkage": 0.5}),
    ("lda", {"solver": "svd"}),
]


def _data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 3))
    y = np.repeat(["a", "b"], 20)
    X[y == "b"] += 2.0
    return X, y


@pytest.mark.parametrize(("model", "params", "message"), REFUSED)
def test_fit_time_constraints_are_refused_before_any_fit(
    model: str, params: dict[str, Any], message: str
) -> None:
    config = TrainingConfig(models=[model], model_params={model: params}, normalize="none")
    with pytest.raises(ModelConfigError, match=message):
        check_fit_constraints(config)


@pytest.mark.parametrize(("model", "params"), ACCEPTED)
def test_overrides_that_fit_pass_the_check(model: str, params: dict[str, Any]) -> None:
    config = TrainingConfig(models=[model], model_params={model: params}, normalize="none")
    check_fit_constraints(config)


def test_only_models_with_overrides_are_checked() -> None:
    bad_but_unused: dict[str, dict[str, Any]] = {"nn": {"hidden_layer_sizes": []}}
    check_fit_constraints(TrainingConfig(models=["lda"], model_params=bad_but_unused))
    with pytest.raises(ModelConfigError, match="'nn'"):
        check_fit_constraints(TrainingConfig(models=["lda", "nn"], model_params=bad_but_unused))


def test_one_worker_pool_fits_in_process_like_fit_one() -> None:
    X, y = _data()
    config = TrainingConfig(models=["lda"], folds=4, normalize="none")
    pool = FitPool(1)
    assert pool.workers == 1
    outcome = pool.fit(X, y, config, "lda", 2)
    direct = fit_one(X, y, config, "lda", 2)
    assert (outcome.model, outcome.fold) == ("lda", 2)
    assert outcome.scores == direct.scores
    np.testing.assert_array_equal(outcome.test_index, direct.test_index)
    final = pool.fit(X, y, config, "lda", None)
    np.testing.assert_array_equal(final.estimator.predict(X), direct_predict(X, y))
    with pytest.raises(ModelConfigError):  # a failing fit raises from fit(), not a lost future
        pool.fit(X, y, config, "no-such-model", None)


def direct_predict(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.asarray(build_estimator("lda", 0).fit(X, y).predict(X))
