"""Batch inference: fetch a published version (checksums verified), load its models, score a CSV."""

from __future__ import annotations

import contextlib
import json
import os
import posixpath
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
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


def feature_matrix(
    frame: pd.DataFrame, features: list[str], source: str, first_row: int = 0
) -> np.ndarray:
    """The model input from a frame: the training features, in order, numeric and finite."""
    import numpy as np
    import pandas as pd

    missing = [c for c in features if c not in frame.columns]
    if missing:
        raise InferenceError(
            f"data {source}: {len(missing)} feature column(s) the models were trained on are "
            f"missing, e.g. [{', '.join(quote_value(c, 60) for c in missing[:5])}]; "
            "score a CSV with the training layout"
        )
    selected = frame[features]
    for column in features:
        if not pd.api.types.is_numeric_dtype(selected[column]):
            raise InferenceError(
                f"data {source}: feature column {quote_value(column)} is not numeric; "
                "encode it as the training data did"
            )
    X = selected.to_numpy(dtype=np.float64)
    if not np.isfinite(X).all():
        row, col = (int(i[0]) for i in np.nonzero(~np.isfinite(X)))
        raise InferenceError(
            f"data {source}: feature column {quote_value(features[col])} is NaN or infinite in "
            f"data row {first_row + row + 1}; impute or drop those rows"
        )
    return X


PREVIEW_ROWS = 20
DEFAULT_CHUNK_ROWS = 20_000


@dataclass(frozen=True)
class PredictionRun:
    """What predicting a CSV produced: the written file, its size, accuracy and a preview."""

    output: Path
    rows: int
    accuracy: dict[str, float] | None
    preview: pd.DataFrame
    data_sha256: str


def predict_csv(
    loaded: LoadedVersion,
    path: Path,
    source: str,
    output: Path,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> PredictionRun:
    """Predict a CSV chunk by chunk, so memory stays bounded whatever the file's size.

    The predictions CSV (row, the target if present, pred_<model>…) is written as a .part file
    and renamed into place at the end; accuracy is counted as the chunks go, so it equals
    `accuracy_score` on the whole file.
    """
    import numpy as np
    import pandas as pd

    from kubetrain.data import preflight_csv, read_csv_chunks
    from kubetrain.settings import get_settings
    from kubetrain.training.engine import preprocess

    settings = get_settings()
    digest = preflight_csv(
        path,
        source,
        max_columns=settings.max_columns,
        max_line_bytes=settings.max_line_bytes,
        check_memory=False,  # streamed: memory does not grow with the file
    )
    created = [d for d in (output.parent, *output.parent.parents) if not d.exists()]
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        tmp = tempfile.NamedTemporaryFile(  # noqa: SIM115 (closed below on every path)
            "w", dir=output.parent, prefix=f".{output.name}.", suffix=".part", delete=False
        )
    except OSError as error:
        raise InferenceError(
            f"cannot write predictions to {quote_value(str(output.parent))}: {error.strerror}; "
            "choose an output folder you can write to"
        ) from None
    correct = dict.fromkeys(loaded.models, 0)
    has_target: bool | None = None
    rows = 0
    preview: pd.DataFrame | None = None
    try:
        with tmp:
            for chunk in read_csv_chunks(path, source, chunk_rows):
                if chunk.empty:  # a header-only file: one empty, object-typed chunk
                    continue
                X = preprocess(
                    feature_matrix(chunk, loaded.features, source, rows), loaded.normalize
                )
                predictions = pd.DataFrame(index=pd.RangeIndex(rows, rows + len(chunk)))
                for name, model in loaded.models.items():
                    predictions[f"pred_{name}"] = model.predict(X)
                if has_target is None:
                    has_target = loaded.target in chunk.columns
                if has_target:
                    labels = chunk[loaded.target].to_numpy()
                    predictions.insert(0, loaded.target, labels)
                    for name in loaded.models:
                        correct[name] += int(np.sum(labels == predictions[f"pred_{name}"]))
                predictions.to_csv(tmp, header=rows == 0, index_label="row")
                if preview is None or len(preview) < PREVIEW_ROWS:
                    parts = [predictions] if preview is None else [preview, predictions]
                    preview = pd.concat(parts).head(PREVIEW_ROWS)
                rows += len(chunk)
        if rows == 0 or preview is None:
            raise InferenceError(f"data {source} has a header but no rows; nothing to predict")
    except BaseException:
        os.unlink(tmp.name)
        for folder in created:  # nothing half-written: not even an empty output folder
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    os.replace(tmp.name, output)
    accuracy = {name: correct[name] / rows for name in loaded.models} if has_target else None
    return PredictionRun(output, rows, accuracy, preview, digest)


# -- where the predictions go ---------------------------------------------------------------


def predictions_file_name(version: str, run: str, now: datetime) -> str:
    """`<version>-<UTC time>-<run>.csv`: one file per run, so runs never overwrite each other."""
    return f"{version}-{now.astimezone(UTC):%Y%m%dT%H%M%SZ}-{run}.csv"


def refuse_model_store_output(output: str, source: str, experiment: str) -> None:
    """Refuse an SFTP output that is the model store or inside the experiment's folder.

    Predictions go to `<output>/<experiment>/`; inside the model store that folder is the
    experiment's, where every entry is read as a (possibly incomplete) version.
    """
    from kubetrain.locations import SftpUrl, parse_location

    target = parse_location(output, what="output", allow_http=False, error=InferenceError)
    try:
        models = parse_location(source, what="source", allow_http=False, error=InferenceError)
    except InferenceError:
        return  # the source is checked when the version is fetched
    if not (isinstance(target, SftpUrl) and isinstance(models, SftpUrl)):
        return
    if (target.user, target.host, target.port) != (models.user, models.host, models.port):
        return
    inside = posixpath.normpath(target.path).rstrip("/")
    root = posixpath.normpath(models.path).rstrip("/")
    folder = f"{root}/{experiment}"
    if inside in (root, folder) or inside.startswith(f"{folder}/"):
        raise InferenceError(
            f"output {quote_value(target.display)} is the model store (or an experiment in "
            "it): predictions there would be read as versions; give a folder of its own, "
            f"e.g. {quote_value(models.display.rstrip('/') + '-predictions')}"
        )


def check_predictions_store(output: str, source: str, experiment: str) -> None:
    """Refuse the model store as output (above); probe that the output can be written."""
    from kubetrain.store import open_store

    refuse_model_store_output(output, source, experiment)
    with open_store(output) as store:
        store.check_writable(experiment, f"predict-{os.urandom(4).hex()}")


def upload_predictions(local: Path, output: str, experiment: str, name: str) -> str:
    """Put a finished predictions CSV at `<output>/<experiment>/<name>`; returns its URL.

    Through the store's backend, as publish does: uploaded under a `.part` name, size and
    sha256 read back and compared, then renamed into place. On any failure the `.part` file and
    the folders this call created are removed: readers see the whole file or none.
    """
    from kubetrain.store import PART_SUFFIX, IntegrityError, open_store, sha256_file, validate_name

    validate_name("experiment", experiment)
    validate_name("file", name)
    expected_size, expected_sha = local.stat().st_size, sha256_file(local)
    with open_store(output) as store:
        backend = store.backend
        target = posixpath.join(experiment, name)
        part = target + PART_SUFFIX
        created = backend.makedirs(experiment)
        try:
            backend.upload(local, part, None)
            if backend.size(part) != expected_size or backend.sha256(part) != expected_sha:
                raise IntegrityError(
                    f"{store.url}/{part}: size or sha256 read back differs from the predictions "
                    "written here; the upload was discarded, run predict again"
                )
            backend.replace(part, target)
        except BaseException:
            with contextlib.suppress(Exception):  # best effort: never hide the error raised
                if backend.exists(part):
                    backend.remove(part)
            for folder in reversed(created):
                with contextlib.suppress(Exception):
                    backend.rmdir(folder)
            raise
        return f"{store.url.rstrip('/')}/{target}"
