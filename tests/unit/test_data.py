"""kubetrain/data.py: sources, HTTP retries and timeouts, validation messages, fingerprint."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from kubetrain.data import (
    DataError,
    Dataset,
    TransientFetchError,
    fetch_http,
    fetch_source,
    load_dataset,
)
from tests.train_helpers import (
    LocalHttpServer,
    StallingServer,
    original_layout_frame,
    write_original_layout_csv,
)


@pytest.fixture
def csv_path(tmp_path: Path) -> Path:
    return write_original_layout_csv(tmp_path / "train.csv", classes=4, per_class=6, features=3)


def _load(data: str, **kwargs: Any) -> Dataset:
    args: dict[str, Any] = {"target": "# Letter", "drop_columns": ["Line"], "folds": 5} | kwargs
    return load_dataset(data, **args)


def test_plain_path_and_file_url_give_same_data_and_fingerprint(csv_path: Path) -> None:
    by_path = _load(str(csv_path))
    by_url = _load(csv_path.as_uri())
    assert by_path.sha256 == by_url.sha256 == hashlib.sha256(csv_path.read_bytes()).hexdigest()
    frame = pd.read_csv(csv_path)
    np.testing.assert_array_equal(by_path.X, frame.drop(columns=["Line", "# Letter"]).to_numpy())
    np.testing.assert_array_equal(by_url.y, frame["# Letter"].to_numpy())
    assert by_path.feature_names == [" f0/theta", " f1/theta", " f2/theta"]
    assert by_path.rows == 24
    assert by_path.class_counts == {"1": 6, "2": 6, "3": 6, "4": 6}


def test_http_source_is_downloaded(csv_path: Path) -> None:
    with LocalHttpServer({"/train.csv": csv_path.read_bytes()}) as server:
        dataset = _load(server.url("/train.csv"))
    assert dataset.sha256 == hashlib.sha256(csv_path.read_bytes()).hexdigest()
    assert dataset.source == server.url("/train.csv")


def test_http_5xx_is_transient_and_leaves_no_partial_file(tmp_path: Path) -> None:
    with (
        LocalHttpServer({"/d.csv": b"a,b\n1,2\n"}, fail_first=1, fail_status=503) as server,
        pytest.raises(TransientFetchError, match="HTTP 503"),
    ):
        fetch_http(server.url("/d.csv"), tmp_path / "d.csv", timeout=5)
    assert len(server.requests) == 1  # one attempt: retries belong to the load-data task
    assert not (tmp_path / "d.csv").exists()


def test_http_404_is_a_user_error(tmp_path: Path) -> None:
    with LocalHttpServer({}) as server, pytest.raises(DataError, match=r"HTTP 404.*not retried"):
        fetch_http(server.url("/missing.csv"), tmp_path / "x", timeout=5)
    assert len(server.requests) == 1
    assert not (tmp_path / "x").exists()


def test_stalled_server_times_out(tmp_path: Path) -> None:
    started = time.monotonic()
    with StallingServer() as server, pytest.raises(TransientFetchError) as caught:
        fetch_http(server.url(), tmp_path / "x", timeout=0.3)
    assert "no answer within 0.3s" in str(caught.value)
    assert len(server.accepted) == 1
    assert time.monotonic() - started < 10  # bounded: one 0.3 s timeout, not a hang


def test_http_timeout_comes_from_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBETRAIN_HTTP_TIMEOUT", "0.2")
    with StallingServer() as server, pytest.raises(TransientFetchError, match=r"within 0\.2s"):
        fetch_http(server.url(), tmp_path / "x")
    assert len(server.accepted) == 1


def test_unsupported_scheme_and_relative_file_url(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="unsupported scheme 'ftp'"):
        fetch_source("ftp://127.0.0.1/x.csv", tmp_path)
    with pytest.raises(DataError, match="must be absolute"):
        fetch_source("file://relative/x.csv", tmp_path)


def test_directory_is_not_a_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="is not a file"):
        fetch_source(str(tmp_path), tmp_path)


def _write(tmp_path: Path, frame: pd.DataFrame) -> str:
    path = tmp_path / "d.csv"
    frame.to_csv(path, index=False)
    return str(path)


def _frame() -> pd.DataFrame:
    return original_layout_frame(classes=3, per_class=5, features=2)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda f: f.drop(columns=["# Letter"]), r"target column '# Letter' not found"),
        (lambda f: f.assign(**{" f0/theta": "x"}), r"feature column ' f0/theta' is not numeric"),
        (
            lambda f: f.assign(**{" f1/theta": [np.nan] + [1.0] * (len(f) - 1)}),
            r"' f1/theta' has NaN \(missing\) in data row 1",
        ),
        (
            lambda f: f.assign(**{" f0/theta": [1.0] * (len(f) - 1) + [np.inf]}),
            r"' f0/theta' has inf in data row 15",
        ),
        (lambda f: f.assign(**{"# Letter": 7}), r"has a single class \(7\)"),
        (lambda f: f.iloc[:-2], r"class 3 has 3 row\(s\); add rows or lower folds"),
        (
            lambda f: f.assign(**{"# Letter": [None] + [1] * (len(f) - 1)}),
            r"is empty in data row 1",
        ),
    ],
    ids=["no-target", "non-numeric", "nan", "inf", "one-class", "small-class", "unlabeled"],
)
def test_validation_messages(tmp_path: Path, mutate, message: str) -> None:
    with pytest.raises(DataError, match=message):
        _load(_write(tmp_path, mutate(_frame())))


def test_empty_and_header_only_files(tmp_path: Path) -> None:
    (tmp_path / "empty.csv").write_bytes(b"")
    with pytest.raises(DataError, match=r"is empty \(0 bytes\)"):
        _load(str(tmp_path / "empty.csv"))
    (tmp_path / "header.csv").write_text("Line,# Letter, a\n")
    with pytest.raises(DataError, match="has a header but no rows"):
        _load(str(tmp_path / "header.csv"))


def test_duplicate_column_names_are_reported(tmp_path: Path) -> None:
    (tmp_path / "dup.csv").write_text("Line,# Letter, a, a\n1,1,0.5,0.5\n2,2,0.1,0.2\n")
    with pytest.raises(DataError, match=r"duplicate column name\(s\) \[' a'\]"):
        _load(str(tmp_path / "dup.csv"), folds=2)


def test_drop_columns_must_exist_and_exclude_target(csv_path: Path) -> None:
    with pytest.raises(DataError, match=r"drop_columns \['Id'\] not found"):
        _load(str(csv_path), drop_columns=["Id"])
    with pytest.raises(DataError, match="also in drop_columns"):
        load_dataset(str(csv_path), "# Letter", ["Line", "# Letter"], 5)


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nope\.csv does not exist"):
        _load(str(tmp_path / "nope.csv"))
