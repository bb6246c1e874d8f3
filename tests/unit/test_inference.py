"""kubetrain/inference.py: only verified files in the fetch folder ever reach joblib.load."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

from kubetrain.inference import InferenceError, load_version
from kubetrain.manifest import build_manifest, new_version, write_version_files
from kubetrain.store import open_store
from kubetrain.training.engine import ModelResult


class _RunsCodeWhenLoaded:
    """A pickle payload that creates a marker file when unpickled (what an attacker plants)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.marker), "w"))


def _publish(root: Path) -> tuple[str, Path]:
    X = np.array([[0.0, 1.0], [1.0, 0.0], [0.1, 0.9], [0.9, 0.1]])
    y = np.array([0, 1, 0, 1])
    result = ModelResult(
        name="lda",
        estimator=LinearDiscriminantAnalysis().fit(X, y),
        params={},
        scores={"accuracy": [1.0, 1.0]},
    )
    files = write_version_files({"lda": result}, root / "build")
    version = new_version()
    manifest = build_manifest(
        version=version,
        flow_run_id=None,
        data={
            "source": "x.csv",
            "sha256": "0" * 64,
            "rows": 4,
            "columns": ["a", "b", "y"],
            "target": "y",
        },
        parameters={"drop_columns": [], "normalize": "none"},
        results={"lda": result},
        files=files,
    )
    with open_store(str(root / "store")) as store:
        store.publish("exp", version, files, manifest)
    return version, root / "store" / "exp" / version / "manifest.json"


@pytest.mark.parametrize("planted", ["absolute", "outside", "unlisted"])
def test_model_entries_outside_the_verified_files_are_refused_before_loading(
    tmp_path: Path, planted: str
) -> None:
    version, manifest_path = _publish(tmp_path)
    marker = tmp_path / "code-ran"
    evil = tmp_path / "evil.joblib"
    joblib.dump(_RunsCodeWhenLoaded(marker), evil)
    manifest = json.loads(manifest_path.read_text())
    manifest["models"]["lda"]["file"] = {
        "absolute": str(evil),
        "outside": "../../../evil.joblib",
        "unlisted": "clf_other.joblib",
    }[planted]
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(InferenceError, match=r"model 'lda'.*not one of the version's verified"):
        load_version(str(tmp_path / "store"), "exp", version, tmp_path / "fetch")
    assert not marker.exists()


def test_a_verified_version_loads(tmp_path: Path) -> None:
    version, _ = _publish(tmp_path)
    loaded = load_version(str(tmp_path / "store"), "exp", version, tmp_path / "fetch")
    assert set(loaded.models) == {"lda"}
    assert loaded.models["lda"].predict(np.array([[0.0, 1.0]]))[0] == 0


def test_chunked_prediction_equals_whole_file_prediction(tmp_path: Path) -> None:
    import pandas as pd
    from sklearn.metrics import accuracy_score

    from kubetrain.inference import predict_csv

    version, _ = _publish(tmp_path)
    loaded = load_version(str(tmp_path / "store"), "exp", version, tmp_path / "fetch")
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.random((101, 2)), columns=["a", "b"])
    frame["y"] = (frame["a"] > frame["b"]).astype(int)
    csv_path = tmp_path / "score.csv"
    frame.to_csv(csv_path, index=False)
    run = predict_csv(loaded, csv_path, "score.csv", tmp_path / "out" / "p.csv", chunk_rows=7)
    written = pd.read_csv(run.output)
    expected = loaded.models["lda"].predict(frame[["a", "b"]].to_numpy())
    assert run.rows == 101
    assert written["row"].tolist() == list(range(101))
    assert written["pred_lda"].tolist() == expected.tolist()
    assert run.accuracy == {"lda": accuracy_score(frame["y"], expected)}
    assert len(run.preview) == 20
    assert not list((tmp_path / "out").glob("*.part"))


def test_a_bad_row_in_a_later_chunk_names_its_row_and_leaves_no_file(tmp_path: Path) -> None:
    import pandas as pd

    from kubetrain.inference import predict_csv

    version, _ = _publish(tmp_path)
    loaded = load_version(str(tmp_path / "store"), "exp", version, tmp_path / "fetch")
    frame = pd.DataFrame({"a": [0.1] * 30, "b": [0.2] * 30})
    frame.loc[25, "a"] = float("nan")
    csv_path = tmp_path / "score.csv"
    frame.to_csv(csv_path, index=False)
    with pytest.raises(InferenceError, match=r"'a' is NaN or infinite in data row 26"):
        predict_csv(loaded, csv_path, "score.csv", tmp_path / "out" / "p.csv", chunk_rows=10)
    assert not (tmp_path / "out").exists()


def test_an_output_folder_that_cannot_be_written_is_a_clear_error(tmp_path: Path) -> None:
    from kubetrain.inference import predict_csv

    version, _ = _publish(tmp_path)
    loaded = load_version(str(tmp_path / "store"), "exp", version, tmp_path / "fetch")
    csv_path = tmp_path / "score.csv"
    csv_path.write_text("a,b\n0.1,0.2\n")
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(InferenceError, match=r"cannot write predictions to .*a-file/out.*choose"):
        predict_csv(loaded, csv_path, "score.csv", blocker / "out" / "p.csv")
