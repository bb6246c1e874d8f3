"""Predict refuses NaN and infinite features instead of scoring them silently (issue #17).

HistGradientBoosting accepts NaN at predict time (it routes missing values down a learned
branch), so without kubetrain's own check a CSV with holes would be scored without a word.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier

from kubetrain.inference import InferenceError, LoadedVersion, feature_matrix, predict_csv


def _hgb_version() -> LoadedVersion:
    rng = np.random.default_rng(1)
    X = rng.random((60, 2))
    y = (X[:, 0] > X[:, 1]).astype(int)
    model = HistGradientBoostingClassifier(max_iter=5, random_state=0).fit(X, y)
    return LoadedVersion(
        version="v",
        manifest={},
        models={"hgb": model},
        features=["a", "b"],
        target="y",
        normalize="none",
    )


def test_hgb_itself_would_score_nan_silently() -> None:
    # The premise of the tests below: the model does not protect us, kubetrain must.
    model = _hgb_version().models["hgb"]
    assert len(model.predict(np.array([[np.nan, 0.5]]))) == 1


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_feature_matrix_refuses_non_finite_values_naming_column_and_row(bad: float) -> None:
    frame = pd.DataFrame({"a": [0.1, 0.2, 0.3], "b": [0.5, 0.6, 0.7], "extra": [1, 2, 3]})
    frame.loc[2, "b"] = bad
    with pytest.raises(InferenceError, match=r"data s\.csv: feature column 'b' .* data row 13;"):
        feature_matrix(frame, ["a", "b"], "s.csv", first_row=10)


def test_feature_matrix_keeps_training_order_and_ignores_other_columns() -> None:
    frame = pd.DataFrame({"b": [2.0, 4.0], "y": ["x", "z"], "a": [1, 3]})
    X = feature_matrix(frame, ["a", "b"], "s.csv")
    assert X.dtype == np.float64
    np.testing.assert_array_equal(X, [[1.0, 2.0], [3.0, 4.0]])


def test_feature_matrix_names_missing_and_non_numeric_columns() -> None:
    frame = pd.DataFrame({"a": ["x", "y"], "c": [1, 2]})
    with pytest.raises(InferenceError, match=r"1 feature column\(s\) .* missing, e\.g\. \['b'\]"):
        feature_matrix(frame, ["a", "b"], "s.csv")
    with pytest.raises(InferenceError, match=r"feature column 'a' is not numeric"):
        feature_matrix(frame, ["a", "c"], "s.csv")


@pytest.mark.parametrize("bad", ["", "inf", "-inf", "nan"])
def test_predict_csv_with_hgb_refuses_a_hole_and_writes_nothing(tmp_path: Path, bad: str) -> None:
    rows = ["a,b,y", *(f"0.{i},0.5,1" for i in range(1, 9))]
    rows[6] = f"{bad},0.5,1"  # data row 6
    csv_path = tmp_path / "score.csv"
    csv_path.write_text("\n".join(rows) + "\n")
    out = tmp_path / "out" / "p.csv"
    with pytest.raises(InferenceError, match=r"'a' is NaN or infinite in data row 6;"):
        predict_csv(_hgb_version(), csv_path, "score.csv", out, chunk_rows=4)
    assert not out.exists()
    assert not (tmp_path / "out").exists()


def test_predict_csv_with_hgb_scores_a_clean_file(tmp_path: Path) -> None:
    loaded = _hgb_version()
    frame = pd.DataFrame({"a": [0.9, 0.1, 0.8], "b": [0.1, 0.9, 0.2], "y": [1, 0, 0]})
    csv_path = tmp_path / "score.csv"
    frame.to_csv(csv_path, index=False)
    run = predict_csv(loaded, csv_path, "score.csv", tmp_path / "p.csv", chunk_rows=2)
    expected = loaded.models["hgb"].predict(frame[["a", "b"]].to_numpy())
    written = pd.read_csv(run.output)
    assert written.columns.tolist() == ["row", "y", "pred_hgb"]
    assert written["pred_hgb"].tolist() == expected.tolist()
    assert written["y"].tolist() == [1, 0, 0]
    assert run.rows == 3
    assert run.accuracy == {"hgb": float(np.mean(expected == [1, 0, 0]))}


# --- what mutation testing found untested in kubetrain/inference.py ---------------------------


def _publish(root: Path, parameters: dict[str, object], marker: float, day: int = 1) -> str:
    """Publish an LDA version whose predictions reveal which version it is (marker shifts X)."""
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    from kubetrain.manifest import build_manifest, new_version, write_version_files
    from kubetrain.store import open_store
    from kubetrain.training.engine import ModelResult

    X = np.array([[0.0, 1.0], [1.0, 0.0], [0.1, 0.9], [0.9, 0.1]]) + marker
    y = np.array([0, 1, 0, 1])
    result = ModelResult("lda", LinearDiscriminantAnalysis().fit(X, y), {}, {"accuracy": [1.0]})
    version = new_version(datetime(2026, 1, day, tzinfo=UTC))  # later day: sorts later
    files = write_version_files({"lda": result}, root / f"build-{version}")
    manifest = build_manifest(
        version=version,
        flow_run_id=None,
        data={"source": "x.csv", "sha256": "0" * 64, "rows": 4, "columns": ["a", "b", "y"]}
        | {"target": "y"},
        parameters=parameters,
        results={"lda": result},
        files=files,
    )
    with open_store(str(root / "store")) as store:
        store.publish("exp", version, files, manifest)
    return version


def test_load_version_loads_the_named_version_not_latest(tmp_path: Path) -> None:
    from kubetrain.inference import load_version

    old = _publish(tmp_path, {"normalize": "l2"}, marker=0.0)
    new = _publish(tmp_path, {}, marker=100.0, day=2)
    loaded = load_version(str(tmp_path / "store"), "exp", old, tmp_path / "fetch")
    assert loaded.version == old
    assert loaded.manifest["version"] == old
    assert loaded.normalize == "l2"
    assert loaded.features == ["a", "b"]
    assert loaded.target == "y"
    latest = load_version(str(tmp_path / "store"), "exp", None, tmp_path / "fetch2")
    assert (latest.version, latest.normalize) == (new, "none")  # normalize absent: none
    probe = np.array([[0.95, 0.05]])
    assert loaded.models["lda"].predict(probe)[0] == 1  # the old model, not the new one
    assert latest.models["lda"].predict(probe + 100.0)[0] == 1


def test_load_version_verifies_checksums_before_loading(tmp_path: Path) -> None:
    from kubetrain.inference import load_version
    from kubetrain.store import StoreError

    version = _publish(tmp_path, {}, marker=0.0)
    model = tmp_path / "store" / "exp" / version / "clf_lda.joblib"
    model.write_bytes(model.read_bytes() + b"tampered")
    with pytest.raises(StoreError, match="sha256"):
        load_version(str(tmp_path / "store"), "exp", version, tmp_path / "fetch")


def test_features_are_the_columns_less_target_and_dropped_ones() -> None:
    from kubetrain.inference import features_of

    manifest = {
        "data": {"columns": ["id", "a", "y", "b", "note"], "target": "y"},
        "parameters": {"drop_columns": ["id", "note"]},
    }
    assert features_of(manifest) == ["a", "b"]
    assert features_of(manifest | {"parameters": {}}) == ["id", "a", "b", "note"]


def _folder_with(tmp_path: Path, name: str, listed: bool, exists: bool) -> dict[str, object]:
    folder = tmp_path / "v"
    folder.mkdir()
    if exists:
        (folder / name).write_bytes(b"model")
    files = {name: {"sha256": "0" * 64, "bytes": 5}} if listed else {}
    return {"models": {"lda": {"file": name}}, "files": files}


@pytest.mark.parametrize(
    ("name", "listed", "exists"),
    [
        ("clf_lda.joblib", False, True),  # present in the folder but not a verified file
        ("clf_lda.joblib", True, False),  # verified name, but no such file
        (".clf_lda.joblib", True, True),  # listed and present, but not a valid file name
    ],
)
def test_verified_model_path_needs_a_valid_listed_existing_file(
    tmp_path: Path, name: str, listed: bool, exists: bool
) -> None:
    from kubetrain.inference import verified_model_path

    manifest = _folder_with(tmp_path, name, listed, exists)
    with pytest.raises(InferenceError, match=rf"model 'lda' names file '{name}', which is not"):
        verified_model_path(tmp_path / "v", manifest, "lda")


def test_verified_model_path_refuses_a_model_entry_that_is_not_a_mapping(tmp_path: Path) -> None:
    from kubetrain.inference import verified_model_path

    manifest = _folder_with(tmp_path, "clf_lda.joblib", True, True)
    manifest["models"] = {"lda": "clf_lda.joblib"}
    with pytest.raises(InferenceError, match=r"model 'lda' names file None"):
        verified_model_path(tmp_path / "v", manifest, "lda")
    manifest["models"] = {"lda": {"file": "clf_lda.joblib"}}
    assert verified_model_path(tmp_path / "v", manifest, "lda") == tmp_path / "v" / "clf_lda.joblib"


def test_feature_matrix_counts_rows_from_one_without_an_offset() -> None:
    frame = pd.DataFrame({"a": [0.1, np.nan]})
    with pytest.raises(InferenceError, match=r"'a' is NaN or infinite in data row 2;"):
        feature_matrix(frame, ["a"], "s.csv")


def test_missing_feature_list_shows_five_names_each_truncated() -> None:
    long_name = "f" * 100
    wanted = [long_name, "b", "c", "d", "e", "g", "h"]
    with pytest.raises(InferenceError) as raised:
        feature_matrix(pd.DataFrame({"x": [1.0]}), wanted, "s.csv")
    message = str(raised.value)
    assert "7 feature column(s) the models were trained on are missing" in message
    assert "e.g. ['" + "f" * 58 + "…(+" in message  # the name, cut at 60 characters
    assert " chars), 'b', 'c', 'd', 'e']; score a CSV" in message  # then four more, not h or g
