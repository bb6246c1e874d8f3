"""Data error messages that surviving mutants showed unasserted: which failure each file gets,
and the bounds that keep a message short whatever the input (issue: values quoted in messages
are truncated)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kubetrain.data import DataError, read_csv, read_csv_chunks, validate_frame


def _read_all(path: Path, chunked: bool) -> object:
    return list(read_csv_chunks(path, "d.csv", 10)) if chunked else read_csv(path, "d.csv")


@pytest.mark.parametrize("chunked", [False, True], ids=["read_csv", "read_csv_chunks"])
@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", r"^data d\.csv is empty \(0 bytes\); expected a CSV with a header row$"),
        (b"\n", r"^data d\.csv has no columns; expected a CSV with a header$"),
        (b"a,b\n1,2\n3,4,5,6\n", r"^data d\.csv is not a readable CSV: Error tokenizing data"),
    ],
    ids=["0-bytes", "1-byte-newline", "ragged-row"],
)
def test_each_unreadable_file_gets_its_own_message(
    tmp_path: Path, content: bytes, message: str, chunked: bool
) -> None:
    path = tmp_path / "d.csv"
    path.write_bytes(content)
    with pytest.raises(DataError, match=message):
        _read_all(path, chunked)


def _validate(frame: pd.DataFrame, **kwargs: object) -> None:
    options: dict = {"target": "y", "drop_columns": [], "folds": 2, "source": "d.csv"}
    options.update(kwargs)
    validate_frame(frame, sha256="0" * 64, **options)


def test_a_long_class_label_is_quoted_truncated_at_60_characters() -> None:
    label = "c" * 100
    frame = pd.DataFrame({"x": [1.0, 2.0], "y": [label, label]})
    with pytest.raises(DataError) as raised:
        _validate(frame)
    assert "single class ('" + "c" * 58 + "…(+" in str(raised.value)


def test_column_lists_show_twenty_names_then_how_many_more() -> None:
    twenty = {f"col{i:02d}": [1.0] for i in range(20)}
    with pytest.raises(DataError) as raised:
        _validate(pd.DataFrame(twenty))
    listed = ", ".join(f"'col{i:02d}'" for i in range(20))
    assert f"columns are [{listed}]. Set target" in str(raised.value)  # all 20, nothing more

    with pytest.raises(DataError) as raised:
        _validate(pd.DataFrame({**twenty, "col20": [1.0], "col21": [1.0], "col22": [1.0]}))
    assert f"columns are [{listed}, … 3 more]. Set target" in str(raised.value)


def test_each_listed_column_name_is_truncated_at_60_characters() -> None:
    name = "n" * 100
    with pytest.raises(DataError) as raised:
        _validate(pd.DataFrame({name: [1.0]}))
    assert "columns are ['" + "n" * 58 + "…(+" in str(raised.value)


def test_a_long_parser_error_is_cut_at_300_characters(tmp_path: Path) -> None:
    from kubetrain.data import _short

    shown = _short(ValueError("e" * 1000))
    assert shown.startswith("e" * 298 + "…(+")
    assert len(shown) < 320


def test_shape_errors_of_load_dataset_name_the_data_it_was_given(tmp_path: Path) -> None:
    from kubetrain.data import load_dataset

    path = tmp_path / "wide.csv"
    path.write_text("a,b,c,y\n1,2,3,p\n")
    with pytest.raises(DataError, match=rf"^data {re.escape(str(path))} "):
        load_dataset(str(path), "y", [], 2, max_columns=2)


@pytest.mark.parametrize(
    ("path", "saved_as"),
    [("/dir/my%20data.csv", "my data.csv"), ("/", "data.csv")],
)
def test_an_http_source_is_saved_in_the_workdir_under_its_own_name(
    tmp_path: Path, path: str, saved_as: str
) -> None:
    from kubetrain.data import fetch_source
    from tests.train_helpers import LocalHttpServer

    with LocalHttpServer({path: b"a,y\n1,p\n"}) as server:
        local = fetch_source(server.url(path), tmp_path)
    assert local == tmp_path / saved_as
    assert local.read_bytes() == b"a,y\n1,p\n"


def test_an_sftp_source_is_downloaded_into_the_workdir_within_the_size_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The SFTP download itself is tested against a real sshd (tests/integration); here only
    # what fetch_source asks of it.
    import kubetrain.store.sftp
    from kubetrain.data import fetch_source

    calls: list[tuple[str, Path, int]] = []

    def download_file(url: str, target: Path, *, max_bytes: int) -> None:
        calls.append((url, target, max_bytes))
        target.write_bytes(b"a,y\n1,p\n")

    monkeypatch.setattr(kubetrain.store.sftp, "download_file", download_file)
    monkeypatch.setenv("KUBETRAIN_MAX_DOWNLOAD_BYTES", "12345")
    url = "sftp://user@store.example/srv/sets/train.csv"
    assert fetch_source(url, tmp_path) == tmp_path / "train.csv"
    assert calls == [(url, tmp_path / "train.csv", 12345)]


def test_an_unsupported_source_is_called_data_in_the_message(tmp_path: Path) -> None:
    from kubetrain.data import fetch_source

    with pytest.raises(DataError, match=r"^data 'ftp://host/x\.csv': unsupported scheme 'ftp'"):
        fetch_source("ftp://host/x.csv", tmp_path)


@pytest.mark.parametrize(
    ("frame", "kwargs", "message"),
    [
        (
            pd.DataFrame({"x": [1.0, 2.0], "y": ["a", "b"]}),
            {"drop_columns": ["y"]},
            r"^data d\.csv: the target 'y' is also in drop_columns$",
        ),
        (
            pd.DataFrame({"x": [1.0, 2.0], "y": ["a", "b"]}),
            {"drop_columns": ["x"]},
            r"^data d\.csv: no feature columns left after dropping \['x'\]$",
        ),
        (
            pd.DataFrame({"x": [1.0, 2.0], "y": ["a", None]}),
            {},
            r"is empty in data row 2; fill or drop unlabeled rows$",
        ),
        (
            pd.DataFrame({"x": ["1", "2", "x"], "y": ["a", "b", "a"]}),
            {},
            r"^data d\.csv: feature column 'x' is not numeric \(e\.g\. 'x'\); encode it",
        ),
        (
            pd.DataFrame({"x": [1.0, float("inf")], "y": ["a", "b"]}),
            {},
            r"has inf in data row 2 \(1 non-finite value\(s\) in total\); impute or drop those "
            r"rows$",
        ),
        (
            pd.DataFrame({"x": [1.0, 2.0], "y": ["a", "a"]}),
            {},
            r"has a single class \('a'\); classification needs at least two$",
        ),
    ],
    ids=["target-dropped", "nothing-left", "unlabeled", "non-numeric", "inf", "one-class"],
)
def test_each_validation_failure_names_problem_and_fix(
    frame: pd.DataFrame, kwargs: dict, message: str
) -> None:
    with pytest.raises(DataError, match=message):
        _validate(frame, **kwargs)


def test_integer_features_become_float64() -> None:
    frame = pd.DataFrame({"x": [1, 2, 3, 4], "y": ["a", "b", "a", "b"]})
    dataset = validate_frame(
        frame, target="y", drop_columns=[], folds=2, source="d.csv", sha256="0" * 64
    )
    assert dataset.X.dtype == np.float64


def test_at_most_ten_small_classes_are_listed() -> None:
    labels = [f"c{i:02d}" for i in range(12)] + ["big"] * 5
    frame = pd.DataFrame({"x": [float(i) for i in range(len(labels))], "y": labels})
    with pytest.raises(DataError) as raised:
        _validate(frame, folds=3)
    message = str(raised.value)
    assert "'c09' has 1" in message
    assert "'c10'" not in message


@pytest.mark.parametrize(
    ("files", "available"),
    [
        ({"memory.max": "1000000", "memory.current": "400000"}, 600_000),
        ({"memory.max": "1000", "memory.current": "4000"}, 0),  # over the limit already
        ({"memory.max": "max", "memory.current": "400000"}, 2048 * 1024),  # no v2 limit
        ({"memory/memory.limit_in_bytes": "5000", "memory/memory.usage_in_bytes": "1000"}, 4000),
        (
            {"memory/memory.limit_in_bytes": str(1 << 60), "memory/memory.usage_in_bytes": "1"},
            2048 * 1024,  # v1 reports "no limit" as a huge number
        ),
        ({}, 2048 * 1024),  # no cgroup files at all
    ],
    ids=["v2", "v2-over", "v2-max", "v1", "v1-unlimited", "none"],
)
def test_memory_available_reads_the_cgroup_limit_else_memavailable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, files: dict[str, str], available: int
) -> None:
    # A stand-in /sys/fs/cgroup and /proc/meminfo: this machine sets no cgroup memory limit.
    import kubetrain.data

    for name, content in files.items():
        path = tmp_path / "sys/fs/cgroup" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content + "\n")
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc/meminfo").write_text("MemTotal: 9999 kB\nMemAvailable: 2048 kB\n")
    monkeypatch.setattr(kubetrain.data, "Path", lambda p: tmp_path / str(p).lstrip("/"))
    assert kubetrain.data.memory_available() == available
