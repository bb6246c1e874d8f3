"""The `train` flow: load → validate → fit + cross-validate (concurrently) → serialize → publish
→ report. Also a CLI: `python -m flows.train --help`.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from flows._failures import fail_on_user_error
from kubetrain.data import SAMPLE_DATA as DEFAULT_DATA
from kubetrain.data import resolve_sample
from kubetrain.k8s.limits import kubernetes_flow

Normalize = Literal["none", "l2", "standard"]
Metric = Literal["accuracy", "balanced_accuracy", "f1_macro", "roc_auc_ovr"]
ModelName = Literal["lda", "nn", "logreg", "rf", "hgb", "svc", "knn"]


@dataclass(frozen=True)
class TrainOutcome:
    """What a train run published."""

    location: str
    version: str
    manifest: dict[str, Any]
    table: str


@kubernetes_flow(name="train")  # timeout before the Job deadline, reschedule cap
@fail_on_user_error
def train(
    data: str = DEFAULT_DATA,
    target: str = "# Letter",
    drop_columns: list[str] = ["Line"],  # noqa: B006  (never mutated; a list shows in the UI)
    normalize: Normalize = "l2",
    models: list[ModelName] = ["lda", "nn"],  # noqa: B006
    model_params: dict[str, dict[str, Any]] = {},  # noqa: B006
    folds: int = 5,
    shuffle: bool = False,
    seed: int = 0,
    metrics: list[Metric] = ["accuracy"],  # noqa: B006
    destination: str = "./artifacts",
    experiment: str = "default",
    promote_to: str | None = None,
    gate_model: ModelName | None = None,
    gate_metric: Metric = "accuracy",
    gate_max_drop: float = 0.0,
) -> TrainOutcome:
    """Train catalog models on a CSV, cross-validate them and publish a verified version.

    Args:
        data: CSV to train on: a path, file:///abs/path.csv, http(s)://… or
            sftp://user@host[:port]/path.csv. Default: the bundled sample (scikit-learn's
            digits in the original's letters layout).
        target: Name of the label column (the original's is '# Letter').
        drop_columns: Columns that are neither features nor the target, e.g. a row id (the
            original drops 'Line').
        normalize: Feature scaling. 'none'; 'l2' = each row scaled to unit L2 norm before
            cross-validation (the original's); 'standard' = a StandardScaler fitted per fold
            inside a Pipeline and saved with the model.
        models: Catalog models to train, each saved as clf_<name>.joblib: lda and nn (the
            original's two), logreg, rf, hgb, svc, knn.
        model_params: Per-model scikit-learn parameter overrides, e.g.
            {"nn": {"hidden_layer_sizes": [100], "max_iter": 300}}; checked before training.
        folds: Number of stratified cross-validation folds (the original: 5).
        shuffle: Shuffle rows (with seed) before splitting into folds; the original does not.
        seed: Random seed: every model's random_state and the fold shuffling.
        metrics: CV metrics: accuracy, balanced_accuracy, f1_macro, roc_auc_ovr. Accuracy is
            always computed too: metadata.json needs it.
        destination: Where to publish: a folder, file:///abs/path or
            sftp://user@host[:port]/path. The version lands in
            <destination>/<experiment>/<version>/.
        experiment: Experiment name, the folder that groups versions (letters, digits, '.',
            '_', '-').
        promote_to: Alias to move to the new version if it passes the quality gate, e.g.
            production; empty: no alias is moved. The version is published either way.
        gate_model: Model whose score the quality gate compares; empty: the first of models.
        gate_metric: Metric the quality gate compares (cross-validation mean).
        gate_max_drop: How far the new score may fall below the score of the version the
            alias names now and still pass (0 = not worse).
    """
    from prefect.logging import get_run_logger
    from prefect.runtime import flow_run

    from kubetrain.data import describe
    from kubetrain.manifest import build_manifest, new_version
    from kubetrain.registry.gate import check_gate
    from kubetrain.registry.signing import sign_if_configured, signing_key
    from kubetrain.report import format_cv_table
    from kubetrain.training.catalog import check_configuration
    from kubetrain.training.engine import TrainingConfig
    from tasks.data import load_data
    from tasks.report import report
    from tasks.run_record import redact_run_parameters
    from tasks.store import check_destination, publish, serialize
    from tasks.training import fit_and_cross_validate
    from tasks.versions import quality_gate

    parameters = redact_run_parameters(dict(flow_run.parameters))
    check_configuration(list(models), model_params, list(metrics), normalize, seed)
    gate = check_gate(promote_to, gate_model, gate_metric, gate_max_drop, models, metrics)
    signer = signing_key()  # a bad key fails now, not after training
    version = new_version()
    check_destination(destination, experiment, version)
    dataset = load_data(resolve_sample(data), target, list(drop_columns), folds)
    config = TrainingConfig(
        models=list(models),
        model_params=model_params,
        normalize=normalize,
        folds=folds,
        shuffle=shuffle,
        seed=seed,
        metrics=list(metrics),
    )
    results = fit_and_cross_validate(dataset.X, dataset.y, config)
    with tempfile.TemporaryDirectory(prefix="kubetrain-version-") as tmp:
        files = serialize(results, Path(tmp))
        manifest = build_manifest(
            version=version,
            flow_run_id=flow_run.id,
            data=describe(dataset),
            parameters=parameters,
            results=results,
            files=files,
        )
        manifest = sign_if_configured(manifest, signer)
        location = publish(destination, experiment, version, files, manifest)
    if gate is not None:
        quality_gate(destination, experiment, version, gate)
    report(location, manifest, results)
    table = format_cv_table(results)
    get_run_logger().info("published %s\n%s", location, table)
    return TrainOutcome(location=location, version=version, manifest=manifest, table=table)


if __name__ == "__main__":  # `python -m flows.train` is `kubetrain train`
    import sys

    from kubetrain.cli import main

    main(["train", *sys.argv[1:]])
