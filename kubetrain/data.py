"""Load a CSV from a path, file://, http(s):// or sftp:// source; validate it; fingerprint it."""

from __future__ import annotations

import math
import os
import random
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from kubetrain.errors import TransientError, UserError
from kubetrain.store import sha256_file

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

HTTP_TIMEOUT_ENV = "KUBETRAIN_HTTP_TIMEOUT"
HTTP_ATTEMPTS_ENV = "KUBETRAIN_HTTP_ATTEMPTS"
HTTP_BACKOFF_ENV = "KUBETRAIN_HTTP_BACKOFF"
DEFAULT_HTTP_TIMEOUT = 30.0
DEFAULT_HTTP_ATTEMPTS = 4
DEFAULT_HTTP_BACKOFF = 1.0
SAMPLE_DATA = "data/sample_letters.csv"
_REPO_ROOT = Path(__file__).resolve().parent.parent


def resolve_sample(data: str) -> str:
    """The bundled sample's relative path works from any working directory."""
    if data == SAMPLE_DATA and not Path(data).exists():
        return str(_REPO_ROOT / SAMPLE_DATA)
    return data


class DataError(UserError, ValueError):
    """The training data cannot be read or is not fit for training; the message says why."""


class TransientFetchError(TransientError):
    """A fetch failed for a reason that may pass (timeout, connection reset, 5xx)."""


@dataclass(frozen=True)
class Dataset:
    """Validated training data: features, labels and where they came from."""

    X: np.ndarray
    y: np.ndarray
    feature_names: list[str]
    target: str
    source: str
    sha256: str
    rows: int
    columns: list[str]
    class_counts: dict[str, int] = field(default_factory=dict)


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    return float(raw) if raw else default


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    return int(raw) if raw else default


def http_settings() -> tuple[float, int, float]:
    """(timeout seconds, attempts, first backoff seconds), from the environment or defaults."""
    return (
        _env_float(HTTP_TIMEOUT_ENV, DEFAULT_HTTP_TIMEOUT),
        _env_int(HTTP_ATTEMPTS_ENV, DEFAULT_HTTP_ATTEMPTS),
        _env_float(HTTP_BACKOFF_ENV, DEFAULT_HTTP_BACKOFF),
    )


def _fetch_http_once(url: str, destination: Path, timeout: float) -> None:
    import httpx

    try:
        with httpx.stream(
            "GET", url, timeout=httpx.Timeout(timeout), follow_redirects=True
        ) as response:
            if 400 <= response.status_code < 500 and response.status_code not in (408, 429):
                raise DataError(
                    f"{url}: HTTP {response.status_code} {response.reason_phrase}; "
                    "check the URL (and any credentials): this is not retried"
                )
            if response.status_code >= 400:
                raise TransientFetchError(f"{url}: HTTP {response.status_code}")
            with destination.open("wb") as out:
                for chunk in response.iter_bytes(1 << 20):
                    out.write(chunk)
    except httpx.TimeoutException as error:
        raise TransientFetchError(
            f"{url}: no answer within {timeout:g}s ({type(error).__name__})"
        ) from error
    except httpx.TransportError as error:
        raise TransientFetchError(f"{url}: {type(error).__name__}: {error}") from error


def fetch_http(
    url: str,
    destination: Path,
    *,
    timeout: float | None = None,
    attempts: int | None = None,
    backoff: float | None = None,
) -> None:
    """Download url to destination; retry transient failures with exponential backoff + jitter.

    4xx answers (but 408/429) are final. Defaults come from KUBETRAIN_HTTP_TIMEOUT,
    KUBETRAIN_HTTP_ATTEMPTS and KUBETRAIN_HTTP_BACKOFF.
    """
    env_timeout, env_attempts, env_backoff = http_settings()
    timeout = env_timeout if timeout is None else timeout
    attempts = max(1, env_attempts if attempts is None else attempts)
    backoff = env_backoff if backoff is None else backoff
    last: TransientFetchError | None = None
    for attempt in range(attempts):
        try:
            _fetch_http_once(url, destination, timeout)
            return
        except TransientFetchError as error:
            last = error
            destination.unlink(missing_ok=True)
            if attempt + 1 < attempts:
                time.sleep(backoff * 2**attempt * random.uniform(0.5, 1.5))
    raise DataError(
        f"{last}; gave up after {attempts} attempt(s). Check that the server is up and "
        f"reachable, or raise {HTTP_TIMEOUT_ENV} / {HTTP_ATTEMPTS_ENV}"
    )


def fetch_source(data: str, workdir: Path) -> Path:
    """A local file holding the data: the path itself, or a download of the URL into workdir."""
    parts = urlsplit(data)
    scheme = parts.scheme.lower()
    if scheme in ("http", "https"):
        target = workdir / (Path(unquote(parts.path)).name or "data.csv")
        fetch_http(data, target)
        return target
    if scheme == "sftp":
        from kubetrain.store.sftp import download_file  # paramiko is only imported when needed

        target = workdir / (Path(unquote(parts.path)).name or "data.csv")
        download_file(data, target)
        return target
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise DataError(
                f"data {data!r}: file:// URLs must be absolute (file:///abs/path.csv); "
                "for a relative file give a plain path"
            )
        path = Path(unquote(parts.path))
    elif scheme == "" or len(scheme) == 1:  # a plain path (or a Windows drive letter)
        path = Path(data).expanduser()
    else:
        raise DataError(
            f"data {data!r}: unsupported scheme {scheme!r}; use a path, file:///abs/path, "
            "http(s)://… or sftp://user@host/path"
        )
    if not path.exists():
        raise DataError(f"data file {path} does not exist; check the path (cwd: {Path.cwd()})")
    if not path.is_file():
        raise DataError(f"data {path} is not a file; give the path of a CSV file")
    return path


def read_csv(path: Path, source: str) -> pd.DataFrame:
    """Read a CSV, turning pandas' parse failures into messages that name the file."""
    import pandas as pd

    if path.stat().st_size == 0:
        raise DataError(f"data {source} is empty (0 bytes); expected a CSV with a header row")
    try:
        frame = pd.read_csv(path)
    except pd.errors.EmptyDataError as error:
        raise DataError(f"data {source} has no columns; expected a CSV with a header") from error
    except (pd.errors.ParserError, UnicodeDecodeError) as error:
        raise DataError(f"data {source} is not a readable CSV: {error}") from error
    return frame


def validate_frame(
    frame: pd.DataFrame,
    *,
    target: str,
    drop_columns: Sequence[str],
    folds: int,
    source: str,
    sha256: str,
) -> Dataset:
    """Check the frame is fit for `folds`-fold stratified training; return features + labels."""
    import numpy as np
    import pandas as pd

    columns = [str(c) for c in frame.columns]
    # pandas renames a repeated header "a" to "a.1"; read the raw header to catch it.
    duplicates = sorted({c for c in columns if columns.count(c) > 1})
    if duplicates:
        raise DataError(f"data {source}: duplicate column name(s) {duplicates}; rename them")
    if target not in columns:
        raise DataError(
            f"data {source}: target column {target!r} not found; columns are {columns[:20]}"
            f"{' …' if len(columns) > 20 else ''}. Set target to one of them"
        )
    missing_drop = [c for c in drop_columns if c not in columns]
    if missing_drop:
        raise DataError(
            f"data {source}: drop_columns {missing_drop} not found; columns are {columns[:20]}"
        )
    if target in drop_columns:
        raise DataError(f"data {source}: the target {target!r} is also in drop_columns")
    if len(frame) == 0:
        raise DataError(f"data {source} has a header but no rows; add data rows")
    features = [c for c in columns if c != target and c not in drop_columns]
    if not features:
        raise DataError(f"data {source}: no feature columns left after dropping {drop_columns}")
    labels = frame[target]
    if labels.isna().any():
        row = int(np.flatnonzero(labels.isna().to_numpy())[0])
        raise DataError(
            f"data {source}: target column {target!r} is empty in data row {row + 1}; "
            "fill or drop unlabeled rows"
        )
    for column in features:
        series = frame[column]
        if not pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series):
            coerced = pd.to_numeric(series, errors="coerce")
            bad = series[coerced.isna() & series.notna()]
            example = repr(bad.iloc[0]) if len(bad) else repr(series.iloc[0])
            raise DataError(
                f"data {source}: feature column {column!r} is not numeric (e.g. {example}); "
                "encode it as numbers or add it to drop_columns"
            )
    X = frame[features].to_numpy(dtype=np.float64)
    if not np.isfinite(X).all():
        bad_rows, bad_cols = np.nonzero(~np.isfinite(X))
        column = features[int(bad_cols[0])]
        value = X[bad_rows[0], bad_cols[0]]
        kind = "NaN (missing)" if math.isnan(value) else str(value)
        raise DataError(
            f"data {source}: feature column {column!r} has {kind} in data row "
            f"{int(bad_rows[0]) + 1} ({len(bad_rows)} non-finite value(s) in total); "
            "impute or drop those rows"
        )
    y = labels.to_numpy()
    classes, counts = np.unique(y, return_counts=True)
    if len(classes) < 2:
        raise DataError(
            f"data {source}: target {target!r} has a single class ({_label(classes[0])}); "
            "classification needs at least two"
        )
    if folds < 2:
        raise DataError(f"folds={folds}: cross-validation needs at least 2 folds")
    small = [(c, int(n)) for c, n in zip(classes, counts, strict=True) if n < folds]
    if small:
        listed = ", ".join(f"{_label(c)} has {n}" for c, n in small[:10])
        raise DataError(
            f"data {source}: every class needs at least folds={folds} rows for stratified "
            f"cross-validation, but class {listed} row(s); add rows or lower folds "
            f"(smallest class: {min(n for _, n in small)})"
        )
    return Dataset(
        X=X,
        y=y,
        feature_names=features,
        target=target,
        source=source,
        sha256=sha256,
        rows=len(frame),
        columns=columns,
        class_counts={str(c): int(n) for c, n in zip(classes, counts, strict=True)},
    )


def _label(value: Any) -> str:
    """A class label as the user wrote it (numpy scalars shown as plain Python values)."""
    plain = value.item() if hasattr(value, "item") else value
    return repr(plain)


def _raw_header(path: Path) -> list[str] | None:
    import csv

    with path.open(newline="", encoding="utf-8", errors="replace") as stream:
        return next(csv.reader(stream), None)


def load_dataset(
    data: str, target: str, drop_columns: Sequence[str], folds: int, workdir: Path | None = None
) -> Dataset:
    """Fetch (if remote), read, fingerprint and validate the training data."""
    with tempfile.TemporaryDirectory(prefix="kubetrain-data-") as tmp:
        path = fetch_source(data, workdir or Path(tmp))
        digest = sha256_file(path)
        frame = read_csv(path, data)
        header = _raw_header(path)
        if header is not None and len(header) == len(frame.columns):
            frame.columns = [h.strip("\ufeff") if i == 0 else h for i, h in enumerate(header)]
        return validate_frame(
            frame,
            target=target,
            drop_columns=drop_columns,
            folds=folds,
            source=data,
            sha256=digest,
        )


def describe(dataset: Dataset) -> dict[str, Any]:
    """The manifest's `data` section."""
    return {
        "source": dataset.source,
        "sha256": dataset.sha256,
        "rows": dataset.rows,
        "columns": dataset.columns,
        "target": dataset.target,
        "features": len(dataset.feature_names),
        "classes": dataset.class_counts,
    }
