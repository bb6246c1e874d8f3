"""The `predict` flow: batch inference from a published version (the original's inference.py).

Fetches a version (LATEST by default) with every checksum verified, loads its models, scores a
CSV, writes predictions.csv and reports accuracy when the CSV has the target column.
`python -m flows.predict --help`.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from flows._failures import fail_on_user_error
from kubetrain.data import SAMPLE_DATA as DEFAULT_DATA
from kubetrain.k8s.limits import kubernetes_flow


@dataclass(frozen=True)
class PredictOutcome:
    """What a predict run scored and wrote."""

    version: str
    predictions: Path
    accuracy: dict[str, float] | None


@kubernetes_flow(name="predict")  # timeout before the Job deadline, reschedule cap
@fail_on_user_error
def predict(
    source: str = "./artifacts",
    experiment: str = "default",
    version: str | None = None,
    data: str = DEFAULT_DATA,
    output: str = "./predictions",
) -> PredictOutcome:
    """Score a CSV with every model of a published version; write predictions.csv.

    Args:
        source: The store the version was published to: a folder, file:///abs/path or
            sftp://user@host[:port]/path (the train flow's destination).
        experiment: Experiment the version belongs to.
        version: Version to use: a version name, @alias (e.g. @production, set with
            `kubetrain versions promote`) or LATEST; empty for the one LATEST names.
        data: CSV to score, in the training layout (path, file://, http(s):// or sftp://).
            When it has the target column, accuracy per model is reported too.
        output: Local folder for <version>-predictions.csv.
    """
    from prefect.artifacts import create_table_artifact
    from prefect.logging import get_run_logger

    from kubetrain.data import resolve_sample
    from kubetrain.locations import redact_url
    from tasks.inference import score_data
    from tasks.store import fetch_version

    data = resolve_sample(data)
    with tempfile.TemporaryDirectory(prefix="kubetrain-predict-") as tmp:
        loaded = fetch_version(source, experiment, version or None, Path(tmp))
        scores = score_data(
            loaded, data, Path(tmp), Path(output) / f"{loaded.version}-predictions.csv"
        )
    written = scores.output
    logger = get_run_logger()
    if scores.accuracy is not None:
        create_table_artifact(
            key="predict-accuracy",
            table=[{"model": m, "accuracy": round(a, 6)} for m, a in scores.accuracy.items()],
            description=f"Accuracy of {experiment}/{loaded.version} on {redact_url(data)}",
        )
        logger.info("accuracy on %s: %s", redact_url(data), scores.accuracy)
    logger.info("wrote %s (%d rows)", written, scores.rows)
    return PredictOutcome(version=loaded.version, predictions=written, accuracy=scores.accuracy)


if __name__ == "__main__":  # `python -m flows.predict` is `kubetrain predict`
    import sys

    from kubetrain.cli import main

    main(["predict", *sys.argv[1:]])
