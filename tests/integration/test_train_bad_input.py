"""Bad input to the train flow: a clear message naming the problem, and nothing published."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from flows.train import train
from tests.train_helpers import (
    LocalHttpServer,
    StallingServer,
    original_layout_frame,
    published_versions,
)


@pytest.fixture
def destination(tmp_path: Path) -> Path:
    return tmp_path / "store"


def _csv(tmp_path: Path, frame: pd.DataFrame, name: str = "d.csv") -> str:
    path = tmp_path / name
    frame.to_csv(path, index=False)
    return str(path)


def _good() -> pd.DataFrame:
    return original_layout_frame(classes=3, per_class=6, features=3)


def _run_expecting(destination: Path, message: str, **overrides: Any) -> None:
    parameters: dict[str, Any] = {"models": ["lda"], "destination": str(destination)} | overrides
    with pytest.raises(Exception, match=message):
        train(**parameters)
    assert published_versions(destination) == []
    assert not (destination / "default" / "LATEST").exists()


def test_missing_file(prefect_server, tmp_path: Path, destination: Path) -> None:
    _run_expecting(
        destination,
        r"data file .*absent\.csv does not exist; check the path",
        data=str(tmp_path / "absent.csv"),
    )
    # The destination was probed before loading: the probe leaves no experiment folder behind.
    assert destination.exists()
    assert list(destination.iterdir()) == []


def test_http_404(prefect_server, destination: Path) -> None:
    with LocalHttpServer({}) as server:
        _run_expecting(
            destination,
            r"HTTP 404 Not Found; check the URL.*not retried",
            data=server.url("/x.csv"),
        )
    assert len(server.requests) == 1


def test_http_server_that_never_answers(
    prefect_server, destination: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBETRAIN_HTTP_TIMEOUT", "0.5")
    started = time.monotonic()
    with StallingServer() as server:
        _run_expecting(
            destination,
            r"no answer within 0\.5s.*KUBETRAIN_HTTP_TIMEOUT",
            data=server.url(),
        )
    assert len(server.accepted) == 4  # the first attempt and the load-data task's 3 retries
    assert time.monotonic() - started < 90


def test_empty_file(prefect_server, tmp_path: Path, destination: Path) -> None:
    (tmp_path / "empty.csv").write_bytes(b"")
    _run_expecting(
        destination, r"empty\.csv is empty \(0 bytes\)", data=str(tmp_path / "empty.csv")
    )


def test_header_only_file(prefect_server, tmp_path: Path, destination: Path) -> None:
    (tmp_path / "h.csv").write_text("Line,# Letter, f0\n")
    _run_expecting(destination, r"h\.csv has a header but no rows", data=str(tmp_path / "h.csv"))


def test_missing_target_column(prefect_server, tmp_path: Path, destination: Path) -> None:
    data = _csv(tmp_path, _good())
    _run_expecting(
        destination,
        r"target column 'Letter' not found; columns are \['Line', '# Letter'",
        data=data,
        target="Letter",
    )


def test_non_numeric_feature(prefect_server, tmp_path: Path, destination: Path) -> None:
    frame = _good().assign(**{" f1/theta": "abc"})
    _run_expecting(
        destination,
        r"feature column ' f1/theta' is not numeric \(e\.g\. 'abc'\)",
        data=_csv(tmp_path, frame),
    )


@pytest.mark.parametrize(
    ("value", "shown"), [(np.nan, r"NaN \(missing\)"), (np.inf, "inf"), (-np.inf, "-inf")]
)
def test_nan_and_inf_values(
    prefect_server, tmp_path: Path, destination: Path, value: float, shown: str
) -> None:
    frame = _good()
    frame.loc[4, " f2/theta"] = value
    _run_expecting(
        destination,
        rf"feature column ' f2/theta' has {shown} in data row 5",
        data=_csv(tmp_path, frame),
    )


def test_single_class(prefect_server, tmp_path: Path, destination: Path) -> None:
    frame = _good().assign(**{"# Letter": 4})
    _run_expecting(
        destination,
        r"single class \(4\); classification needs at least two",
        data=_csv(tmp_path, frame),
    )


def test_class_with_fewer_rows_than_folds(
    prefect_server, tmp_path: Path, destination: Path
) -> None:
    frame = _good().iloc[:-3]  # class 3 keeps 3 rows
    _run_expecting(
        destination,
        r"folds=5 rows .* class 3 has 3 row\(s\); add rows or lower folds",
        data=_csv(tmp_path, frame),
    )


def test_unknown_model(prefect_server, tmp_path: Path, destination: Path) -> None:
    _run_expecting(
        destination,
        r"(?s)models\.1.*'lda', 'nn', 'logreg', 'rf', 'hgb', 'svc'.*'knn'",
        data=_csv(tmp_path, _good()),
        models=["lda", "xgboost"],
    )


def test_bad_model_params_value(prefect_server, tmp_path: Path, destination: Path) -> None:
    _run_expecting(
        destination,
        r"model_params for 'nn': The 'hidden_layer_sizes' parameter of MLPClassifier must be",
        data=_csv(tmp_path, _good()),
        models=["nn"],
        model_params={"nn": {"hidden_layer_sizes": "wide"}},
    )


def test_bad_model_params_name(prefect_server, tmp_path: Path, destination: Path) -> None:
    _run_expecting(
        destination,
        r"unknown parameter\(s\) n_trees; valid parameters: .*n_estimators",
        data=_csv(tmp_path, _good()),
        models=["rf"],
        model_params={"rf": {"n_trees": 5}},
    )


def test_destination_that_cannot_be_written(prefect_server, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("a file where a folder is needed")
    with pytest.raises(
        Exception,
        match=r"cannot create .*a-file/store.*choose a destination you can write to",
    ):
        train(data=_csv(tmp_path, _good()), models=["lda"], destination=str(blocker / "store"))
    assert blocker.read_text() == "a file where a folder is needed"
    assert published_versions(tmp_path) == []
