"""The `predict` flow: batch inference from a published version.

Fetches a version (LATEST by default) with every checksum verified, loads its models, scores a
CSV, writes the predictions CSV (to a folder, or uploaded to an SFTP store) and reports a
preview, where it went and accuracy when the CSV has the target column.
`python -m flows.predict --help`.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

from pydantic import Field

from flows._flow import kubetrain_flow
from kubetrain.data import SAMPLE_DATA as DEFAULT_DATA

# The store's rule for experiment and version names (kubetrain.store.validate_name).
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
Experiment = Annotated[str, Field(pattern=NAME_PATTERN)]
# A version name, LATEST, or @alias (kubetrain.registry).
Version = Annotated[str | None, Field(pattern=r"^@?[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")]


def run_name() -> str:
    """The flow run's name in the UI, e.g. `letters: predict LATEST`."""
    from prefect.runtime import flow_run

    given = dict(flow_run.parameters)
    return f"{given.get('experiment', 'default')}: predict {given.get('version') or 'LATEST'}"


@dataclass(frozen=True)
class PredictOutcome:
    """What a predict run scored and wrote."""

    version: str
    predictions: Path | str  # a local file, or the sftp:// URL it was uploaded to
    accuracy: dict[str, float] | None
    training_data: bool = False


def _run_tag() -> str:
    """The flow run's short id (8 hex digits) when there is one, else random: names the file."""
    from prefect.runtime import flow_run

    run_id = str(flow_run.id or "").replace("-", "")
    return run_id[:8] if run_id else os.urandom(4).hex()


@kubetrain_flow(name="predict", flow_run_name=run_name)
def predict(
    source: str = "./artifacts",
    experiment: Experiment = "default",
    version: Version = None,
    data: str = DEFAULT_DATA,
    output: str = "./predictions",
) -> PredictOutcome:
    """Score a CSV with every model of a published version; write the predictions CSV.

    Args:
        source: The store the version was published to (the train flow's destination): a
            folder, `file:///abs/path` or `sftp://user@host:port/path`.
        experiment: Experiment the version belongs to.
        version: Version to use: a version name such as `20260102T030405Z-0123abcd`, an alias
            such as `@production` (set with `kubetrain versions promote`), or `LATEST`; leave
            empty for the newest (the one the experiment's LATEST file names).
        data: CSV to score, in the training layout: a path, `file://`, `https://` or
            `sftp://` URL. When it has the target column, accuracy per model is reported too;
            the run says so when it is the very data the version was trained on.
        output: Where the predictions CSV goes. A folder (or `file:///abs/path`) on the
            machine that runs the flow gets `VERSION-predictions.csv`; an
            `sftp://user@host:port/path` store gets
            `path/EXPERIMENT/VERSION-UTCTIME-RUN.csv`, uploaded atomically and verified (use a
            folder of its own, not the model store). On Kubernetes use an SFTP store: the pod's
            files are gone when it ends.
    """
    from prefect.artifacts import create_markdown_artifact, create_table_artifact
    from prefect.logging import get_run_logger

    from kubetrain.data import resolve_sample
    from kubetrain.inference import InferenceError, predictions_file_name
    from kubetrain.locations import LocalPath, parse_location, redact_url
    from kubetrain.report import artifact_key, predict_markdown, preview_rows
    from tasks.data import fetch_data
    from tasks.inference import check_predictions_store, score_data, upload_predictions
    from tasks.store import fetch_version

    data = resolve_sample(data)
    target = parse_location(output, what="output", allow_http=False, error=InferenceError)
    folder = target.path if isinstance(target, LocalPath) else None
    if folder is None:  # a store: refuse a bad one before fetching and scoring anything
        check_predictions_store(output, source, experiment)
    with tempfile.TemporaryDirectory(prefix="kubetrain-predict-") as tmp:
        loaded = fetch_version(source, experiment, version or None, Path(tmp))
        local = fetch_data(data, Path(tmp))
        scores = score_data(
            loaded,
            local,
            data,
            (folder or Path(tmp) / "out") / f"{loaded.version}-predictions.csv",
        )
        written: Path | str
        if folder is None:
            name = predictions_file_name(loaded.version, _run_tag(), datetime.now(UTC))
            written = upload_predictions(scores.output, output, experiment, name)
        else:
            written = scores.output.resolve()
    # The scan before predicting fingerprints the file: no second read to compare it.
    training_data = scores.data_sha256 == loaded.manifest.get("data", {}).get("sha256")
    shown = redact_url(data)
    create_table_artifact(
        key=artifact_key(experiment, "predictions-preview"),
        table=preview_rows(scores.preview),
        description=f"First rows of the predictions of `{experiment}` version `{loaded.version}`",
    )
    create_markdown_artifact(
        key=artifact_key(experiment, "predictions"),
        markdown=predict_markdown(
            experiment=experiment,
            version=loaded.version,
            data=shown,
            data_sha256=scores.data_sha256,
            manifest=loaded.manifest,
            written=str(written),
            on_store=folder is None,
            rows=scores.rows,
            accuracy=scores.accuracy,
        ),
        description=f"What `{experiment}` version `{loaded.version}` scored and where it went",
    )
    logger = get_run_logger()
    if training_data:
        logger.warning(
            "%s is the data version %s was trained on: its accuracy measures fit, not "
            "performance on new data",
            shown,
            loaded.version,
        )
    if scores.accuracy is not None:
        logger.info("accuracy on %s: %s", shown, scores.accuracy)
    logger.info("wrote %s (%d rows)", written, scores.rows)
    return PredictOutcome(
        version=loaded.version,
        predictions=written,
        accuracy=scores.accuracy,
        training_data=training_data,
    )


if __name__ == "__main__":  # `python -m flows.predict` is `kubetrain predict`
    import sys

    from kubetrain.cli import main

    main(["predict", *sys.argv[1:]])
