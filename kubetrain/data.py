"""Load a CSV from a path, file://, http(s):// or sftp:// source; validate it; fingerprint it.

Over 400 lines on purpose: fetching, the bounded pre-parse check, parsing and validation are the
one path every training row takes, and their error messages share one style and one source name.
"""

from __future__ import annotations

import math
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from kubetrain.errors import TransientError, UserError
from kubetrain.locations import HttpUrl, SftpUrl, parse_location, quote_value, redact_url
from kubetrain.settings import get_settings

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

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


def fetch_http(url: str, destination: Path, *, timeout: float | None = None) -> None:
    """Download url to destination in one attempt bounded in total time and size.

    Timeouts, resets, 5xx, 408 and 429 raise TransientFetchError (the load-data task retries
    them); other 4xx and everything a retry cannot fix raise DataError. A partial download is
    removed on every exit path.
    """
    import httpx

    settings = get_settings()
    budget = settings.http_timeout if timeout is None else timeout
    limit = settings.max_download_bytes
    shown = quote_value(redact_url(url))
    deadline = time.monotonic() + budget
    headers = {}
    if settings.http_authorization is not None:  # httpx drops it on redirects to other hosts
        headers["Authorization"] = settings.http_authorization.get_secret_value()
    try:
        with httpx.stream(
            "GET", url, headers=headers, timeout=httpx.Timeout(budget), follow_redirects=True
        ) as response:
            status = response.status_code
            if 400 <= status < 500 and status not in (408, 429):
                raise DataError(
                    f"{shown}: HTTP {status} {response.reason_phrase}; "
                    "check the URL (and any credentials): this is not retried"
                )
            if status >= 400:
                raise TransientFetchError(f"{shown}: HTTP {status}")
            announced = response.headers.get("content-length", "")
            if announced.isdigit() and int(announced) > limit:
                raise DataError(_too_large(shown, limit))
            received = 0
            with destination.open("wb") as out:
                # Chunks as they arrive (no size): a fixed size would wait for a slow server to
                # fill it, and the deadline below would never be checked.
                for chunk in response.iter_bytes():
                    received += len(chunk)
                    if received > limit:
                        raise DataError(_too_large(shown, limit))
                    if time.monotonic() > deadline:
                        raise TransientFetchError(
                            f"{shown}: download not finished within {budget:g}s "
                            f"({received} bytes so far); raise KUBETRAIN_HTTP_TIMEOUT for "
                            "large files on slow links"
                        )
                    out.write(chunk)
    except BaseException as error:
        destination.unlink(missing_ok=True)
        if isinstance(error, httpx.UnsupportedProtocol):
            raise DataError(
                f"{shown}: the server redirected to a non-HTTP location; "
                "give the final http(s) URL of the CSV"
            ) from None
        if isinstance(error, httpx.TimeoutException):
            raise TransientFetchError(
                f"{shown}: no answer within {budget:g}s ({type(error).__name__}); check that "
                "the server is up and reachable, or raise KUBETRAIN_HTTP_TIMEOUT"
            ) from None
        if isinstance(error, httpx.TransportError):
            raise TransientFetchError(f"{shown}: {type(error).__name__}") from None
        raise


def _too_large(shown: str, limit: int) -> str:
    return (
        f"{shown} is larger than KUBETRAIN_MAX_DOWNLOAD_BYTES={limit}; "
        "raise that limit if the data really is this large"
    )


def fetch_source(data: str, workdir: Path) -> Path:
    """A local file holding the data: the path itself, or a download of the URL into workdir."""
    location = parse_location(data, what="data", error=DataError)
    if isinstance(location, HttpUrl):
        target = workdir / (Path(unquote(urlsplit(data).path)).name or "data.csv")
        fetch_http(data, target)
        return target
    if isinstance(location, SftpUrl):
        from kubetrain.store.sftp import download_file  # paramiko is only imported when needed

        target = workdir / (Path(location.path).name or "data.csv")
        download_file(data, target, max_bytes=get_settings().max_download_bytes)
        return target
    path = location.path
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
        raise DataError(f"data {source} is not a readable CSV: {_short(error)}") from error
    return frame


def read_csv_chunks(path: Path, source: str, chunk_rows: int) -> Iterator[pd.DataFrame]:
    """A CSV's rows in chunks of chunk_rows, with parse failures named like read_csv's."""
    import pandas as pd

    if path.stat().st_size == 0:
        raise DataError(f"data {source} is empty (0 bytes); expected a CSV with a header row")
    try:
        with pd.read_csv(path, chunksize=chunk_rows) as reader:
            yield from reader
    except pd.errors.EmptyDataError as error:
        raise DataError(f"data {source} has no columns; expected a CSV with a header") from error
    except (pd.errors.ParserError, UnicodeDecodeError) as error:
        raise DataError(f"data {source} is not a readable CSV: {_short(error)}") from error


def _short(error: BaseException) -> str:
    return quote_value(str(error), limit=300).strip("'\"")


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
    name_counts = Counter(columns)
    duplicates = sorted(c for c, n in name_counts.items() if n > 1)
    if duplicates:
        raise DataError(
            f"data {source}: duplicate column name(s) {_quote_list(duplicates)}; rename them"
        )
    if target not in name_counts:
        raise DataError(
            f"data {source}: target column {quote_value(target)} not found; columns are "
            f"{_quote_list(columns)}. Set target to one of them"
        )
    missing_drop = [c for c in drop_columns if c not in name_counts]
    if missing_drop:
        raise DataError(
            f"data {source}: drop_columns {_quote_list(missing_drop)} not found; columns are "
            f"{_quote_list(columns)}"
        )
    if target in drop_columns:
        raise DataError(f"data {source}: the target {quote_value(target)} is also in drop_columns")
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
            example = _label(bad.iloc[0] if len(bad) else series.iloc[0])
            raise DataError(
                f"data {source}: feature column {quote_value(column)} is not numeric "
                f"(e.g. {example}); encode it as numbers or add it to drop_columns"
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
    return quote_value(plain, limit=60)


def _raw_header(path: Path) -> list[str] | None:
    import csv

    with path.open(newline="", encoding="utf-8", errors="replace") as stream:
        return next(csv.reader(stream), None)


def _quote_list(values: Sequence[str], shown: int = 20) -> str:
    """A list of names for a message: the first few, each truncated, and how many more."""
    head = ", ".join(quote_value(v, limit=60) for v in values[:shown])
    more = f", … {len(values) - shown} more" if len(values) > shown else ""
    return f"[{head}{more}]"


def memory_available() -> int | None:
    """Bytes this process may still allocate: its cgroup's limit less usage, else MemAvailable."""
    for limit_file, usage_file in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        (
            "/sys/fs/cgroup/memory/memory.limit_in_bytes",
            "/sys/fs/cgroup/memory/memory.usage_in_bytes",
        ),
    ):
        try:
            raw = Path(limit_file).read_text().strip()
            used = int(Path(usage_file).read_text().strip())
        except (OSError, ValueError):
            continue
        if raw.isdigit() and int(raw) < 1 << 60:  # "max" or a huge v1 value: no limit
            return max(0, int(raw) - used)
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


# Parsing a numeric CSV into pandas, then the float64 matrix, takes about this many bytes of
# memory per byte of file (text "0.1234567," -> 8 bytes twice, plus parser buffers).
MEMORY_PER_FILE_BYTE = 3


def preflight_csv(
    path: Path,
    source: str,
    *,
    max_columns: int,
    max_line_bytes: int,
    memory_limit: int | None = None,
    check_memory: bool = True,
) -> str:
    """Check a CSV's shape before parsing it, in one bounded pass; return its sha256.

    Refuses: more than max_columns header fields, any line longer than max_line_bytes (a C-level
    parse of a giant line cannot be interrupted), and a file whose parse would not fit in the
    memory this process may use (memory_limit, default: the cgroup limit or MemAvailable).
    """
    import csv
    import hashlib

    size = path.stat().st_size
    available = memory_available() if memory_limit is None else memory_limit
    if check_memory and available is not None and size * MEMORY_PER_FILE_BYTE > available:
        raise DataError(
            f"data {source} ({size / 2**20:.0f} MiB) needs about "
            f"{size * MEMORY_PER_FILE_BYTE / 2**20:.0f} MiB of memory to load, but this process "
            f"may use only {available / 2**20:.0f} MiB more; give it more memory (in Kubernetes "
            "the memory_limit job variable) or train on a sample"
        )
    block_size = min(1 << 20, max_line_bytes)
    digest = hashlib.sha256()
    run = 0  # bytes since the last newline; a block is never longer than the limit
    header: bytes | None = None
    pending = b""
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(block_size), b""):
            digest.update(block)
            first = block.find(b"\n")
            if first < 0:
                run += len(block)
                if header is None:
                    pending += block
            else:
                run += first
                if run > max_line_bytes:
                    break
                if header is None:
                    header = pending + block[:first]
                run = len(block) - block.rfind(b"\n") - 1
            if run > max_line_bytes:
                break
    if header is None:
        header = pending
    if run > max_line_bytes:
        raise DataError(
            f"data {source} has a line longer than KUBETRAIN_MAX_LINE_BYTES={max_line_bytes}; "
            "is it really a CSV with one row per line? Raise the limit if so"
        )
    fields = next(csv.reader([header.decode("utf-8", errors="replace")]), [])
    if len(fields) > max_columns:
        raise DataError(
            f"data {source} has {len(fields)} columns, more than "
            f"KUBETRAIN_MAX_COLUMNS={max_columns}; drop columns first or raise the limit"
        )
    return digest.hexdigest()


def load_dataset(
    data: str,
    target: str,
    drop_columns: Sequence[str],
    folds: int,
    workdir: Path | None = None,
    *,
    max_columns: int | None = None,
) -> Dataset:
    """Fetch (if remote), check the shape of, fingerprint, read and validate the training data."""
    settings = get_settings()
    with tempfile.TemporaryDirectory(prefix="kubetrain-data-") as tmp:
        path = fetch_source(data, workdir or Path(tmp))
        shown = redact_url(data)
        digest = preflight_csv(
            path,
            shown,
            max_columns=max_columns or settings.max_columns,
            max_line_bytes=settings.max_line_bytes,
        )
        frame = read_csv(path, shown)
        header = _raw_header(path)
        if header is not None and len(header) == len(frame.columns):
            frame.columns = [h.strip("\ufeff") if i == 0 else h for i, h in enumerate(header)]
        return validate_frame(
            frame,
            target=target,
            drop_columns=drop_columns,
            folds=folds,
            source=shown,
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
