"""upload_predictions and check_predictions_store over SFTP, against the session's OpenSSH sshd
on 127.0.0.1 (no Prefect server): the path predict-adhoc takes on Kubernetes. The same
functions on a local-folder store, with failures injected: unit/test_predict_upload_gaps.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from kubetrain.inference import check_predictions_store, upload_predictions
from kubetrain.store import IntegrityError
from kubetrain.store.sftp import SftpBackend
from tests.sshd import Sshd

pytestmark = pytest.mark.timeout(60)

CSV = b"row,y,pred_lda\n0,A,A\n1,B,C\n"
NAME = "v1-20260101T000000Z-abc.csv"


def _tree(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


def test_predictions_are_uploaded_whole_to_the_sftp_output(
    ssh_env: Sshd, remote_dir: Path, tmp_path: Path
) -> None:
    local = tmp_path / "predictions.csv"
    local.write_bytes(CSV)
    output = ssh_env.url(remote_dir)
    check_predictions_store(output, ssh_env.url(remote_dir.parent / "models"), "letters")
    assert _tree(remote_dir) == []  # the probe left nothing, not even the folders
    url = upload_predictions(local, output, "letters", NAME)
    assert url == f"{output}/letters/{NAME}"
    assert _tree(remote_dir) == ["letters", f"letters/{NAME}"]
    assert (remote_dir / "letters" / NAME).read_bytes() == CSV


def test_an_sftp_upload_that_reads_back_different_leaves_nothing(
    ssh_env: Sshd, remote_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    local = tmp_path / "predictions.csv"
    local.write_bytes(CSV)
    monkeypatch.setattr(SftpBackend, "sha256", lambda self, path: "0" * 64)
    with pytest.raises(IntegrityError, match="run predict again") as info:
        upload_predictions(local, ssh_env.url(remote_dir), "letters", NAME)
    assert f"{ssh_env.url(remote_dir)}/letters/{NAME}.part" in str(info.value)
    assert _tree(remote_dir) == []
