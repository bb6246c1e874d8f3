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
import pytest
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

from kubetrain.manifest import build_manifest, new_version, write_version_files
from kubetrain.training.engine import ModelResult

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
