"""training/catalog.py: the catalog's defaults and the checks on overrides, metrics, normalize."""

from __future__ import annotations

import json
import typing

import pytest
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from kubetrain.training.catalog import (
    CATALOG,
    METRIC_CHOICES,
    NORMALIZE_CHOICES,
    ModelConfigError,
    build_estimator,
    check_configuration,
    estimator_params,
)


def test_lda_and_nn_are_the_originals() -> None:
    lda = build_estimator("lda", seed=0)
    assert type(lda) is LinearDiscriminantAnalysis
    assert lda.get_params() == LinearDiscriminantAnalysis().get_params()
    nn = build_estimator("nn", seed=0)
    original = MLPClassifier(
        solver="adam",
        activation="relu",
        alpha=0.0001,
        hidden_layer_sizes=(500,),
        random_state=0,
        max_iter=1000,
    )
    assert nn.get_params() == original.get_params()
    assert build_estimator("nn", seed=7).random_state == 7


def test_catalog_has_the_documented_models_and_flow_choices_match() -> None:
    from flows.train import Metric, ModelName, Normalize

    assert {"lda", "nn", "logreg", "rf", "hgb", "svc", "knn"} <= set(CATALOG)
    assert set(typing.get_args(ModelName)) == set(CATALOG)
    assert set(typing.get_args(Metric)) == set(METRIC_CHOICES)
    assert set(typing.get_args(Normalize)) == set(NORMALIZE_CHOICES)
    for name in CATALOG:
        estimator = build_estimator(name, seed=3)
        if "random_state" in estimator.get_params():
            assert estimator.random_state == 3, name
        json.dumps(estimator_params(estimator))


def test_unknown_model_lists_valid_choices() -> None:
    with pytest.raises(
        ModelConfigError, match=r"unknown model\(s\) 'boost'; valid models: hgb, knn, lda"
    ):
        check_configuration(["lda", "boost"], {}, ["accuracy"], "l2", 0)


def test_unknown_parameter_lists_valid_parameters() -> None:
    with pytest.raises(
        ModelConfigError,
        match=r"model_params for 'nn': unknown parameter\(s\) hidden_units; "
        r"valid parameters: activation, alpha",
    ):
        check_configuration(["nn"], {"nn": {"hidden_units": 3}}, ["accuracy"], "l2", 0)


def test_bad_parameter_value_is_caught_before_training() -> None:
    with pytest.raises(
        ModelConfigError, match=r"'max_iter' parameter of MLPClassifier must be an int"
    ):
        check_configuration(["nn"], {"nn": {"max_iter": -1}}, ["accuracy"], "l2", 0)
    with pytest.raises(ModelConfigError, match=r"'solver' parameter .* Got 'sgdd'"):
        check_configuration(["nn"], {"nn": {"solver": "sgdd"}}, ["accuracy"], "l2", 0)


def test_overrides_for_a_model_not_requested_are_refused() -> None:
    with pytest.raises(
        ModelConfigError, match=r"model_params given for 'rf', which is not in models"
    ):
        check_configuration(["lda"], {"rf": {"n_estimators": 3}}, ["accuracy"], "l2", 0)


def test_json_lists_become_tuples() -> None:
    nn = build_estimator("nn", 0, {"hidden_layer_sizes": [20, 10], "max_iter": 5})
    assert nn.hidden_layer_sizes == (20, 10)
    assert nn.max_iter == 5


def test_metrics_and_normalize_are_checked() -> None:
    with pytest.raises(
        ModelConfigError, match=r"unknown metric\(s\) 'auc'; valid metrics: accuracy"
    ):
        check_configuration(["lda"], {}, ["auc"], "l2", 0)
    with pytest.raises(
        ModelConfigError, match="unknown normalize 'minmax'; valid choices: none, l2"
    ):
        check_configuration(["lda"], {}, ["accuracy"], "minmax", 0)
    with pytest.raises(ModelConfigError, match="listed twice: lda"):
        check_configuration(["lda", "lda"], {}, ["accuracy"], "l2", 0)


def test_roc_auc_needs_probabilities() -> None:
    with pytest.raises(
        ModelConfigError, match=r'roc_auc_ovr needs class probabilities.*"probability": true'
    ):
        check_configuration(["svc"], {}, ["roc_auc_ovr"], "none", 0)
    check_configuration(["svc"], {"svc": {"probability": True}}, ["roc_auc_ovr"], "none", 0)


def test_standard_normalize_wraps_model_in_pipeline() -> None:
    pipe = build_estimator("lda", 0, None, "standard")
    assert isinstance(pipe, Pipeline)
    assert isinstance(pipe.named_steps["scale"], StandardScaler)
    assert isinstance(pipe.named_steps["model"], LinearDiscriminantAnalysis)
    params = estimator_params(pipe)
    assert params["scale"] == "StandardScaler()"
    assert params["model"]["solver"] == "svd"
