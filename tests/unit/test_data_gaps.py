"""Gaps issue #17 named in kubetrain/data.py: the folds boundary and which HTTP statuses retry."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from kubetrain.data import DataError, TransientFetchError, fetch_http, validate_frame
from kubetrain.errors import is_transient
from tests.train_helpers import LocalHttpServer


def _frame(rows_per_class: dict[str, int]) -> pd.DataFrame:
    labels = [label for label, n in rows_per_class.items() for _ in range(n)]
    return pd.DataFrame(
        {"f": [float(i) for i in range(len(labels))], "g": [0.5] * len(labels), "y": labels}
    )


def _validate(frame: pd.DataFrame, folds: int) -> object:
    return validate_frame(
        frame, target="y", drop_columns=[], folds=folds, source="d.csv", sha256="ab"
    )


@pytest.mark.parametrize("folds", [2, 3, 5])
def test_a_class_with_exactly_folds_rows_is_accepted(folds: int) -> None:
    dataset = _validate(_frame({"a": folds, "b": folds + 4}), folds)
    assert dataset.class_counts == {"a": folds, "b": folds + 4}  # type: ignore[attr-defined]
    assert dataset.rows == 2 * folds + 4  # type: ignore[attr-defined]


@pytest.mark.parametrize("folds", [2, 3, 5])
def test_a_class_with_folds_minus_one_rows_is_refused(folds: int) -> None:
    small = folds - 1
    with pytest.raises(
        DataError,
        match=rf"every class needs at least folds={folds} rows .* class 'a' has {small} "
        rf"row\(s\); add rows or lower folds \(smallest class: {small}\)",
    ):
        _validate(_frame({"a": small, "b": folds + 4}), folds)


def test_the_smallest_of_several_small_classes_is_named() -> None:
    with pytest.raises(DataError, match=r"'a' has 3, 'b' has 2 row.*\(smallest class: 2\)"):
        _validate(_frame({"a": 3, "b": 2, "c": 9}), 4)


@pytest.mark.parametrize("folds", [1, 0, -1])
def test_fewer_than_two_folds_are_refused(folds: int) -> None:
    with pytest.raises(DataError, match=rf"folds={folds}: cross-validation needs at least 2"):
        _validate(_frame({"a": 5, "b": 5}), folds)


def test_the_dataset_carries_features_labels_and_fingerprint() -> None:
    frame = _frame({"a": 2, "b": 2})
    dataset = validate_frame(
        frame, target="y", drop_columns=["g"], folds=2, source="d.csv", sha256="cafe"
    )
    assert dataset.feature_names == ["f"]
    assert dataset.X.tolist() == [[0.0], [1.0], [2.0], [3.0]]
    assert dataset.y.tolist() == ["a", "a", "b", "b"]
    assert (dataset.target, dataset.source, dataset.sha256) == ("y", "d.csv", "cafe")
    assert dataset.columns == ["f", "g", "y"]


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
def test_timeouts_throttling_and_5xx_are_transient_and_retried(tmp_path: Path, status: int) -> None:
    from prefect.states import Failed

    from tasks.data import load_data
    from tasks.retries import retry_transient

    with (
        LocalHttpServer({"/d.csv": b"a,b\n1,2\n"}, fail_first=1, fail_status=status) as server,
        pytest.raises(TransientFetchError, match=rf"HTTP {status}") as caught,
    ):
        fetch_http(server.url("/d.csv"), tmp_path / "d.csv", timeout=5)
    assert not (tmp_path / "d.csv").exists()
    assert is_transient(caught.value)
    assert retry_transient(load_data, None, Failed(data=caught.value)) is True
    assert load_data.retry_condition_fn is retry_transient
    assert load_data.retries >= 1


@pytest.mark.parametrize("status", [400, 401, 403, 404, 410])
def test_other_4xx_are_user_errors_and_not_retried(tmp_path: Path, status: int) -> None:
    from prefect.states import Failed

    from tasks.data import load_data
    from tasks.retries import retry_transient

    with (
        LocalHttpServer({"/d.csv": b"a,b\n1,2\n"}, fail_first=1, fail_status=status) as server,
        pytest.raises(DataError, match=rf"HTTP {status} .*not retried") as caught,
    ):
        fetch_http(server.url("/d.csv"), tmp_path / "d.csv", timeout=5)
    assert not (tmp_path / "d.csv").exists()
    assert retry_transient(load_data, None, Failed(data=caught.value)) is False


# --- what mutation testing found untested in kubetrain/data.py and training/engine.py ---------


def test_describe_is_the_manifest_data_section() -> None:
    from kubetrain.data import describe

    dataset = validate_frame(
        _frame({"a": 2, "b": 3}), target="y", drop_columns=[], folds=2, source="s", sha256="ff"
    )
    assert describe(dataset) == {
        "source": "s",
        "sha256": "ff",
        "rows": 5,
        "columns": ["f", "g", "y"],
        "target": "y",
        "features": 2,
        "classes": {"a": 2, "b": 3},
    }


def test_the_bundled_sample_resolves_from_any_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kubetrain.data import SAMPLE_DATA, resolve_sample

    monkeypatch.chdir(tmp_path)
    resolved = Path(resolve_sample(SAMPLE_DATA))
    assert resolved.is_absolute()
    assert resolved.is_file()
    assert resolved.parts[-2:] == ("data", "sample_letters.csv")
    assert resolve_sample("other.csv") == "other.csv"
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "sample_letters.csv").write_text("a,b\n")
    assert resolve_sample(SAMPLE_DATA) == SAMPLE_DATA  # a local file of that name wins


def test_a_download_over_the_limit_names_the_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBETRAIN_MAX_DOWNLOAD_BYTES", "10")
    with (
        LocalHttpServer({"/d.csv": b"a,b\n" + b"1,2\n" * 10}) as server,
        pytest.raises(
            DataError,
            match=r"larger than KUBETRAIN_MAX_DOWNLOAD_BYTES=10; raise that limit if the data",
        ),
    ):
        fetch_http(server.url("/d.csv"), tmp_path / "d.csv", timeout=5)
    assert not (tmp_path / "d.csv").exists()


def test_an_unreadable_csv_quotes_the_parser_error(tmp_path: Path) -> None:
    from kubetrain.data import read_csv

    path = tmp_path / "bad.csv"
    path.write_text('a,b\n1,2\n3,"4\n')  # unterminated quote
    with pytest.raises(DataError, match=r"^data bad\.csv is not a readable CSV: Error tokenizing"):
        read_csv(path, "bad.csv")


def test_train_workers_setting_wins_over_the_cpu_count(monkeypatch: pytest.MonkeyPatch) -> None:
    from joblib import cpu_count

    from kubetrain.training.engine import default_workers

    monkeypatch.setenv("KUBETRAIN_TRAIN_WORKERS", "7")
    assert default_workers() == 7
    monkeypatch.delenv("KUBETRAIN_TRAIN_WORKERS")
    assert default_workers() == max(1, cpu_count())


def test_one_cpu_means_one_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    import joblib

    from kubetrain.training.engine import default_workers

    monkeypatch.delenv("KUBETRAIN_TRAIN_WORKERS", raising=False)
    monkeypatch.setattr(joblib, "cpu_count", lambda: 1)
    assert default_workers() == 1
