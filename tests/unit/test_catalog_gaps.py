"""Every catalog model's defaults, pinned literally (issue #17: only lda and nn were pinned).

The expected parameters are written out here, not read from the catalog: a changed default in
kubetrain/training/catalog.py must fail this test and be reviewed (it changes every model).
Parameters not listed must be scikit-learn's own defaults.
"""

from __future__ import annotations

from typing import Any

import pytest
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from kubetrain.training.catalog import CATALOG, build_estimator, estimator_params

SEED = 11

EXPECTED: dict[str, tuple[type[Any], dict[str, Any]]] = {
    "lda": (LinearDiscriminantAnalysis, {}),
    "nn": (
        MLPClassifier,
        {
            "solver": "adam",
            "activation": "relu",
            "alpha": 0.0001,
            "hidden_layer_sizes": (500,),
            "random_state": SEED,
            "max_iter": 1000,
        },
    ),
    "logreg": (LogisticRegression, {"max_iter": 1000, "random_state": SEED}),
    "rf": (RandomForestClassifier, {"n_estimators": 200, "random_state": SEED, "n_jobs": 1}),
    "hgb": (HistGradientBoostingClassifier, {"random_state": SEED}),
    "svc": (SVC, {"kernel": "rbf", "C": 1.0, "gamma": "scale", "random_state": SEED}),
    "knn": (KNeighborsClassifier, {"n_neighbors": 5, "n_jobs": 1}),
}


def test_every_catalog_model_is_pinned_here() -> None:
    assert set(EXPECTED) == set(CATALOG)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_catalog_defaults_are_the_documented_ones(name: str) -> None:
    cls, params = EXPECTED[name]
    estimator = build_estimator(name, seed=SEED)
    assert type(estimator) is cls
    assert estimator.get_params() == cls(**params).get_params()
    for key, value in params.items():  # also written out in the model's help line
        shown = "seed" if key == "random_state" else repr(value)
        assert f"{key}={shown}" in CATALOG[name].description, key


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_overrides_change_only_the_named_parameter(name: str) -> None:
    cls, params = EXPECTED[name]
    key = {"lda": "tol", "nn": "alpha", "logreg": "C", "rf": "max_depth", "knn": "leaf_size"}.get(
        name, "verbose"
    )
    estimator = build_estimator(name, seed=SEED, overrides={key: 3})
    assert estimator.get_params() == cls(**{**params, key: 3}).get_params()


def test_standard_normalize_puts_a_fresh_scaler_before_the_model() -> None:
    pipeline = build_estimator("knn", seed=SEED, normalize="standard")
    assert type(pipeline) is Pipeline
    assert [name for name, _ in pipeline.steps] == ["scale", "model"]
    assert pipeline.named_steps["scale"].get_params() == StandardScaler().get_params()
    assert pipeline.named_steps["model"].get_params() == KNeighborsClassifier(n_jobs=1).get_params()
    assert estimator_params(pipeline) == {
        "model": estimator_params(KNeighborsClassifier(n_jobs=1)),
        "scale": "StandardScaler()",
    }


def test_manifest_params_are_json_values() -> None:
    params = estimator_params(build_estimator("nn", seed=SEED))
    assert params["hidden_layer_sizes"] == [500]
    assert params["random_state"] == SEED
    assert params["alpha"] == 0.0001
    assert list(params) == sorted(params)
