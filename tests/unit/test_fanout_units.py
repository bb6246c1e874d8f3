"""Fan-out's library parts: the fit cache key, the store hand-off, staging that is no version,
and per-model resources (README "Scaling out")."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kubetrain.registry.catalog import version_candidates
from kubetrain.registry.prune import plan_prune
from kubetrain.store import ArtifactStore, IntegrityError, LocalBackend
from kubetrain.training import handoff
from kubetrain.training.engine import FitOutcome, TrainingConfig, fit_one
from kubetrain.training.fanout import FanOutError, check_fit_resources
from kubetrain.training.handoff import (
    CACHE_DIR,
    STAGING_DIR,
    Entry,
    clear_staging,
    fit_key,
    read_outcome,
    write_outcome,
)
from tests.train_helpers import original_layout_frame

CONFIG = TrainingConfig(models=["lda", "knn"], folds=3, metrics=["accuracy", "f1_macro"])


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    frame = original_layout_frame(classes=5, per_class=12)
    return frame.iloc[:, 2:].to_numpy(), frame["# Letter"].to_numpy()


def _key(config: TrainingConfig = CONFIG, **changes: Any) -> str:
    given: dict[str, Any] = {
        "data_sha256": "a" * 64, "target": "# Letter", "drop_columns": ["Line"],
        "model": "knn", "fold": 1,
    }  # fmt: skip
    given.update(changes)
    return fit_key(config=config, **given)


def test_the_cache_key_changes_with_everything_that_decides_a_fit() -> None:
    base = _key()
    assert _key() == base  # deterministic
    changed = [
        _key(data_sha256="b" * 64),
        _key(target="other"),
        _key(drop_columns=[]),
        _key(model="lda"),
        _key(fold=2),
        _key(fold=None),
        _key(dataclasses.replace(CONFIG, model_params={"knn": {"n_neighbors": 3}})),
        _key(dataclasses.replace(CONFIG, seed=1)),
        _key(dataclasses.replace(CONFIG, folds=4)),
        _key(dataclasses.replace(CONFIG, shuffle=True)),
        _key(dataclasses.replace(CONFIG, normalize="none")),
        _key(dataclasses.replace(CONFIG, metrics=["accuracy"])),
    ]
    assert len({base, *changed}) == len(changed) + 1
    # Another model's overrides do not touch this model's fits.
    assert _key(dataclasses.replace(CONFIG, model_params={"lda": {"tol": 0.1}})) == base


def test_a_final_fit_key_ignores_the_split_and_metrics_but_not_library_versions(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    final = _key(fold=None)
    assert _key(dataclasses.replace(CONFIG, folds=7, shuffle=True), fold=None) == final
    assert _key(dataclasses.replace(CONFIG, metrics=["accuracy"]), fold=None) == final
    versions = handoff.library_versions()
    assert {"kubetrain", "sklearn", "numpy", "joblib"} <= set(versions)
    monkeypatch.setattr(handoff, "library_versions", lambda: {**versions, "sklearn": "0.0"})
    assert _key(fold=None) != final


def test_a_final_fit_and_a_fold_round_trip_through_the_store(
    tmp_path: Path, data: tuple[np.ndarray, np.ndarray]
) -> None:
    X, y = data
    store = ArtifactStore(LocalBackend(tmp_path))
    final = fit_one(X, y, CONFIG, "knn", None)
    fold = fit_one(X, y, CONFIG, "knn", 2)
    for outcome in (final, fold):
        entry = Entry.staged("exp", "20260101T000000Z-abc", "knn", outcome.fold)
        write_outcome(store, entry, outcome)
        back = read_outcome(store, entry, "knn", outcome.fold)
        assert back is not None
        assert (back.model, back.fold, back.seconds) == (
            outcome.model,
            outcome.fold,
            outcome.seconds,
        )
        assert back.scores == outcome.scores
        for name in ("test_index", "predictions"):
            theirs, ours = getattr(outcome, name), getattr(back, name)
            assert (theirs is None) == (ours is None)
            if theirs is not None:
                np.testing.assert_array_equal(ours, theirs)
    loaded = read_outcome(
        store, Entry.staged("exp", "20260101T000000Z-abc", "knn", None), "knn", None
    )
    assert loaded is not None
    np.testing.assert_array_equal(loaded.estimator.predict(X), final.estimator.predict(X))
    assert fold.scores
    assert set(fold.scores) == {"accuracy", "f1_macro"}
    # Nothing is left half-written.
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".part")]
    assert read_outcome(store, Entry.cached("exp", "f" * 64), "knn", None) is None


def test_a_changed_payload_is_refused_before_it_is_loaded(
    tmp_path: Path, data: tuple[np.ndarray, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    X, y = data
    store = ArtifactStore(LocalBackend(tmp_path))
    entry = Entry.cached("exp", "c" * 64)
    write_outcome(store, entry, fit_one(X, y, CONFIG, "lda", None))
    folder = tmp_path / entry.folder
    (payload,) = folder.glob("*.joblib")
    payload.write_bytes(payload.read_bytes() + b"\0")
    import joblib

    def never(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("an unverified payload was loaded")

    monkeypatch.setattr(joblib, "load", never)
    with pytest.raises(IntegrityError, match="sha256 differs"):
        read_outcome(store, entry, "lda", None)
    # A record naming another fit is refused too, and a record that is no JSON.
    record = json.loads((folder / "record.json").read_text())
    (folder / "record.json").write_text(json.dumps({**record, "fold": 1}))
    with pytest.raises(IntegrityError, match="another fit"):
        read_outcome(store, entry, "lda", None)
    (folder / "record.json").write_text("{")
    with pytest.raises(IntegrityError, match="not a fit record"):
        read_outcome(store, entry, "lda", None)


def test_staging_and_cache_are_never_versions_and_clearing_keeps_other_runs(
    tmp_path: Path, data: tuple[np.ndarray, np.ndarray]
) -> None:
    X, y = data
    store = ArtifactStore(LocalBackend(tmp_path))
    source = tmp_path / "model.bin"
    source.write_bytes(b"model")
    store.publish("exp", "20260101T000000Z-aaaaaa", {"model.bin": source}, {"files": {}})
    outcome = fit_one(X, y, CONFIG, "lda", 0)
    for version in ("20270101T000000Z-zzzzzz", "20270101T000000Z-yyyyyy"):
        write_outcome(store, Entry.staged("exp", version, "lda", 0), outcome)
    write_outcome(store, Entry.cached("exp", "d" * 64), outcome)
    # A staging folder holding a manifest-like file is still no version.
    (tmp_path / "exp" / STAGING_DIR / "manifest.json").write_text("{}")
    assert store.list_versions("exp") == ["20260101T000000Z-aaaaaa"]
    assert store.latest("exp") == "20260101T000000Z-aaaaaa"
    assert version_candidates(store, "exp") == ["20260101T000000Z-aaaaaa"]
    plan = plan_prune(store, "exp", keep_last=1, keep_days=0, grace_hours=0)
    assert plan.delete == []
    assert plan.delete_incomplete == []
    store.publish("exp", "20260102T000000Z-bbbbbb", {"model.bin": source}, {"files": {}})
    assert store.latest("exp") == "20260102T000000Z-bbbbbb"

    clear_staging(store, "exp", "20270101T000000Z-zzzzzz")
    staging = tmp_path / "exp" / STAGING_DIR
    assert sorted(p.name for p in staging.iterdir()) == ["20270101T000000Z-yyyyyy", "manifest.json"]
    (staging / "manifest.json").unlink()
    clear_staging(store, "exp", "20270101T000000Z-yyyyyy")
    assert not staging.exists()  # the last run's clean-up removes the folder too
    assert (tmp_path / "exp" / CACHE_DIR / ("d" * 64) / "record.json").is_file()


def test_fit_resources_are_validated_and_filled_with_one_fit_defaults() -> None:
    checked = check_fit_resources({"nn": {"memory_limit": "4Gi"}}, ["lda", "nn"])
    assert checked == {
        "lda": {},
        "nn": {
            "cpu_request": "1",
            "cpu_limit": "1",
            "memory_request": "1Gi",
            "memory_limit": "4Gi",
        },
    }
    with pytest.raises(FanOutError, match="'rf', which is not in models"):
        check_fit_resources({"rf": {}}, ["lda"])
    with pytest.raises(FanOutError, match="gpu") as error:
        check_fit_resources({"lda": {"gpu": "1"}}, ["lda"])
    assert "cpu_request, cpu_limit" in str(error.value)
    with pytest.raises(FanOutError, match="memory_limit"):
        check_fit_resources({"lda": {"memory_limit": "lots"}}, ["lda"])


def test_a_cached_fit_records_when_it_was_written_and_reuse_changes_nothing(
    tmp_path: Path,
) -> None:
    from datetime import UTC, datetime

    from tasks.fanout import cache_fits

    outcome = FitOutcome("lda", 0, 0.5, scores={"accuracy": 0.9})
    key = "e" * 64
    before = datetime.now(UTC).replace(microsecond=0)
    cache_fits.fn(str(tmp_path), "exp", {("lda", 0): key}, [outcome])
    after = datetime.now(UTC)
    folder = tmp_path / "exp" / CACHE_DIR / key
    record = json.loads((folder / "record.json").read_text())
    written = datetime.fromisoformat(record["written"])
    assert written.utcoffset() is not None, "the time must say it is UTC"
    assert before <= written <= after
    # Reusing the fit writes nothing: its age still counts from when it was cached.
    files = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in folder.iterdir()}
    store = ArtifactStore(LocalBackend(tmp_path))
    assert read_outcome(store, Entry.cached("exp", key), "lda", 0) is not None
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in folder.iterdir()} == files
