"""kubetrain/manifest.py: file names, metadata.json, cv_results.csv, manifest fields, versions."""

from __future__ import annotations

import csv
import hashlib
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

from kubetrain.manifest import build_manifest, new_version, write_version_files
from kubetrain.training.engine import ModelResult
from tests.prefect_api import http

VERSION = re.compile(r"^\d{8}T\d{6}Z-[0-9a-f]{8}$")


@pytest.fixture
def results() -> dict[str, ModelResult]:
    X = np.array([[0.0, 1.0], [1.0, 0.0], [0.1, 0.9], [0.9, 0.2]])
    y = np.array([1, 2, 1, 2])
    lda = LinearDiscriminantAnalysis().fit(X, y)
    return {
        "lda": ModelResult(
            name="lda",
            estimator=lda,
            params={"solver": "svd"},
            # Asymmetric folds: mean != median != any fold, so a wrong statistic cannot pass.
            scores={"accuracy": [0.5, 1.0, 0.6], "f1_macro": [0.4, 1.0, 0.55]},
        )
    }


def test_version_names_are_utc_sortable_and_unique() -> None:
    earlier = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    names = [new_version(earlier), new_version(earlier + timedelta(seconds=1))]
    assert all(VERSION.fullmatch(n) for n in names)
    assert names[0].startswith("20260102T030405Z-")
    assert names == sorted(names)
    assert len({new_version(earlier) for _ in range(200)}) == 200


def test_serialize_writes_the_originals_files(tmp_path: Path, results) -> None:
    files = write_version_files(results, tmp_path)
    assert set(files) == {"clf_lda.joblib", "metadata.json", "cv_results.csv"}
    assert json.loads((tmp_path / "metadata.json").read_text()) == {
        "train_accuracy_lda": pytest.approx(0.7, rel=1e-12)  # (0.5 + 1.0 + 0.6) / 3
    }
    loaded = joblib.load(files["clf_lda.joblib"])
    np.testing.assert_array_equal(loaded.coef_, results["lda"].estimator.coef_)
    with files["cv_results.csv"].open() as stream:
        rows = list(csv.DictReader(stream))
    assert len(rows) == 1 * 3 * 2  # models, folds, metrics
    assert rows[0] == {"model": "lda", "fold": "0", "metric": "accuracy", "score": "0.5"}
    assert [float(r["score"]) for r in rows if r["metric"] == "f1_macro"] == [0.4, 1.0, 0.55]


def test_manifest_has_every_contract_field(tmp_path: Path, results) -> None:
    files = write_version_files(results, tmp_path)
    parameters = {"data": "x.csv", "models": ["lda"], "folds": 3}
    manifest = build_manifest(
        version="20260102T030405Z-0123abcd",
        flow_run_id="run-1",
        data={"source": "x.csv", "sha256": "ab", "rows": 4, "columns": ["a"], "target": "t"},
        parameters=parameters,
        results=results,
        files=files,
    )
    assert {
        "version",
        "created",
        "flow_run_id",
        "data",
        "parameters",
        "models",
        "environment",
        "files",
    } <= set(manifest)
    assert datetime.fromisoformat(manifest["created"]).utcoffset() == timedelta(0)
    assert manifest["parameters"] == parameters
    model = manifest["models"]["lda"]
    assert model["file"] == "clf_lda.joblib"
    digest = hashlib.sha256((tmp_path / "clf_lda.joblib").read_bytes()).hexdigest()
    assert model["sha256"] == digest
    assert model["bytes"] == (tmp_path / "clf_lda.joblib").stat().st_size
    # Written out by hand: population std sqrt((0.04 + 0.09 + 0.01) / 3), not the sample std.
    assert model["cv"]["accuracy"] == {
        "folds": [0.5, 1.0, 0.6],
        "mean": pytest.approx(0.7, rel=1e-12),
        "std": pytest.approx(0.21602468994692867, rel=1e-12),
    }
    assert model["cv"]["f1_macro"]["mean"] == pytest.approx(0.65, rel=1e-12)
    for name, path in files.items():
        assert manifest["files"][name] == {
            "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            "bytes": path.stat().st_size,
        }
    assert "manifest.json" not in manifest["files"]
    assert set(manifest["environment"]) >= {"python", "sklearn", "numpy", "pandas", "joblib"}
    json.dumps(manifest)


def test_artifact_keys_are_valid_and_distinct_per_experiment() -> None:
    from prefect.artifacts import Artifact

    from kubetrain.report import artifact_key

    names = ["letters", "Letters", "my_exp", "my-exp", "v1.2", "9"]
    keys = [artifact_key(name, "cv-results") for name in names]
    assert keys[0] == "letters-cv-results"
    assert len(set(keys)) == len(keys)
    for key in keys:
        assert re.fullmatch(r"[a-z0-9-]+", key), key
        Artifact(key=key, type="markdown", data="x")  # Prefect's own key validation


def test_version_markdown_survives_markdown_rendering(tmp_path: Path, results) -> None:
    """No bare angle brackets or underscores a renderer could eat; parameters as JSON."""
    from kubetrain.plots import write_plots
    from kubetrain.report import version_markdown

    results["lda"].oof_predictions = np.array([1, 2, 2, 2])
    files = write_version_files(results, tmp_path)
    plots = write_plots(results, np.array([1, 2, 1, 2]), tmp_path / "plots")
    parameters = {"experiment": "a_b_c", "model_params": {"nn": {"hidden_layer_sizes": [16]}}}
    manifest = build_manifest(
        version="20260102T030405Z-0123abcd",
        flow_run_id="run-1",
        data={"source": "<x>.csv", "sha256": "ab", "rows": 4, "columns": ["a"], "target": "t"},
        parameters=parameters,
        results=results,
        files={**files, **plots},
    )
    markdown = version_markdown("sftp://u@h:22/srv/<m>", manifest, results, plots)
    outside_code = re.sub(r"(?s)```json\n.*?\n```|`[^`]*`|\]\(data:[^)]*\)", "", markdown)
    assert "<" not in outside_code
    assert "_" not in outside_code.replace("mean ± std", "")
    block = re.search(r"(?s)```json\n(.*?)\n```", markdown)
    assert block
    assert json.loads(block.group(1)) == parameters
    assert markdown.count("](data:image/png;base64,") == 2
    assert "`confusion_lda.png`" in markdown


def test_predict_reports_a_preview_where_it_wrote_and_when_it_scored_training_data(
    prefect_server, tmp_path: Path
) -> None:

    from flows.predict import predict
    from flows.train import train
    from tests.train_helpers import write_original_layout_csv

    train_csv = write_original_layout_csv(tmp_path / "train.csv", classes=4, per_class=8)
    new_csv = write_original_layout_csv(tmp_path / "new.csv", classes=4, per_class=8, seed=7)
    store = tmp_path / "store"
    trained = train(data=str(train_csv), models=["lda"], folds=2, destination=str(store))
    api = prefect_server.api_url
    for csv_path, is_training_data in ((train_csv, True), (new_csv, False)):
        outcome = predict(
            source=str(store), data=str(csv_path), output=str(tmp_path / "out" / csv_path.stem)
        )
        assert outcome.version == trained.version
        assert outcome.training_data is is_training_data
        run_id = _latest_run_id(api, "predict")
        artifacts = http.post(
            f"{api}/artifacts/filter", json={"artifacts": {"flow_run_id": {"any_": [run_id]}}}
        ).json()
        by_key = {a["key"]: a for a in artifacts}
        preview = by_key["default-predictions-preview"]["data"]
        preview = json.loads(preview) if isinstance(preview, str) else preview
        written = pd.read_csv(outcome.predictions)
        assert len(preview) == 20
        assert [r["pred_lda"] for r in preview] == written["pred_lda"].head(20).tolist()
        markdown = by_key["default-predictions"]["data"]
        assert str(outcome.predictions) in markdown
        assert ("this is the training data" in markdown) is is_training_data


def _latest_run_id(api: str, flow_name: str) -> str:

    runs = http.post(
        f"{api}/flow_runs/filter",
        json={"flows": {"name": {"any_": [flow_name]}}, "sort": "START_TIME_DESC", "limit": 1},
    ).json()
    return str(runs[0]["id"])
