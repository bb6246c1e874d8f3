"""The model catalog: name → estimator factory with documented defaults, and override checks.

`lda` and `nn` are the original procedure's two models under its names (docs/design.md §1), so their
files are `clf_lda.joblib` / `clf_nn.joblib` and metadata keys `train_accuracy_lda` / `_nn`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from kubetrain.errors import UserError

NORMALIZE_CHOICES = ("none", "l2", "standard")
METRIC_CHOICES = ("accuracy", "balanced_accuracy", "f1_macro", "roc_auc_ovr")
# Metrics that need class probabilities from the model.
PROBA_METRICS = frozenset({"roc_auc_ovr"})


class ModelConfigError(UserError, ValueError):
    """A model name, model override, metric or normalization the catalog cannot honour."""


@dataclass(frozen=True)
class ModelSpec:
    """One catalog entry: what it is, how to build it, and its relative training cost."""

    description: str
    factory: Callable[[int], Any]
    # Rough cost relative to `lda` per row; only orders the work (longest first).
    cost: float


def _lda(seed: int) -> Any:
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    return LinearDiscriminantAnalysis()


def _nn(seed: int) -> Any:
    from sklearn.neural_network import MLPClassifier

    return MLPClassifier(
        solver="adam",
        activation="relu",
        alpha=0.0001,
        hidden_layer_sizes=(500,),
        random_state=seed,
        max_iter=1000,
    )


def _logreg(seed: int) -> Any:
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(max_iter=1000, random_state=seed)


def _rf(seed: int) -> Any:
    from sklearn.ensemble import RandomForestClassifier

    return RandomForestClassifier(n_estimators=200, random_state=seed, n_jobs=1)


def _hgb(seed: int) -> Any:
    from sklearn.ensemble import HistGradientBoostingClassifier

    return HistGradientBoostingClassifier(random_state=seed)


def _svc(seed: int) -> Any:
    from sklearn.svm import SVC

    return SVC(kernel="rbf", C=1.0, gamma="scale", random_state=seed)


def _knn(seed: int) -> Any:
    from sklearn.neighbors import KNeighborsClassifier

    return KNeighborsClassifier(n_neighbors=5, n_jobs=1)


CATALOG: dict[str, ModelSpec] = {
    "lda": ModelSpec("LinearDiscriminantAnalysis() with defaults (the original's)", _lda, 1.0),
    "nn": ModelSpec(
        "MLPClassifier(solver='adam', activation='relu', alpha=0.0001, "
        "hidden_layer_sizes=(500,), random_state=seed, max_iter=1000) (the original's)",
        _nn,
        200.0,
    ),
    "logreg": ModelSpec("LogisticRegression(max_iter=1000, random_state=seed)", _logreg, 10.0),
    "rf": ModelSpec(
        "RandomForestClassifier(n_estimators=200, random_state=seed, n_jobs=1)", _rf, 40.0
    ),
    "hgb": ModelSpec("HistGradientBoostingClassifier(random_state=seed)", _hgb, 60.0),
    "svc": ModelSpec(
        "SVC(kernel='rbf', C=1.0, gamma='scale', random_state=seed); set probability=true "
        "for roc_auc_ovr",
        _svc,
        5.0,
    ),
    "knn": ModelSpec("KNeighborsClassifier(n_neighbors=5, n_jobs=1)", _knn, 2.0),
}


def catalog_help() -> str:
    """One line per catalog model: name and defaults."""
    return "\n".join(f"{name}: {spec.description}" for name, spec in CATALOG.items())


def _choices(values: Any) -> str:
    return ", ".join(sorted(values))


def _jsonable_to_param(value: Any) -> Any:
    # JSON has no tuples; sklearn documents tuple-valued params (hidden_layer_sizes) as tuples.
    if isinstance(value, list):
        return tuple(_jsonable_to_param(item) for item in value)
    return value


def build_estimator(
    name: str, seed: int, overrides: Mapping[str, Any] | None = None, normalize: str = "none"
) -> Any:
    """A fresh, unfitted estimator for a catalog name, overrides applied and validated.

    With normalize="standard" the estimator is a Pipeline(StandardScaler, model), so scaling is
    fitted per fold and saved with the model. "l2" is row-wise and stateless: applied to the data
    before cross-validation, exactly like the original, and not part of the saved model.
    """
    if name not in CATALOG:
        raise ModelConfigError(f"unknown model {name!r}; valid models: {_choices(CATALOG)}")
    if normalize not in NORMALIZE_CHOICES:
        raise ModelConfigError(
            f"unknown normalize {normalize!r}; valid choices: {', '.join(NORMALIZE_CHOICES)}"
        )
    estimator = CATALOG[name].factory(seed)
    if overrides:
        valid = sorted(estimator.get_params(deep=False))
        unknown = sorted(set(overrides) - set(valid))
        if unknown:
            raise ModelConfigError(
                f"model_params for {name!r}: unknown parameter(s) {', '.join(unknown)}; "
                f"valid parameters: {', '.join(valid)}"
            )
        estimator.set_params(**{k: _jsonable_to_param(v) for k, v in overrides.items()})
        try:
            # sklearn's own parameter constraints, checked now instead of minutes into a fit.
            estimator._validate_params()
        except (ValueError, TypeError) as error:
            raise ModelConfigError(
                f"model_params for {name!r}: {str(error).rstrip('.')}; "
                "fix the value or remove the override"
            ) from error
    if normalize == "standard":
        from sklearn.pipeline import Pipeline
        from sklearn.preprocessing import StandardScaler

        return Pipeline([("scale", StandardScaler()), ("model", estimator)])
    return estimator


def check_configuration(
    models: list[str],
    model_params: Mapping[str, Mapping[str, Any]],
    metrics: list[str],
    normalize: str,
    seed: int,
) -> None:
    """Fail before any training on an unknown model/metric/normalize or a bad override."""
    if not models:
        raise ModelConfigError(f"no models requested; choose from: {_choices(CATALOG)}")
    duplicates = sorted({m for m in models if models.count(m) > 1})
    if duplicates:
        raise ModelConfigError(f"model(s) listed twice: {', '.join(duplicates)}")
    unknown = [m for m in models if m not in CATALOG]
    if unknown:
        raise ModelConfigError(
            f"unknown model(s) {', '.join(map(repr, unknown))}; valid models: {_choices(CATALOG)}"
        )
    stray = sorted(set(model_params) - set(models))
    if stray:
        raise ModelConfigError(
            f"model_params given for {', '.join(map(repr, stray))}, which is not in models "
            f"{models}; add it to models or remove its overrides"
        )
    if not metrics:
        raise ModelConfigError(f"no metrics requested; choose from: {', '.join(METRIC_CHOICES)}")
    bad_metrics = [m for m in metrics if m not in METRIC_CHOICES]
    if bad_metrics:
        raise ModelConfigError(
            f"unknown metric(s) {', '.join(map(repr, bad_metrics))}; "
            f"valid metrics: {', '.join(METRIC_CHOICES)}"
        )
    for name in models:
        overrides = model_params.get(name) or {}
        if not isinstance(overrides, Mapping):
            raise ModelConfigError(
                f"model_params for {name!r} must be a mapping of parameter → value, "
                f"got {overrides!r}"
            )
        estimator = build_estimator(name, seed, overrides, normalize)
        if PROBA_METRICS & set(metrics) and not hasattr(estimator, "predict_proba"):
            raise ModelConfigError(
                f"metric roc_auc_ovr needs class probabilities but model {name!r} gives none "
                f"with these parameters; for svc set model_params "
                f'{{"{name}": {{"probability": true}}}}, or drop roc_auc_ovr'
            )


def estimator_params(estimator: Any) -> dict[str, Any]:
    """The estimator's own parameters (not nested), made JSON-friendly for the manifest."""
    steps = getattr(estimator, "named_steps", None)
    if steps is not None:  # our standard-scaling Pipeline
        return {"model": estimator_params(steps["model"]), "scale": "StandardScaler()"}
    params = estimator.get_params(deep=False)
    return {key: _to_json(value) for key, value in sorted(params.items())}


def _to_json(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, tuple | list):
        return [_to_json(item) for item in value]
    if isinstance(value, dict):
        return {str(k): _to_json(v) for k, v in value.items()}
    return repr(value)


def fit_and_score(
    key: tuple[str, int | None],
    seed: int,
    overrides: Mapping[str, Any] | None,
    normalize: str,
    X: Any,
    y: Any,
    split: tuple[Any, Any] | None,
    metrics: list[str],
) -> tuple[tuple[str, int | None], Any, float]:
    """One fit of catalog model key[0]: on all rows (split None) → the fitted model; on a CV
    fold's train rows → {metric: score on its test rows}. Also returns the seconds taken.

    Runs in worker processes, so this module imports neither prefect nor anything heavy at
    module level. The fold path does exactly what cross_val_score does per fold.
    """
    import time
    import warnings

    from sklearn.base import clone
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.metrics import get_scorer

    started = time.perf_counter()
    estimator = build_estimator(key[0], seed, overrides, normalize)
    with warnings.catch_warnings():
        # A capped max_iter is the user's choice; the original ran with the warning too.
        warnings.simplefilter("ignore", ConvergenceWarning)
        if split is None:
            estimator.fit(X, y)
            return key, estimator, time.perf_counter() - started
        train_idx, test_idx = split
        fold_model = clone(estimator).fit(X[train_idx], y[train_idx])
        scores = {
            metric: float(get_scorer(metric)(fold_model, X[test_idx], y[test_idx]))
            for metric in metrics
        }
    return key, scores, time.perf_counter() - started
