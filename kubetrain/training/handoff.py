"""Fit outcomes kept in the store: the fan-out staging area and the fit cache (docs/design.md).

Every pod of a run can reach the store, so that is where a `train-fit` child hands its
`FitOutcome` to its parent, and where finished fits wait to be reused:

    <experiment>/.staging/<version>/<fit>/   one child's outcome for the parent run <version>
    <experiment>/.fit-cache/<key>/           a finished fit, under `fit_key`

An entry is two files: `<sha256>.joblib` (the pickled FitOutcome: the estimator of a final fit;
the scores, test indices and predictions of a fold) and `record.json`, written last, naming
that payload, its size and sha256. A payload is downloaded, its sha256 checked against the
record, and only then passed to `joblib.load` (a pickle runs code when loaded, the same rule as
`predict`). Names starting with '.' are never versions: the store's version listing, LATEST and
prune only consider names starting with a letter or digit (kubetrain.store.validate_name).

The cache lives in the store rather than behind a Prefect cache policy: Prefect keeps cached
results in its result storage and unpickles them without a checksum, and the store (a folder or
SFTP) is the only storage both the flow-run pod and every child pod can reach.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import pickle
import posixpath
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kubetrain.store import PART_SUFFIX, ArtifactStore, IntegrityError, StoreError, sha256_file
from kubetrain.training.catalog import build_estimator, estimator_params
from kubetrain.training.engine import FitOutcome, TrainingConfig

STAGING_DIR = ".staging"
CACHE_DIR = ".fit-cache"
RECORD = "record.json"
RECORD_FORMAT = 1
MAX_RECORD_BYTES = 64 * 1024


def fit_name(model: str, fold: int | None) -> str:
    """A fit's name for runs and folders: fit-nn-final, fit-nn-fold-3 (folds counted from 1)."""
    return f"fit-{model}-final" if fold is None else f"fit-{model}-fold-{fold + 1}"


def library_versions() -> dict[str, str]:
    """Versions of what computes a fit and pickles it."""
    import joblib
    import numpy
    import sklearn

    try:
        ours = importlib.metadata.version("kubetrain")
    except importlib.metadata.PackageNotFoundError:  # a checkout that was never installed
        ours = "unknown"
    return {
        "kubetrain": ours,
        "sklearn": sklearn.__version__,
        "numpy": numpy.__version__,
        "joblib": joblib.__version__,
    }


def fit_key(
    data_sha256: str,
    target: str,
    drop_columns: list[str],
    config: TrainingConfig,
    model: str,
    fold: int | None,
) -> str:
    """The cache key of one fit: sha256 of everything that decides its outcome.

    The data (its sha256, target and dropped columns), model and fold, the estimator's effective
    parameters (catalog defaults, overrides, seed), normalize and the library versions; for a CV
    fold also the split (folds, shuffle, seed) and the scored metrics. A final fit does not
    depend on them, so a run with other folds still reuses it.
    """
    estimator = build_estimator(
        model, config.seed, config.model_params.get(model), config.normalize
    )
    material: dict[str, Any] = {
        "format": RECORD_FORMAT,
        "data": {"sha256": data_sha256, "target": target, "drop_columns": list(drop_columns)},
        "model": model,
        "fold": fold,
        "estimator": {"class": type(estimator).__name__, "params": estimator_params(estimator)},
        "normalize": config.normalize,
        "libraries": library_versions(),
    }
    if fold is not None:
        material["split"] = {"folds": config.folds, "shuffle": config.shuffle, "seed": config.seed}
        material["metrics"] = config.scored_metrics
    canonical = json.dumps(material, sort_keys=True, separators=(",", ":"), default=repr)
    return hashlib.sha256(canonical.encode()).hexdigest()


def as_in_a_pool_worker(X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """X and y as a FitPool worker process receives them: pickled and loaded again.

    The engine's pool hands each fit its data through a pickle, and a fitted estimator keeps
    references to the data's dtype objects; joblib writes those references into the model file.
    A child fit on data that crossed a pickle the same way writes byte-identical model files.
    """
    # Our own bytes, pickled the line before: nothing untrusted is loaded.
    copied: tuple[np.ndarray, np.ndarray] = pickle.loads(pickle.dumps((X, y), protocol=5))  # noqa: S301
    return copied


@dataclass(frozen=True)
class Entry:
    """Where one outcome lives in the store: a folder below the store root."""

    folder: str

    @staticmethod
    def staged(experiment: str, version: str, model: str, fold: int | None) -> Entry:
        """A child's outcome for the parent run publishing `version`."""
        return Entry(posixpath.join(experiment, STAGING_DIR, version, fit_name(model, fold)))

    @staticmethod
    def cached(experiment: str, key: str) -> Entry:
        """A finished fit in the fit cache."""
        return Entry(posixpath.join(experiment, CACHE_DIR, key))


def write_outcome(store: ArtifactStore, entry: Entry, outcome: FitOutcome, **extra: Any) -> None:
    """Write the payload, then record.json naming it (the record is the commit marker)."""
    import joblib

    backend = store.backend
    backend.makedirs(entry.folder)
    with tempfile.TemporaryDirectory(prefix="kubetrain-fit-") as tmp:
        local = Path(tmp) / "outcome.joblib"
        joblib.dump(outcome, local)
        digest = sha256_file(local)
        payload = f"{digest}.joblib"
        target = posixpath.join(entry.folder, payload)
        # Unique part names: two runs may write the same cache entry at once.
        part = f"{target}.{uuid.uuid4().hex[:8]}{PART_SUFFIX}"
        backend.upload(local, part, None)
        if backend.sha256(part) != digest:
            backend.remove(part)
            raise IntegrityError(
                f"{store.url}/{part}: sha256 read back differs from what was written"
            )
        backend.replace(part, target)
    record = {
        "format": RECORD_FORMAT,
        "model": outcome.model,
        "fold": outcome.fold,
        "seconds": outcome.seconds,
        "payload": payload,
        "sha256": digest,
        **extra,
    }
    record_part = posixpath.join(entry.folder, f"{RECORD}.{uuid.uuid4().hex[:8]}{PART_SUFFIX}")
    backend.write_bytes(record_part, (json.dumps(record, sort_keys=True) + "\n").encode())
    backend.replace(record_part, posixpath.join(entry.folder, RECORD))


def read_record(store: ArtifactStore, entry: Entry) -> dict[str, Any] | None:
    """The entry's record.json, None when there is none; IntegrityError when it is no record."""
    record_path = posixpath.join(entry.folder, RECORD)
    if store.backend.kind(record_path) != "file":
        return None
    try:
        record = json.loads(store.backend.read_bytes(record_path, MAX_RECORD_BYTES))
        payload, digest = record["payload"], record["sha256"]
        if not isinstance(payload, str) or not isinstance(digest, str) or "/" in payload:
            raise TypeError("payload")
    except (ValueError, KeyError, TypeError) as error:
        raise IntegrityError(
            f"{store.url}/{record_path} is not a fit record ({type(error).__name__})"
        ) from None
    return dict(record)


def read_outcome(
    store: ArtifactStore, entry: Entry, model: str, fold: int | None
) -> FitOutcome | None:
    """The outcome in entry, checksum-verified before it is loaded; None when there is none.

    Raises IntegrityError when the payload differs from its record (it is then not loaded).
    """
    import joblib

    backend = store.backend
    record = read_record(store, entry)
    if record is None:
        return None
    record_path = posixpath.join(entry.folder, RECORD)
    payload, expected = record["payload"], record["sha256"]
    if (record.get("model"), record.get("fold")) != (model, fold):
        raise IntegrityError(
            f"{store.url}/{record_path} records another fit than {fit_name(model, fold)}"
        )
    remote = posixpath.join(entry.folder, payload)
    if backend.kind(remote) != "file":
        raise IntegrityError(f"{store.url}/{remote} is missing or not a regular file")
    with tempfile.TemporaryDirectory(prefix="kubetrain-fit-") as tmp:
        local = Path(tmp) / "outcome.joblib"
        backend.download(remote, local, None)
        if sha256_file(local) != expected:
            raise IntegrityError(
                f"{store.url}/{remote}: sha256 differs from its record; the file was changed "
                "after it was written and was not loaded"
            )
        outcome = joblib.load(local)
    if not isinstance(outcome, FitOutcome) or (outcome.model, outcome.fold) != (model, fold):
        raise IntegrityError(f"{store.url}/{remote} holds no outcome of {fit_name(model, fold)}")
    return outcome


def remove_tree(store: ArtifactStore, folder: str) -> None:
    """Remove folder and everything below it (entries are at most two levels deep)."""
    backend = store.backend
    kind = backend.kind(folder)
    if kind is None:
        return
    if kind != "dir":
        backend.remove(folder)
        return
    for name in backend.listdir(folder):
        remove_tree(store, posixpath.join(folder, name))
    backend.rmdir(folder)


def remove_entry(store: ArtifactStore, entry: Entry) -> None:
    """Remove an entry record first (from then on nobody loads it), then its files and folder."""
    store.backend.remove(posixpath.join(entry.folder, RECORD))
    remove_tree(store, entry.folder)


def clear_staging(store: ArtifactStore, experiment: str, version: str) -> None:
    """Remove what the children of the run publishing `version` staged, then `.staging` if empty."""
    staging = posixpath.join(experiment, STAGING_DIR)
    try:
        remove_tree(store, posixpath.join(staging, version))
    except (StoreError, OSError) as error:
        raise StoreError(
            f"{store.url}/{staging}/{version} could not be removed ({error}); it is no version "
            "and can be deleted by hand"
        ) from None
    store.backend.rmdir(staging)  # only when no other run is staging right now
