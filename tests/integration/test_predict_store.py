"""predict's output in a store: uploaded to a real sshd (SFTP), or written to a folder.

On Kubernetes the pod's files are gone when it ends, so predict-adhoc uploads its CSV to the
SFTP store: `<output>/<experiment>/<version>-<UTC time>-<run>.csv`, under a `.part` name first,
size and sha256 read back, then renamed. A failure leaves neither the file nor a `.part` nor a
folder the run created. Real Prefect server (prefect_server), real OpenSSH (sshd).
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

from flows.predict import predict
from flows.train import train
from kubetrain.inference import InferenceError
from kubetrain.store import IntegrityError
from kubetrain.store.sftp import SftpBackend
from tests.prefect_api import http

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "sample_letters.csv"
NAME = re.compile(r"(?P<version>\d{8}T\d{6}Z-[0-9a-f]{8})-\d{8}T\d{6}Z-[0-9a-f]{8}\.csv")


@pytest.fixture(scope="module")
def published(prefect_server, tmp_path_factory) -> tuple[Path, str]:
    root = tmp_path_factory.mktemp("store")
    outcome = train(
        data=str(SAMPLE),
        target="# Letter",
        drop_columns=["Line"],
        models=["lda"],
        folds=2,
        destination=str(root),
        experiment="letters",
    )
    return root, outcome.version


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


def _latest_markdown(api: str, key: str) -> str:
    artifacts = http.post(
        f"{api}/artifacts/filter",
        json={"artifacts": {"key": {"any_": [key]}}, "sort": "CREATED_DESC", "limit": 1},
    ).json()
    return str(artifacts[0]["data"])


def test_predictions_are_uploaded_to_the_sftp_store_whole(
    prefect_server, published, ssh_env, remote_dir, tmp_path
):
    root, version = published
    output = ssh_env.url(remote_dir)
    outcome = predict(source=str(root), experiment="letters", data=str(SAMPLE), output=output)
    # The run's artifact says where the file went.
    markdown = _latest_markdown(prefect_server.api_url, "letters-predictions")
    assert f"`{outcome.predictions}` (uploaded to the store)" in markdown
    local = predict(
        source=str(root), experiment="letters", data=str(SAMPLE), output=str(tmp_path / "here")
    )

    uploaded = _files(remote_dir)
    assert len(uploaded) == 2, uploaded
    assert uploaded[0] == "letters"
    name = uploaded[1].removeprefix("letters/")
    match = NAME.fullmatch(name)
    assert match, name
    assert match["version"] == version
    assert outcome.predictions == f"{output}/letters/{name}"
    # The uploaded bytes are the predictions a local run writes, byte for byte.
    assert (remote_dir / "letters" / name).read_bytes() == Path(local.predictions).read_bytes()
    assert len(pd.read_csv(remote_dir / "letters" / name)) == len(pd.read_csv(SAMPLE))

    # A second run adds a file of its own: runs never overwrite each other.
    predict(source=str(root), experiment="letters", data=str(SAMPLE), output=output)
    assert len(_files(remote_dir / "letters")) == 2


def test_a_failed_upload_leaves_nothing_behind(
    published, ssh_env, remote_dir, monkeypatch: pytest.MonkeyPatch
):
    root, _ = published
    real_sha256 = SftpBackend.sha256

    def corrupted(self: SftpBackend, path: str) -> str:
        # The read-back of the uploaded .part differs, as after a torn write on the server.
        return "0" * 64 if path.endswith(".part") else real_sha256(self, path)

    monkeypatch.setattr(SftpBackend, "sha256", corrupted)
    with pytest.raises(IntegrityError, match="read back differs") as info:
        predict.fn(
            source=str(root),
            experiment="letters",
            data=str(SAMPLE),
            output=ssh_env.url(remote_dir),
        )
    assert _files(remote_dir) == []  # no file, no .part, no folder the run created
    assert str(ssh_env.client_key) not in str(info.value)


def test_a_failed_scoring_uploads_nothing(published, ssh_env, remote_dir, tmp_path):
    root, _ = published
    bad = tmp_path / "bad.csv"
    pd.read_csv(SAMPLE).drop(columns=[" px_3_4"]).to_csv(bad, index=False)
    with pytest.raises(InferenceError, match="missing"):
        predict.fn(
            source=str(root), experiment="letters", data=str(bad), output=ssh_env.url(remote_dir)
        )
    assert _files(remote_dir) == []


def test_the_model_store_itself_is_refused_as_output(prefect_server, ssh_env, remote_dir):
    store = ssh_env.url(remote_dir)
    for output in (store, f"{store}/", f"{store}/letters", f"{store}/letters/x"):
        with pytest.raises(InferenceError, match="is the model store") as info:
            predict.fn(source=store, experiment="letters", data=str(SAMPLE), output=output)
        assert "-predictions" in str(info.value)  # names a folder to use instead
    assert not remote_dir.exists()  # refused before anything was fetched or written


def test_an_output_with_a_password_is_refused_without_echoing_it(published, tmp_path):
    root, _ = published
    with pytest.raises(InferenceError) as info:
        predict.fn(
            source=str(root),
            experiment="letters",
            data=str(SAMPLE),
            output="sftp://kubetrain:hunter2-secret@127.0.0.1:2222/srv/predictions",
        )
    assert "hunter2-secret" not in str(info.value)
    assert not (tmp_path / "predictions").exists()


def test_a_file_url_output_is_a_folder_on_this_machine(published, tmp_path):
    root, version = published
    outcome = predict(
        source=str(root),
        experiment="letters",
        data=str(SAMPLE),
        output=(tmp_path / "by-url").as_uri(),
    )
    assert outcome.predictions == tmp_path / "by-url" / f"{version}-predictions.csv"
    assert Path(outcome.predictions).is_file()
