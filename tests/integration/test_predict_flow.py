"""The predict flow against versions the real train flow published (real Prefect server)."""

from __future__ import annotations

from pathlib import Path

import joblib
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score
from sklearn.preprocessing import normalize

from flows.predict import predict
from flows.train import train
from kubetrain.store import IntegrityError, VersionNotFoundError, open_store

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "sample_letters.csv"


@pytest.fixture(scope="module")
def published(prefect_server, tmp_path_factory) -> tuple[Path, str]:
    root = tmp_path_factory.mktemp("store")
    outcome = train(
        data=str(SAMPLE),
        target="# Letter",
        drop_columns=["Line"],
        normalize="l2",
        models=["lda", "knn"],
        folds=3,
        destination=str(root),
        experiment="letters",
    )
    return root, outcome.version


def test_predict_scores_latest_like_loading_the_files_by_hand(published, tmp_path):
    root, version = published
    outcome = predict(
        source=str(root), experiment="letters", data=str(SAMPLE), output=str(tmp_path)
    )

    frame = pd.read_csv(SAMPLE)
    X = normalize(frame.drop(columns=["Line", "# Letter"]).to_numpy(float), norm="l2")
    for name in ("lda", "knn"):
        model = joblib.load(root / "letters" / version / f"clf_{name}.joblib")
        expected = accuracy_score(frame["# Letter"], model.predict(X))
        assert outcome.accuracy is not None
        assert outcome.accuracy[name] == pytest.approx(expected, abs=1e-12)
    written = pd.read_csv(outcome.predictions)
    assert outcome.version == version
    assert list(written.columns[:2]) == ["row", "# Letter"]
    assert set(written.columns[2:]) == {"pred_lda", "pred_knn"}
    assert len(written) == len(frame)


def test_data_without_target_gets_predictions_and_no_accuracy(published, tmp_path):
    root, _ = published
    unlabeled = tmp_path / "unlabeled.csv"
    pd.read_csv(SAMPLE).drop(columns=["# Letter"]).head(20).to_csv(unlabeled, index=False)
    outcome = predict(
        source=str(root), experiment="letters", data=str(unlabeled), output=str(tmp_path / "out")
    )
    assert outcome.accuracy is None
    assert len(pd.read_csv(outcome.predictions)) == 20


def test_tampered_model_is_refused_before_loading(published, tmp_path):
    root, version = published
    copy = tmp_path / "store"
    import shutil

    shutil.copytree(root, copy)
    model = copy / "letters" / version / "clf_lda.joblib"
    model.write_bytes(model.read_bytes() + b"\0")
    with pytest.raises(IntegrityError, match=r"clf_lda\.joblib: sha256 differs"):
        predict.fn(
            source=str(copy), experiment="letters", data=str(SAMPLE), output=str(tmp_path / "out")
        )
    assert not (tmp_path / "out").exists()


def test_missing_feature_column_is_named(published, tmp_path):
    root, _ = published
    bad = tmp_path / "bad.csv"
    pd.read_csv(SAMPLE).drop(columns=[" px_3_4"]).to_csv(bad, index=False)
    with pytest.raises(ValueError, match=r"missing, e\.g\. \[' px_3_4'\]"):
        predict.fn(
            source=str(root), experiment="letters", data=str(bad), output=str(tmp_path / "out")
        )
    assert not (tmp_path / "out").exists()


def test_unknown_experiment_says_there_is_no_version(published, tmp_path):
    root, _ = published
    with pytest.raises(VersionNotFoundError, match="has no complete version"):
        predict.fn(
            source=str(root),
            experiment="nothing-here",
            data=str(SAMPLE),
            output=str(tmp_path / "out"),
        )


def test_incomplete_version_is_never_read(published, tmp_path):
    root, version = published
    store = open_store(str(root))
    half = root / "letters" / "20990101T000000Z-deadbeef"
    half.mkdir()
    (half / "clf_lda.joblib").write_bytes(b"half")
    assert store.latest("letters") == version
    assert "20990101T000000Z-deadbeef" not in store.list_versions("letters")
    with pytest.raises(VersionNotFoundError, match="not a complete version"):
        predict.fn(
            source=str(root),
            experiment="letters",
            version="20990101T000000Z-deadbeef",
            data=str(SAMPLE),
            output=str(tmp_path / "out"),
        )
