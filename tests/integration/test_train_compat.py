"""Compatibility bar: on data in the original's layout and with the original's settings, the flow's
fold scores, means, metadata.json and model files match the original sequential procedure
(benchmarks/reference.py) to 1e-9."""

from __future__ import annotations

import json
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn.preprocessing import normalize

from benchmarks import reference
from flows.train import train
from tests.train_helpers import LocalHttpServer, write_original_layout_csv

TOLERANCE = 1e-9


def _compare(tmp_path: Path, csv_path: Path, nn_size: tuple[int, ...], max_iter: int) -> None:
    reference_dir = tmp_path / "reference"
    reference_dir.mkdir()
    expected = reference.train(
        csv_path, reference_dir, hidden_layer_sizes=nn_size, max_iter=max_iter
    )

    overrides = (
        {}
        if (nn_size, max_iter) == ((500,), 1000)
        else {"nn": {"hidden_layer_sizes": list(nn_size), "max_iter": max_iter}}
    )
    # The original read its CSV over HTTP(S); so does this run (from a local server).
    with LocalHttpServer({"/train.csv": csv_path.read_bytes()}) as server:
        outcome = train(
            data=server.url("/train.csv"),
            target="# Letter",
            drop_columns=["Line"],
            normalize="l2",
            models=["lda", "nn"],
            model_params=overrides,
            folds=5,
            shuffle=False,
            seed=0,
            metrics=["accuracy"],
            destination=str(tmp_path / "store"),
            experiment="letters",
        )
    version_dir = tmp_path / "store" / "letters" / outcome.version
    manifest = json.loads((version_dir / "manifest.json").read_text())
    metadata = json.loads((version_dir / "metadata.json").read_text())
    reference_metadata = json.loads((reference_dir / "metadata.json").read_text())

    assert set(metadata) == set(reference_metadata) == {"train_accuracy_lda", "train_accuracy_nn"}
    for name in ("lda", "nn"):
        cv = manifest["models"][name]["cv"]["accuracy"]
        assert len(cv["folds"]) == 5
        for ours, theirs in zip(cv["folds"], expected["folds"][name], strict=True):
            assert abs(ours - float(theirs)) <= TOLERANCE
        key = f"train_accuracy_{name}"
        assert abs(cv["mean"] - float(expected["metadata"][key])) <= TOLERANCE
        assert abs(metadata[key] - reference_metadata[key]) <= TOLERANCE

    # The model files are drop-in: same class, same fitted state, same predictions.
    frame = pd.read_csv(csv_path)
    X = normalize(frame.drop(columns=["Line", "# Letter"]), norm="l2")
    for file in ("clf_lda.joblib", "clf_nn.joblib"):
        ours, theirs = joblib.load(version_dir / file), joblib.load(reference_dir / file)
        assert type(ours) is type(theirs)
        assert ours.get_params() == theirs.get_params()
        np.testing.assert_array_equal(ours.predict(X), theirs.predict(X))
        np.testing.assert_allclose(
            ours.predict_proba(X), theirs.predict_proba(X), rtol=0, atol=1e-12
        )


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_reduced_nn_matches_the_original_procedure(prefect_server, tmp_path: Path) -> None:
    csv_path = write_original_layout_csv(
        tmp_path / "train.csv", classes=26, per_class=10, features=12
    )
    _compare(tmp_path, csv_path, nn_size=(20,), max_iter=60)


@pytest.mark.slow
def test_full_size_matches_the_original_procedure(prefect_server, tmp_path: Path) -> None:
    """The original's shape: 1300 rows, 26 classes of 50 rows, 160 features, full-size MLP."""
    csv_path = write_original_layout_csv(
        tmp_path / "train.csv", classes=26, per_class=50, features=160, separation=0.3
    )
    _compare(tmp_path, csv_path, nn_size=(500,), max_iter=1000)
