"""Batch inference: fetch a published version (checksums verified), load its models, score a CSV."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kubetrain.errors import UserError
from kubetrain.locations import quote_value

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd


class InferenceError(UserError, ValueError):
    """The version or the data to score cannot be used; the message says why and what to do."""


@dataclass(frozen=True)
class LoadedVersion:
    """A published version's models, ready to predict, and what they were trained on."""

    version: str
    manifest: dict[str, Any]
    models: dict[str, Any]
    features: list[str]
    target: str
    normalize: str


def features_of(manifest: Mapping[str, Any]) -> list[str]:
    """The training feature columns, in training order: columns less target and dropped ones."""
    data, parameters = manifest["data"], manifest["parameters"]
    dropped = set(parameters.get("drop_columns", []))
    return [c for c in data["columns"] if c != data["target"] and c not in dropped]


def verified_model_path(folder: Path, manifest: Mapping[str, Any], model: str) -> Path:
    """The file of `model` inside `folder`, if the manifest's verified `files` map covers it."""
    from kubetrain.store import StoreError, manifest_files, validate_name

    name = (
        manifest["models"][model].get("file")
        if isinstance(manifest["models"][model], Mapping)
        else None
    )
    verified = manifest_files(manifest)
    try:
        safe = isinstance(name, str) and validate_name("file", name) == name and name in verified
    except StoreError:
        safe = False
    path = folder / str(name)
    if not safe or path.resolve().parent != folder.resolve() or not path.is_file():
        raise InferenceError(
            f"model {model!r} names file {quote_value(name)}, which is not one of the version's "
            "verified files; the manifest was altered: republish the version"
        )
    return path


def load_version(source: str, experiment: str, version: str | None, workdir: Path) -> LoadedVersion:
    """Fetch a version (a name, @alias, or LATEST when None), verify every sha256 and, when a
    verification key is configured, the manifest's signature; then load the models."""
    import joblib

    from kubetrain.registry.signing import fetch_trusted
    from kubetrain.store import MANIFEST, open_store

    with open_store(source) as store:
        local = fetch_trusted(store, experiment, version, workdir)
    manifest = json.loads((local / MANIFEST).read_text())  # fetch left the manifest it verified
    # Only files that fetch downloaded into `local` and verified reach joblib.load: it runs code.
    models = {
        name: joblib.load(verified_model_path(local, manifest, name)) for name in manifest["models"]
    }
    return LoadedVersion(
        version=local.name,
        manifest=manifest,
        models=models,
        features=features_of(manifest),
        target=str(manifest["data"]["target"]),
        normalize=str(manifest["parameters"].get("normalize", "none")),
    )


def feature_matrix(frame: pd.DataFrame, features: list[str], source: str) -> np.ndarray:
    """The model input from a frame: the training features, in order, numeric and finite."""
    import numpy as np
    import pandas as pd

    missing = [c for c in features if c not in frame.columns]
    if missing:
        raise InferenceError(
            f"data {source}: {len(missing)} feature column(s) the models were trained on are "
            f"missing, e.g. {missing[:5]}; score a CSV with the training layout"
        )
    selected = frame[features]
    for column in features:
        if not pd.api.types.is_numeric_dtype(selected[column]):
            raise InferenceError(
                f"data {source}: feature column {column!r} is not numeric; "
                "encode it as the training data did"
            )
    X = selected.to_numpy(dtype=np.float64)
    if not np.isfinite(X).all():
        row, col = (int(i[0]) for i in np.nonzero(~np.isfinite(X)))
        raise InferenceError(
            f"data {source}: feature column {features[col]!r} is NaN or infinite in data row "
            f"{row + 1}; impute or drop those rows"
        )
    return X


@dataclass(frozen=True)
class Scores:
    """Predictions per model and, when the data carries the target, accuracy per model."""

    predictions: pd.DataFrame
    accuracy: dict[str, float] | None


def score(loaded: LoadedVersion, frame: pd.DataFrame, source: str) -> Scores:
    """Predict every row with every model of the version; accuracy when labels are present."""
    import pandas as pd
    from sklearn.metrics import accuracy_score

    from kubetrain.training.engine import preprocess

    X = preprocess(feature_matrix(frame, loaded.features, source), loaded.normalize)
    predictions = pd.DataFrame(index=frame.index)
    for name, model in loaded.models.items():
        predictions[f"pred_{name}"] = model.predict(X)
    accuracy = None
    if loaded.target in frame.columns:
        predictions.insert(0, loaded.target, frame[loaded.target].to_numpy())
        labels = frame[loaded.target].to_numpy()
        accuracy = {
            name: float(accuracy_score(labels, predictions[f"pred_{name}"]))
            for name in loaded.models
        }
    return Scores(predictions=predictions, accuracy=accuracy)


def write_predictions(predictions: pd.DataFrame, output: Path) -> Path:
    """Write predictions.csv atomically: a reader never sees half a file."""
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(
        "w", dir=output.parent, prefix=f".{output.name}.", suffix=".part", delete=False
    ) as tmp:
        predictions.to_csv(tmp, index_label="row")
    os.replace(tmp.name, output)
    return output
