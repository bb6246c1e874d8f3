"""Where predict's CSV goes in a store, without a Prefect server: upload_predictions puts the
whole file at <output>/<experiment>/<name> or nothing (no .part, no folder it created), and
check_predictions_store refuses the model store and probes the output before any scoring.

The store is a local folder here (open_store takes a path as well as an sftp:// URL, and both
backends implement the same primitives); sftp:// URLs are only parsed, never connected to."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

import kubetrain.store
from kubetrain.inference import (
    InferenceError,
    check_predictions_store,
    predictions_file_name,
    refuse_model_store_output,
    upload_predictions,
)
from kubetrain.store import IntegrityError, LocalBackend, StoreError

CSV = b"row,y,pred_lda\n0,A,A\n1,B,C\n"
NAME = "v1-20260101T000000Z-abc.csv"
STORE = "sftp://kubetrain@127.0.0.1:2222/srv/kubetrain/models"


@pytest.fixture
def predictions(tmp_path: Path) -> Path:
    path = tmp_path / "local" / "predictions.csv"
    path.parent.mkdir()
    path.write_bytes(CSV)
    return path


def _tree(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


def _forbid_connecting(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(destination: str, *args: object) -> None:
        raise AssertionError(f"opened the store {destination} after it should have been refused")

    monkeypatch.setattr(kubetrain.store, "open_store", refuse)


# -- upload_predictions ---------------------------------------------------------------------


def test_the_csv_lands_whole_at_output_experiment_name(tmp_path: Path, predictions: Path) -> None:
    output = tmp_path / "outX"  # a name ending in X: the URL keeps it
    url = upload_predictions(predictions, str(output), "letters", NAME)
    assert _tree(output) == ["letters", f"letters/{NAME}"]
    assert (output / "letters" / NAME).read_bytes() == CSV
    assert url == f"{output.as_uri()}/letters/{NAME}"


def test_an_existing_experiment_folder_keeps_earlier_predictions(
    tmp_path: Path, predictions: Path
) -> None:
    (tmp_path / "out" / "letters").mkdir(parents=True)
    (tmp_path / "out" / "letters" / "earlier.csv").write_bytes(b"old")
    upload_predictions(predictions, str(tmp_path / "out"), "letters", NAME)
    assert _tree(tmp_path / "out") == ["letters", "letters/earlier.csv", f"letters/{NAME}"]
    assert (tmp_path / "out" / "letters" / "earlier.csv").read_bytes() == b"old"


@pytest.mark.parametrize(
    ("experiment", "name", "kind"),
    [("../up", NAME, "experiment"), ("letters", "../up.csv", "file"), ("a/b", NAME, "experiment")],
)
def test_unsafe_names_are_refused_before_anything_is_written(
    tmp_path: Path, predictions: Path, experiment: str, name: str, kind: str
) -> None:
    with pytest.raises(StoreError, match=f"invalid {kind} name") as info:
        upload_predictions(predictions, str(tmp_path / "out" / "deep"), experiment, name)
    assert repr(experiment if kind == "experiment" else name) in str(info.value)
    assert _tree(tmp_path / "out") == []
    assert not (tmp_path / "up.csv").exists()


def _corrupting_upload(keep_size: bool) -> Callable[[LocalBackend, Path, str, object], None]:
    real = LocalBackend.upload

    def upload(self: LocalBackend, source: Path, path: str, progress: object) -> None:
        real(self, source, path, None)
        written = self._path(path)
        data = written.read_bytes()
        written.write_bytes(data[:-1] + b"X" if keep_size else data[:-1])

    return upload


@pytest.mark.parametrize("keep_size", [True, False], ids=["same-size-other-bytes", "truncated"])
def test_an_upload_that_reads_back_different_is_discarded_whole(
    tmp_path: Path, predictions: Path, monkeypatch: pytest.MonkeyPatch, keep_size: bool
) -> None:
    monkeypatch.setattr(LocalBackend, "upload", _corrupting_upload(keep_size))
    output = tmp_path / "out"
    with pytest.raises(IntegrityError) as info:
        upload_predictions(predictions, str(output), "letters", NAME)
    message = str(info.value)
    assert f"{output.as_uri()}/letters/{NAME}.part" in message
    assert "sha256" in message
    assert "run predict again" in message
    # Neither the file, nor its .part, nor the experiment folder this call created.
    assert _tree(output) == []


def test_a_failed_upload_into_an_existing_experiment_leaves_only_what_was_there(
    tmp_path: Path, predictions: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "out" / "letters").mkdir(parents=True)
    monkeypatch.setattr(LocalBackend, "upload", _corrupting_upload(True))
    with pytest.raises(IntegrityError):
        upload_predictions(predictions, str(tmp_path / "out"), "letters", NAME)
    assert _tree(tmp_path / "out") == ["letters"]


def test_a_failed_rename_removes_the_part_file(
    tmp_path: Path, predictions: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def replace(self: LocalBackend, source: str, target: str) -> None:
        raise StoreError(f"cannot rename {source} to {target}: No space left on device")

    monkeypatch.setattr(LocalBackend, "replace", replace)
    with pytest.raises(StoreError, match="No space left"):
        upload_predictions(predictions, str(tmp_path / "out"), "letters", NAME)
    assert _tree(tmp_path / "out") == []


def test_the_upload_error_is_raised_even_when_the_cleanup_fails_too(
    tmp_path: Path, predictions: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A dropped connection: the upload fails, and so does every call of the cleanup after it.
    def lost(*args: object) -> None:
        raise StoreError("connection lost")

    def broken_upload(self: LocalBackend, source: Path, path: str, progress: object) -> None:
        raise OSError("eof")

    monkeypatch.setattr(LocalBackend, "upload", broken_upload)
    for method in ("exists", "remove", "rmdir"):
        monkeypatch.setattr(LocalBackend, method, lost)
    with pytest.raises(OSError, match="eof"):
        upload_predictions(predictions, str(tmp_path / "out"), "letters", NAME)


def test_a_password_in_the_output_url_is_refused_and_never_shown(predictions: Path) -> None:
    with pytest.raises(StoreError, match="passwords in sftp:// URLs are refused") as info:
        upload_predictions(
            predictions, "sftp://kubetrain:s3cr3t-pw@127.0.0.1:2222/srv/out", "letters", NAME
        )
    assert "s3cr3t-pw" not in str(info.value)


# -- check_predictions_store ----------------------------------------------------------------


def test_checking_a_writable_output_leaves_nothing_behind(tmp_path: Path) -> None:
    check_predictions_store(str(tmp_path / "out"), STORE, "letters")
    assert _tree(tmp_path / "out") == []


def test_checking_an_output_whose_experiment_cannot_be_a_folder_fails_clearly(
    tmp_path: Path,
) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "letters").write_text("a file where the experiment folder goes")
    with pytest.raises(StoreError, match="cannot create") as info:
        check_predictions_store(str(tmp_path / "out"), STORE, "letters")
    assert "letters" in str(info.value)
    assert "choose a destination you can write to" in str(info.value)


@pytest.mark.parametrize("output", [STORE, f"{STORE}/letters", f"{STORE}/letters/run1"])
def test_the_model_store_is_refused_as_output_before_connecting(
    output: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _forbid_connecting(monkeypatch)
    with pytest.raises(InferenceError, match="is the model store") as info:
        check_predictions_store(output, STORE, "letters")
    assert f"{STORE}-predictions" in str(info.value)


def test_a_password_in_the_output_is_refused_before_connecting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _forbid_connecting(monkeypatch)
    with pytest.raises(InferenceError, match="passwords in sftp:// URLs are refused") as info:
        check_predictions_store("sftp://kubetrain:s3cr3t-pw@127.0.0.1/srv/out", STORE, "letters")
    assert "s3cr3t-pw" not in str(info.value)
    assert str(info.value).startswith("output")


# -- refuse_model_store_output ------------------------------------------------------------


@pytest.mark.parametrize("output", ["ftp://127.0.0.1/out", "https://127.0.0.1/out"])
def test_an_output_that_is_no_store_location_is_refused_naming_the_output(output: str) -> None:
    with pytest.raises(InferenceError) as info:
        refuse_model_store_output(output, STORE, "letters")
    message = str(info.value)
    assert message.startswith(f"output {output!r}")
    assert "sftp://user@host[:port]/path" in message
    assert "http(s)://" not in message  # not offered: http(s) is no place to write to


@pytest.mark.parametrize("source", ["ftp://127.0.0.1/models", "sftp://127.0.0.1/models", ""])
def test_a_source_that_does_not_parse_is_left_to_the_fetch(source: str) -> None:
    refuse_model_store_output(f"{STORE}/letters", source, "letters")


@pytest.mark.parametrize(
    ("output", "source"),
    [
        (f"{STORE}/letters ", STORE),  # other folders whose names only start like the store's
        (f"{STORE}/lettersX", STORE),
        (STORE, f"{STORE} "),
        (STORE, f"{STORE}X"),
    ],
)
def test_siblings_named_like_the_store_are_accepted(output: str, source: str) -> None:
    refuse_model_store_output(output, source, "letters")


@pytest.mark.parametrize("store", [STORE, f"{STORE}X", f"{STORE} "])
def test_the_refusal_names_the_output_and_suggests_a_folder_beside_the_store(store: str) -> None:
    with pytest.raises(InferenceError) as info:
        refuse_model_store_output(f"{store}/letters", store, "letters")
    message = str(info.value)
    assert message.startswith(f"output {f'{store}/letters'!r} is the model store")
    assert f"e.g. {f'{store}-predictions'!r}" in message
    assert "give a folder of its own" in message


# -- predictions_file_name ------------------------------------------------------------------


@pytest.fixture
def local_time_zone_not_utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TZ", "IST-5:30")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_the_file_name_is_version_utc_time_and_run_whatever_the_local_zone(
    local_time_zone_not_utc: None,
) -> None:
    assert datetime(2026, 1, 1, tzinfo=UTC).astimezone().utcoffset() == timedelta(
        hours=5, minutes=30
    )
    now = datetime(2026, 3, 4, 1, 2, 3, tzinfo=timezone(timedelta(hours=-7)))
    name = predictions_file_name("20260101T000000Z-0123abcd", "9f8e7d6c", now)
    assert name == "20260101T000000Z-0123abcd-20260304T080203Z-9f8e7d6c.csv"
