"""The `train` flow: load → validate → fit + cross-validate (concurrently) → serialize → publish
→ report. Also a CLI: `python -m flows.train --help`.
"""

from __future__ import annotations

import functools
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

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
    """
    from prefect.logging import get_run_logger
    from prefect.runtime import flow_run

    from kubetrain.data import describe
    from kubetrain.manifest import build_manifest, new_version
    from kubetrain.report import format_cv_table
    from kubetrain.training.catalog import check_configuration
    from kubetrain.training.engine import TrainingConfig
    from tasks.data import load_data
    from tasks.report import report
    from tasks.store import check_destination, publish, serialize
    from tasks.training import fit_and_cross_validate

    parameters = {
        "data": data,
        "target": target,
        "drop_columns": list(drop_columns),
        "normalize": normalize,
        "models": list(models),
        "model_params": model_params,
        "folds": folds,
        "shuffle": shuffle,
        "seed": seed,
        "metrics": list(metrics),
        "destination": destination,
        "experiment": experiment,
    }
    check_configuration(list(models), model_params, list(metrics), normalize, seed)
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
        location = publish(destination, experiment, version, files, manifest)
    report(location, manifest, results)
    table = format_cv_table(results)
    get_run_logger().info("published %s\n%s", location, table)
    return TrainOutcome(location=location, version=version, manifest=manifest, table=table)


@functools.cache
def _parameter_help() -> dict[str, str]:
    # One source for the UI form and the CLI: the flow docstring's Args section.
    from prefect.utilities.callables import parameter_docstrings

    return parameter_docstrings(train.fn.__doc__)


def _help(name: str, extra: str = "") -> str:
    return " ".join([*_parameter_help()[name].split(), extra]).strip()


def _split(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def cli(
    data: Annotated[str, typer.Option(help=_help("data"))] = DEFAULT_DATA,
    target: Annotated[str, typer.Option(help=_help("target"))] = "# Letter",
    drop_columns: Annotated[
        str, typer.Option(help=_help("drop_columns", " Comma-separated; '' for none."))
    ] = "Line",
    normalize: Annotated[str, typer.Option(help=_help("normalize"))] = "l2",
    models: Annotated[str, typer.Option(help=_help("models", " Comma-separated."))] = "lda,nn",
    model_params: Annotated[str, typer.Option(help=_help("model_params", " JSON."))] = "{}",
    folds: Annotated[int, typer.Option(help=_help("folds"))] = 5,
    shuffle: Annotated[bool, typer.Option(help=_help("shuffle"))] = False,
    seed: Annotated[int, typer.Option(help=_help("seed"))] = 0,
    metrics: Annotated[str, typer.Option(help=_help("metrics", " Comma-separated."))] = "accuracy",
    destination: Annotated[str, typer.Option(help=_help("destination"))] = "./artifacts",
    experiment: Annotated[str, typer.Option(help=_help("experiment"))] = "default",
) -> None:
    """Train catalog models on a CSV, cross-validate them and publish a verified version.

    With no options: the bundled sample, the original's settings, published to ./artifacts.
    Prints the published version's location and the CV table.
    """
    try:
        overrides = json.loads(model_params)
    except json.JSONDecodeError as error:
        raise typer.BadParameter(f"not valid JSON: {error}", param_hint="--model-params") from None
    if not isinstance(overrides, dict):
        raise typer.BadParameter(
            'expected a JSON object {"model": {"param": value}}', param_hint="--model-params"
        )
    try:
        parameters: dict[str, Any] = {
            "data": data,
            "target": target,
            "drop_columns": _split(drop_columns),
            "normalize": normalize,
            "models": _split(models),
            "model_params": overrides,
            "folds": folds,
            "shuffle": shuffle,
            "seed": seed,
            "metrics": _split(metrics),
            "destination": destination,
            "experiment": experiment,
        }
        outcome = train(**parameters)
    except Exception as error:  # the flow run already logged the traceback
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1) from error
    typer.echo(f"published {outcome.location}\n{outcome.table}")


if __name__ == "__main__":
    typer.run(cli)
