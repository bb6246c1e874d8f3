"""predict_csv behaviour that surviving mutants showed unasserted: the fingerprint it returns,
the hidden .part file it writes through, nested output folders, preprocessing, a streamed file
not being refused for memory, and messages that name the scored file."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import kubetrain.data
from kubetrain.data import DataError
from kubetrain.inference import InferenceError, LoadedVersion, feature_matrix, predict_csv
from kubetrain.store import sha256_file


class Recorder:
    """A model that predicts the sign of the first feature and records what it was given."""

    def __init__(self, output: Path) -> None:
        self.output = output
        self.inputs: list[np.ndarray] = []
        self.listings: list[list[str]] = []

    def predict(self, X: np.ndarray) -> np.ndarray:
        self.inputs.append(X.copy())
        self.listings.append(sorted(p.name for p in self.output.parent.iterdir()))
        return np.where(X[:, 0] > 0, "pos", "neg")


def _version(model: Recorder, normalize: str = "none") -> LoadedVersion:
    return LoadedVersion(
        version="v1",
        manifest={},
        models={"rec": model},
        features=["a", "b"],
        target="y",
        normalize=normalize,
    )


def _csv(tmp_path: Path, rows: str = "3,4,pos\n-1,0,neg\n") -> Path:
    path = tmp_path / "score.csv"
    path.write_text("a,b,y\n" + rows)
    return path


def test_predictions_are_written_through_a_hidden_part_file(tmp_path: Path) -> None:
    output = tmp_path / "out" / "predictions.csv"
    (tmp_path / "out").mkdir()
    model = Recorder(output)
    run = predict_csv(_version(model), _csv(tmp_path), "score.csv", output)
    (during,) = model.listings
    assert len(during) == 1, during
    assert re.fullmatch(r"\.predictions\.csv\..+\.part", during[0]), during
    assert sorted(p.name for p in output.parent.iterdir()) == ["predictions.csv"]
    assert (run.output, run.rows, run.accuracy) == (output, 2, {"rec": 1.0})


def test_the_run_carries_the_scored_files_sha256(tmp_path: Path) -> None:
    path = _csv(tmp_path)
    output = tmp_path / "p.csv"
    assert predict_csv(_version(Recorder(output)), path, "s", output).data_sha256 == sha256_file(
        path
    )


def test_missing_output_folders_are_created(tmp_path: Path) -> None:
    output = tmp_path / "new" / "deeper" / "p.csv"
    predict_csv(_version(Recorder(output)), _csv(tmp_path), "s", output)
    assert output.is_file()


def test_the_part_file_is_staged_in_the_output_folder_not_the_temp_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "no-such-temp-dir"))
    output = tmp_path / "p.csv"
    predict_csv(_version(Recorder(output)), _csv(tmp_path), "s", output)
    assert output.is_file()


def test_l2_normalization_is_applied_before_predicting(tmp_path: Path) -> None:
    output = tmp_path / "p.csv"
    model = Recorder(output)
    predict_csv(_version(model, normalize="l2"), _csv(tmp_path), "s", output)
    np.testing.assert_allclose(model.inputs[0], [[0.6, 0.8], [-1.0, 0.0]])


def test_a_file_larger_than_free_memory_is_still_scored_streaming(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(kubetrain.data, "memory_available", lambda: 1)  # one byte free
    path = _csv(tmp_path)
    output = tmp_path / "p.csv"
    assert predict_csv(_version(Recorder(output)), path, "s", output).rows == 2
    with pytest.raises(DataError, match="needs about"):  # loading it whole would be refused
        kubetrain.data.preflight_csv(path, "s", max_columns=10, max_line_bytes=1000)


def test_an_unwritable_output_folder_says_what_to_do(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    output = tmp_path / "file" / "p.csv"
    with pytest.raises(InferenceError) as raised:
        predict_csv(_version(Recorder(output)), _csv(tmp_path), "s", output)
    assert str(raised.value).endswith("; choose an output folder you can write to")


@pytest.mark.parametrize(
    ("rows", "error", "message"),
    [
        ("1,2,pos\n3,4,5,6\n", DataError, r"^data scored\.csv is not a readable CSV"),
        ("1,,pos\n", InferenceError, r"^data scored\.csv: feature column 'b' is NaN"),
        ("1,x,pos\n", InferenceError, r"^data scored\.csv: feature column 'b' is not numeric"),
    ],
)
def test_errors_name_the_scored_file(
    tmp_path: Path, rows: str, error: type[Exception], message: str
) -> None:
    output = tmp_path / "p.csv"
    with pytest.raises(error, match=message):
        predict_csv(_version(Recorder(output)), _csv(tmp_path, rows), "scored.csv", output)
    assert not output.exists()


def test_feature_matrix_is_float64_even_for_integer_columns() -> None:
    X = feature_matrix(pd.DataFrame({"a": [1, 2], "b": [3, 4]}), ["a", "b"], "s.csv")
    assert X.dtype == np.float64


def test_a_non_numeric_feature_message_says_how_to_fix_it() -> None:
    with pytest.raises(InferenceError) as raised:
        feature_matrix(pd.DataFrame({"a": ["x"]}), ["a"], "s.csv")
    assert str(raised.value).endswith("is not numeric; encode it as the training data did")


def test_a_header_only_file_is_refused_and_writes_nothing(tmp_path: Path) -> None:
    output = tmp_path / "out" / "p.csv"
    with pytest.raises(InferenceError, match=r"^data s has a header but no rows; nothing to"):
        predict_csv(_version(Recorder(output)), _csv(tmp_path, rows=""), "s", output)
    assert not (tmp_path / "out").exists()


def test_a_single_row_without_a_target_column_is_scored_without_accuracy(tmp_path: Path) -> None:
    path = tmp_path / "one.csv"
    path.write_text("a,b\n3,4\n")
    output = tmp_path / "p.csv"
    run = predict_csv(_version(Recorder(output)), path, "s", output)
    assert (run.rows, run.accuracy) == (1, None)


def test_shape_errors_of_the_scored_file_name_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBETRAIN_MAX_COLUMNS", "2")
    output = tmp_path / "p.csv"
    with pytest.raises(DataError, match=r"^data scored\.csv has 3 columns, more than"):
        predict_csv(_version(Recorder(output)), _csv(tmp_path), "scored.csv", output)
