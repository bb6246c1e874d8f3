"""The `train-fit` flow: one fit of a fan-out `train` run, as its own run (README "Scaling out").

Started by its parent through the `train-fit` deployment, never by hand. It fits exactly what
the local engine fits (`engine.fit_one`) and hands the outcome back through the store.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from flows._flow import kubetrain_flow
from flows.train import Experiment, Folds, Metrics, ModelName, Normalize


@kubetrain_flow(name="train-fit")
def train_fit(
    data: str,
    target: str,
    drop_columns: list[str],
    normalize: Normalize,
    model: ModelName,
    fold: int | None,
    model_params: dict[str, Any],
    folds: Folds,
    shuffle: bool,
    seed: int,
    metrics: Metrics,
    data_sha256: str,
    destination: str,
    experiment: Experiment,
    version: str,
    reuse_fits: bool = True,
) -> float:
    """Fit one model on all rows or on one CV fold and hand the outcome to the parent train run.

    Args:
        data: The parent's CSV (a path, `file:///abs/path.csv`, `https://…` or `sftp://…`);
            it must still have the sha256 given in data_sha256.
        target: Name of the label column.
        drop_columns: Columns that are neither features nor the target.
        normalize: Feature scaling, as in train: `none`, `l2` or `standard`.
        model: The catalog model to fit.
        fold: The CV fold to fit, counted from 0; empty: the final fit on all rows.
        model_params: This model's scikit-learn parameter overrides, as in train.
        folds: Number of stratified cross-validation folds of the parent run.
        shuffle: Whether the parent shuffles rows (with the seed) before splitting them.
        seed: Random seed: the model's random_state and the fold shuffling.
        metrics: Cross-validation metrics to score (accuracy is always scored).
        data_sha256: sha256 of the data as the parent read it; other data fails this run.
        destination: The parent's store: the outcome goes to its staging area.
        experiment: The parent's experiment.
        version: The version the parent run publishes: names its staging area.
        reuse_fits: Keep the finished fit in the store's fit cache for later runs.
    """
    from kubetrain.store import validate_name
    from kubetrain.training.catalog import check_configuration
    from kubetrain.training.engine import TrainingConfig
    from kubetrain.training.fanout import FanOutError
    from kubetrain.training.handoff import as_in_a_pool_worker, fit_key
    from tasks.data import load_data
    from tasks.fanout import cache_fits, check_data, stage_fit
    from tasks.training import fit

    validate_name("experiment", experiment)
    validate_name("version", version)
    if fold is not None and not 0 <= fold < folds:
        raise FanOutError(f"fold {fold} is out of range: use 0 to {folds - 1}, or empty")
    overrides = {str(model): model_params} if model_params else {}
    check_configuration([model], overrides, list(metrics), normalize, seed)
    config = TrainingConfig(
        models=[model],
        model_params=overrides,
        normalize=normalize,
        folds=folds,
        shuffle=shuffle,
        seed=seed,
        metrics=list(metrics),
    )
    dataset = load_data(data, target, list(drop_columns), folds)
    check_data(dataset.sha256, data_sha256, data)
    # One worker: fit_one runs in this process (the pod is sized for one fit), on the data as
    # a pool worker of a local run sees it, so the model files are byte-identical.
    X, y = as_in_a_pool_worker(dataset.X, dataset.y)
    outcome = fit(replace(dataset, X=X, y=y), config, model, fold, 1)
    if reuse_fits:
        key = fit_key(dataset.sha256, target, list(drop_columns), config, model, fold)
        cache_fits(destination, experiment, {(model, fold): key}, [outcome])
    stage_fit(destination, experiment, version, outcome)
    return outcome.seconds
