"""Serialize trained models, checksum them and build the manifest (docs/design.md §3)."""

from __future__ import annotations

import csv
import json
import platform
import secrets
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kubetrain.settings import get_settings
from kubetrain.store import MANIFEST, sha256_file
from kubetrain.training.engine import ModelResult

METADATA = "metadata.json"
CV_RESULTS = "cv_results.csv"
CV_COLUMNS = ("model", "fold", "metric", "score")


def model_file(model: str) -> str:
    """The original's file naming: clf_<model>.joblib."""
    return f"clf_{model}.joblib"


def new_version(now: datetime | None = None) -> str:
    """A unique, time-sortable version name: YYYYMMDDTHHMMSSZ-<8 hex> (UTC)."""
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    return f"{moment:%Y%m%dT%H%M%SZ}-{secrets.token_hex(4)}"


def write_models(results: Mapping[str, ModelResult], directory: Path) -> dict[str, Path]:
    """joblib-dump each fitted model as clf_<model>.joblib (uncompressed, as the original)."""
    import joblib

    files = {}
    for name, result in results.items():
        path = directory / model_file(name)
        joblib.dump(result.estimator, path)
        files[path.name] = path
    return files


def metadata(results: Mapping[str, ModelResult]) -> dict[str, float]:
    """The original's metadata.json: {"train_accuracy_<model>": mean CV accuracy}."""
    return {f"train_accuracy_{name}": r.mean("accuracy") for name, r in results.items()}


def write_metadata(results: Mapping[str, ModelResult], directory: Path) -> Path:
    """Write metadata.json the way the original's json.dump did."""
    path = directory / METADATA
    with path.open("w") as stream:
        json.dump(metadata(results), stream)
    return path


def write_cv_results(results: Mapping[str, ModelResult], directory: Path) -> Path:
    """cv_results.csv: one row per model, fold and metric; scores in repr (round-trip) form."""
    path = directory / CV_RESULTS
    with path.open("w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(CV_COLUMNS)
        for name, result in results.items():
            for metric, scores in result.scores.items():
                for fold, score in enumerate(scores):
                    writer.writerow([name, fold, metric, repr(score)])
    return path


def environment() -> dict[str, Any]:
    """Versions of everything that decides what a model file means."""
    import joblib
    import numpy
    import pandas
    import prefect
    import sklearn

    return {
        "python": platform.python_version(),
        "sklearn": sklearn.__version__,
        "numpy": numpy.__version__,
        "pandas": pandas.__version__,
        "joblib": joblib.__version__,
        "prefect": prefect.__version__,
        "image": get_settings().image,
    }


def file_entry(path: Path) -> dict[str, Any]:
    """The manifest's record of one file."""
    return {"sha256": sha256_file(path), "bytes": path.stat().st_size}


def build_manifest(
    *,
    version: str,
    flow_run_id: str | None,
    data: Mapping[str, Any],
    parameters: Mapping[str, Any],
    results: Mapping[str, ModelResult],
    files: Mapping[str, Path],
    created: datetime | None = None,
) -> dict[str, Any]:
    """manifest.json: the fields docs/design.md §3 lists, with the `files` map the store checks."""
    file_entries = {name: file_entry(path) for name, path in sorted(files.items())}
    models = {}
    for name, result in results.items():
        entry = file_entries[model_file(name)]
        models[name] = {
            "file": model_file(name),
            "sha256": entry["sha256"],
            "bytes": entry["bytes"],
            "params": result.params,
            "cv": {
                metric: {
                    "folds": list(scores),
                    "mean": result.mean(metric),
                    "std": result.std(metric),
                }
                for metric, scores in result.scores.items()
            },
        }
    return {
        "version": version,
        "created": (created or datetime.now(UTC)).astimezone(UTC).isoformat(),
        "flow_run_id": flow_run_id,
        "data": dict(data),
        "parameters": dict(parameters),
        "models": models,
        "environment": environment(),
        "files": file_entries,
    }


def write_version_files(results: Mapping[str, ModelResult], directory: Path) -> dict[str, Path]:
    """Write the model files, metadata.json and cv_results.csv into directory."""
    directory.mkdir(parents=True, exist_ok=True)
    files = write_models(results, directory)
    files[METADATA] = write_metadata(results, directory)
    files[CV_RESULTS] = write_cv_results(results, directory)
    assert MANIFEST not in files
    return files
