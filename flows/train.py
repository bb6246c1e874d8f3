"""The `train` flow: load → fit (each model's final fit and every CV fold its own task run,
concurrently in worker processes) → serialize and plot → publish → report.
Also a CLI: `python -m flows.train --help`.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import AfterValidator, Field

from flows._flow import kubetrain_flow
from kubetrain.data import SAMPLE_DATA as DEFAULT_DATA
from kubetrain.data import resolve_sample

if TYPE_CHECKING:
    from collections.abc import Mapping
    from uuid import UUID

    from prefect.futures import PrefectFuture

    from kubetrain.data import Dataset
    from kubetrain.training.engine import FitOutcome, Job, TrainingConfig

Normalize = Literal["none", "l2", "standard"]
Metric = Literal["accuracy", "balanced_accuracy", "f1_macro", "roc_auc_ovr"]
ModelName = Literal["lda", "nn", "logreg", "rf", "hgb", "svc", "knn"]
# The store's rule for names that become a folder (kubetrain.store.validate_name), so the run
# form refuses a bad experiment name before a run exists.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
MAX_FOLDS = 100


def _no_duplicates(values: list[str]) -> list[str]:
    duplicates = sorted({v for v in values if values.count(v) > 1})
    if duplicates:
        raise ValueError(f"listed twice: {', '.join(duplicates)}; list each once")
    return values


# Each constraint is in the JSON schema too (minimum, minItems, uniqueItems, pattern, enum), so
# the UI's run form and the API refuse a bad value before a run is created.
Folds = Annotated[int, Field(ge=2, le=MAX_FOLDS)]
Models = Annotated[
    list[ModelName],
    Field(min_length=1, json_schema_extra={"uniqueItems": True}),
    AfterValidator(_no_duplicates),
]
Metrics = Annotated[
    list[Metric],
    Field(min_length=1, json_schema_extra={"uniqueItems": True}),
    AfterValidator(_no_duplicates),
]
Experiment = Annotated[str, Field(pattern=NAME_PATTERN)]
FitsWhere = Literal["local", "fan-out"]


def run_name() -> str:
    """The flow run's name in the UI, e.g. `letters: lda+nn, 5 folds`."""
    from prefect.runtime import flow_run

    given = dict(flow_run.parameters)
    return (
        f"{given.get('experiment', 'default')}: {'+'.join(given.get('models') or ['lda', 'nn'])}, "
        f"{given.get('folds', 5)} folds"
    )


def check_fan_out_data(data: str) -> None:
    """Children get `data` as a run parameter, which Prefect stores: no credentials in it."""
    from kubetrain.locations import redact_url
    from kubetrain.training.fanout import FanOutError

    if redact_url(data) != data:
        raise FanOutError(
            "fits='fan-out' passes data to every child run, whose parameters Prefect stores, "
            "and this data URL holds credentials; give HTTP credentials with "
            "KUBETRAIN_HTTP_AUTHORIZATION (SFTP: a key) instead, or use fits='local'"
        )


def fan_out_fits(
    dataset: Dataset,
    config: TrainingConfig,
    jobs: list[Job],
    resources: dict[str, dict[str, str]],
    *,
    data: str,
    drop_columns: list[str],
    destination: str,
    experiment: str,
    version: str,
    reuse_fits: bool,
) -> list[FitOutcome]:
    """Every job as a child run of train-fit; their outcomes, read back from the staging area."""
    from prefect.logging import get_run_logger
    from prefect.runtime import flow_run

    from kubetrain.training.fanout import Child, child_key
    from tasks.fanout import clear_staged, fan_out, gather_fits

    if not jobs:
        return []
    parent, attempt = flow_run.id, int(flow_run.run_count or 1)
    children = [
        Child(
            model=job.model,
            fold=job.fold,
            parameters={
                "data": data,
                "target": dataset.target,
                "drop_columns": drop_columns,
                "normalize": config.normalize,
                "model": job.model,
                "fold": job.fold,
                "model_params": dict(config.model_params.get(job.model) or {}),
                "folds": config.folds,
                "shuffle": config.shuffle,
                "seed": config.seed,
                "metrics": list(config.metrics),
                "data_sha256": dataset.sha256,
                "destination": destination,
                "experiment": experiment,
                "version": version,
                "reuse_fits": reuse_fits,
            },
            job_variables=resources.get(job.model, {}),
            key=child_key(parent, attempt, job.model, job.fold),
        )
        for job in jobs
    ]
    try:
        fan_out(children, parent)
        return gather_fits(destination, experiment, version, [(j.model, j.fold) for j in jobs])
    finally:
        cleared = clear_staged(destination, experiment, version, return_state=True)
        if not cleared.is_completed():
            get_run_logger().warning("staging area not cleared: %s", cleared.message)


def fit_in_this_pod(
    dataset: Dataset,
    config: TrainingConfig,
    jobs: list[Job],
    progress: UUID,
    *,
    reused: int,
    total: int,
    cache: tuple[str, str, Mapping[tuple[str, int | None], str]] | None,
) -> tuple[list[FitOutcome], list[PrefectFuture[FitOutcome]]]:
    """Every job as a fit task run over this pod's worker processes; outcomes as they finish.

    With `cache` (destination, experiment, keys) the finished fits are kept for reuse, also when
    another fit failed: a retried run then reuses them.
    """
    from prefect.futures import as_completed
    from prefect.logging import get_run_logger
    from prefect.task_runners import ThreadPoolTaskRunner

    from kubetrain.training.engine import default_workers, describe_fit
    from tasks.fanout import cache_fits
    from tasks.report import advance_progress
    from tasks.training import fit

    logger = get_run_logger()
    # As many workers as without the cache: one worker fits in-process, and an estimator that
    # never crossed a pickle is written to its model file in other bytes.
    workers = min(default_workers(), total)
    logger.info("training %d fits on %d worker process(es), %d reused", len(jobs), workers, reused)
    fresh: list[FitOutcome] = []
    futures: list[PrefectFuture[FitOutcome]] = []
    # One thread per worker process, jobs longest first: each fit task starts when a worker is
    # free, so a task run's duration in the UI is its fit's.
    runner: ThreadPoolTaskRunner[FitOutcome] = ThreadPoolTaskRunner(max_workers=workers)
    try:
        with runner:
            futures = [
                runner.submit(
                    fit,
                    {
                        "dataset": dataset,
                        "config": config,
                        "model": job.model,
                        "fold": job.fold,
                        "workers": workers,
                    },
                )
                for job in jobs
            ]
            for done, future in enumerate(as_completed(futures), start=reused + 1):
                outcome = future.result()
                advance_progress(progress, done, total)
                what = describe_fit(outcome.model, outcome.fold)
                logger.info("[%d/%d] %s done in %.1fs", done, total, what, outcome.seconds)
                fresh.append(outcome)
    finally:
        if cache is not None and fresh:
            kept = cache_fits(*cache, fresh, return_state=True)
            if not kept.is_completed():
                logger.warning("finished fits not kept for reuse: %s", kept.message)
    return fresh, futures


@dataclass(frozen=True)
class TrainOutcome:
    """What a train run published."""

    location: str
    version: str
    manifest: dict[str, Any]
    table: str


@kubetrain_flow(name="train", flow_run_name=run_name)
def train(
    data: str = DEFAULT_DATA,
    target: str = "# Letter",
    drop_columns: list[str] = ["Line"],  # noqa: B006  (never mutated; a list shows in the UI)
    normalize: Normalize = "l2",
    models: Models = ["lda", "nn"],  # noqa: B006
    model_params: dict[str, dict[str, Any]] = {},  # noqa: B006
    folds: Folds = 5,
    shuffle: bool = False,
    seed: int = 0,
    metrics: Metrics = ["accuracy"],  # noqa: B006
    destination: str = "./artifacts",
    experiment: Experiment = "default",
    promote_to: str | None = None,
    gate_model: ModelName | None = None,
    gate_metric: Metric = "accuracy",
    gate_max_drop: float = 0.0,
    fits: FitsWhere = "local",
    fit_resources: dict[str, dict[str, str]] = {},  # noqa: B006
    reuse_fits: bool = True,
) -> TrainOutcome:
    """Train catalog models on a CSV, cross-validate them and publish a verified version.

    Args:
        data: CSV to train on: a path (relative to where the flow runs), `file:///abs/path.csv`,
            `https://host/path.csv` or `sftp://user@host:port/path.csv`. Default: the bundled
            sample (scikit-learn's digits in the letters layout).
        target: Name of the label column, e.g. `# Letter` in the bundled sample.
        drop_columns: Columns that are neither features nor the target, e.g. a row id such as
            `Line` in the bundled sample.
        normalize: Feature scaling: `none`; `l2` scales each row to unit length before
            cross-validation; `standard` fits a StandardScaler per fold, inside a pipeline
            saved with the model.
        models: Catalog models to train (at least one, each once); each is saved as
            `clf_NAME.joblib`. `lda` (linear discriminant analysis) and `nn` (a neural
            network), `logreg`, `rf` (random forest), `hgb` (gradient boosting), `svc`, `knn`.
        model_params: Per-model scikit-learn parameter overrides as JSON, e.g.
            `{"nn": {"hidden_layer_sizes": [100], "max_iter": 300}}`; checked before any data
            is read.
        folds: Number of stratified cross-validation folds, 2 to 100. Every class needs at
            least this many rows.
        shuffle: Shuffle rows (with the seed) before splitting them into folds; off by default,
            so folds follow the row order.
        seed: Random seed: every model's random_state and the fold shuffling.
        metrics: Cross-validation metrics (at least one, each once): `accuracy`,
            `balanced_accuracy`, `f1_macro`, `roc_auc_ovr`. Accuracy is always computed too,
            for `metadata.json`.
        destination: Where to publish: a folder, `file:///abs/path` or
            `sftp://user@host:port/path`. Each version lands in the folder
            `DESTINATION/EXPERIMENT/VERSION`.
        experiment: Experiment name, the folder that groups versions: 1 to 128 letters,
            digits, `.`, `_` or `-`, starting with a letter or digit.
        promote_to: Alias to move to the new version if it passes the quality gate, e.g.
            `production`; empty: no alias is moved. The version is published either way.
        gate_model: Model whose score the quality gate compares; empty: the first of the models.
        gate_metric: Metric the quality gate compares (its cross-validation mean).
        gate_max_drop: How far the new score may fall below the score of the version the alias
            names now and still pass (0 means not worse).
        fits: Where the fits run: `local` in this run's own pod over its CPUs (the default);
            `fan-out` every model's final fit and every CV fold as its own child run of the
            `train-fit` deployment on this run's work pool (on Kubernetes its own Job). See the
            README section "Scaling out".
        fit_resources: With `fan-out`, CPU and memory of each model's child runs as JSON, e.g.
            `{"nn": {"cpu_limit": "2", "memory_request": "2Gi", "memory_limit": "4Gi"}}`
            (keys `cpu_request`, `cpu_limit`, `memory_request`, `memory_limit`; Kubernetes
            quantities). A model without an entry gets the deployment's size for one fit.
        reuse_fits: Reuse fits an earlier run already finished with the same data (sha256),
            model, fold, parameters and library versions, from the fit cache kept next to the
            versions in the destination; off: fit everything again and keep nothing.
    """
    from prefect.logging import get_run_logger
    from prefect.runtime import flow_run

    from kubetrain.data import describe
    from kubetrain.manifest import build_manifest, new_version
    from kubetrain.registry.gate import check_gate
    from kubetrain.registry.signing import sign_if_configured, signing_key
    from kubetrain.report import format_cv_table
    from kubetrain.store import validate_name
    from kubetrain.training.catalog import check_configuration
    from kubetrain.training.engine import (
        TrainingConfig,
        check_fit_constraints,
        collect,
        describe_fit,
        empty_results,
        plan_jobs,
    )
    from kubetrain.training.fanout import check_fit_resources
    from kubetrain.training.handoff import fit_key
    from tasks.data import load_data
    from tasks.fanout import reuse_cached_fits
    from tasks.report import advance_progress, plot, report, start_progress
    from tasks.run_record import redact_run_parameters
    from tasks.store import check_destination, publish, serialize
    from tasks.versions import quality_gate

    parameters = redact_run_parameters(dict(flow_run.parameters))
    # Everything a user can get wrong in the configuration fails here, before the destination
    # or the data is touched.
    validate_name("experiment", experiment)
    check_configuration(list(models), model_params, list(metrics), normalize, seed)
    config = TrainingConfig(
        models=list(models),
        model_params=model_params,
        normalize=normalize,
        folds=folds,
        shuffle=shuffle,
        seed=seed,
        metrics=list(metrics),
    )
    check_fit_constraints(config)
    resources = check_fit_resources(fit_resources, list(models))
    if fits == "fan-out":
        check_fan_out_data(data)
    gate = check_gate(promote_to, gate_model, gate_metric, gate_max_drop, models, metrics)
    signer = signing_key()  # a bad key fails now, not after training
    version = new_version()
    check_destination(destination, experiment, version)
    dataset = load_data(resolve_sample(data), target, list(drop_columns), folds)

    logger = get_run_logger()
    jobs = plan_jobs(config, len(dataset.y))
    results = empty_results(config)
    keys = {
        (job.model, job.fold): fit_key(
            dataset.sha256, target, list(drop_columns), config, job.model, job.fold
        )
        for job in jobs
        if reuse_fits
    }
    reused = reuse_cached_fits(destination, experiment, keys) if reuse_fits else []
    for outcome in reused:
        collect(outcome, results, dataset.y)
    found = {(outcome.model, outcome.fold) for outcome in reused}
    total = len(jobs)
    jobs = [job for job in jobs if (job.model, job.fold) not in found]
    progress = start_progress(experiment, total, [describe_fit(o.model, o.fold) for o in reused])
    futures: list[PrefectFuture[FitOutcome]] = []
    if fits == "fan-out":
        fresh = fan_out_fits(
            dataset,
            config,
            jobs,
            resources,
            data=resolve_sample(data),
            drop_columns=list(drop_columns),
            destination=destination,
            experiment=experiment,
            version=version,
            reuse_fits=reuse_fits,
        )
        for done, _ in enumerate(fresh, start=len(reused) + 1):
            advance_progress(progress, done, total)
    else:
        fresh, futures = fit_in_this_pod(
            dataset, config, jobs, progress, reused=len(reused), total=total,
            cache=(destination, experiment, keys) if reuse_fits else None,
        )  # fmt: skip
    for outcome in fresh:
        collect(outcome, results, dataset.y)

    with tempfile.TemporaryDirectory(prefix="kubetrain-version-") as tmp:
        files = serialize(results, Path(tmp), wait_for=futures)
        plots = plot(results, dataset, Path(tmp), wait_for=futures)
        files = {**files, **plots}
        manifest = build_manifest(
            version=version,
            flow_run_id=flow_run.id,
            data=describe(dataset),
            parameters=parameters,
            results=results,
            files=files,
        )
        manifest = sign_if_configured(manifest, signer)
        location = publish(
            destination, experiment, version, files, manifest, wait_for=[files, plots]
        )
        if gate is not None:
            quality_gate(destination, experiment, version, gate)
        report(experiment, location, manifest, results, plots, wait_for=[location])
    table = format_cv_table(results)
    logger.info("published %s\n%s", location, table)
    return TrainOutcome(location=location, version=version, manifest=manifest, table=table)


if __name__ == "__main__":  # `python -m flows.train` is `kubetrain train`
    import sys

    from kubetrain.cli import main

    main(["train", *sys.argv[1:]])
