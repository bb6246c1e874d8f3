"""The artifact store over SFTP against a real OpenSSH sshd: publish, fetch, failures."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kubetrain.ssh import HostKeyError, SshAuthenticationError
from kubetrain.store import IntegrityError, StoreError, open_store
from kubetrain.store import sftp as sftp_module
from kubetrain.store.sftp import download_file
from tests.sshd import Sshd, generate_key

pytestmark = pytest.mark.usefixtures("ssh_env")


def make_files(folder: Path, sizes: dict[str, int]) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for name, size in sizes.items():
        path = folder / name
        path.write_bytes(os.urandom(size))
        files[name] = path
    return files


def manifest_for(version: str, files: dict[str, Path]) -> dict[str, object]:
    return {
        "version": version,
        "files": {
            name: {"sha256": hashlib.sha256(p.read_bytes()).hexdigest(), "bytes": p.stat().st_size}
            for name, p in files.items()
        },
    }


def publish(url: str, experiment: str, version: str, files: dict[str, Path]) -> str:
    with open_store(url) as store:
        return store.publish(experiment, version, files, manifest_for(version, files)).location


def remote_tree(root: Path) -> list[str]:
    if not root.exists():
        return []
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_publish_list_fetch_roundtrip(sshd: Sshd, remote_dir: Path, tmp_path: Path) -> None:
    url = sshd.url(remote_dir / "store")
    files = make_files(tmp_path / "out", {"clf_lda.joblib": 3000, "metadata.json": 40})
    location = publish(url, "letters", "20261128T000000Z-aaaa", files)
    assert location == f"{url}/letters/20261128T000000Z-aaaa"

    version_dir = remote_dir / "store/letters/20261128T000000Z-aaaa"
    assert sorted(os.listdir(version_dir)) == ["clf_lda.joblib", "manifest.json", "metadata.json"]
    assert (version_dir / "clf_lda.joblib").read_bytes() == files["clf_lda.joblib"].read_bytes()
    assert (remote_dir / "store/letters/LATEST").read_text() == "20261128T000000Z-aaaa\n"
    # Created by the SFTP user, not by the test's root.
    assert version_dir.stat().st_uid == sshd.home.stat().st_uid

    with open_store(url) as store:
        assert store.list_versions("letters") == ["20261128T000000Z-aaaa"]
        assert store.latest("letters") == "20261128T000000Z-aaaa"
        fetched = store.fetch("letters", None, tmp_path / "fetched")
    for name, source in files.items():
        assert (fetched / name).read_bytes() == source.read_bytes()
    manifest = json.loads((fetched / "manifest.json").read_text())
    assert manifest["version"] == "20261128T000000Z-aaaa"


def test_fetch_refuses_a_file_changed_on_the_server(
    sshd: Sshd, remote_dir: Path, tmp_path: Path
) -> None:
    url = sshd.url(remote_dir)
    files = make_files(tmp_path / "out", {"clf_nn.joblib": 5000})
    publish(url, "exp", "v1", files)
    tampered = remote_dir / "exp/v1/clf_nn.joblib"
    tampered.write_bytes(b"import os; os.system('evil')")
    with open_store(url) as store, pytest.raises(IntegrityError, match="sha256 differs"):
        store.fetch("exp", "v1", tmp_path / "fetched")
    assert not (tmp_path / "fetched/v1/clf_nn.joblib").exists()


def test_stale_part_files_are_overwritten_never_read(
    sshd: Sshd, remote_dir: Path, tmp_path: Path
) -> None:
    url = sshd.url(remote_dir)
    stale_dir = remote_dir / "exp/v2"
    stale_dir.mkdir(parents=True)
    (stale_dir / "clf_lda.joblib.part").write_bytes(b"half a model from a crashed run")
    (stale_dir / "manifest.json.part").write_bytes(b"{")
    subprocess.run(["chown", "-R", f"{sshd.user}:", str(remote_dir)], check=True)
    with open_store(url) as store:
        assert store.list_versions("exp") == []  # a directory without manifest is not a version
        assert store.latest("exp") is None

    files = make_files(tmp_path / "out", {"clf_lda.joblib": 2048})
    publish(url, "exp", "v2", files)
    assert sorted(os.listdir(stale_dir)) == ["clf_lda.joblib", "manifest.json"]
    assert (stale_dir / "clf_lda.joblib").read_bytes() == files["clf_lda.joblib"].read_bytes()


def test_latest_moves_forward_only_and_republish_resumes(
    sshd: Sshd, remote_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = sshd.url(remote_dir)
    files = make_files(tmp_path / "out", {"a.bin": 100})
    publish(url, "exp", "20260102T000000Z-b", files)
    publish(url, "exp", "20260101T000000Z-a", files)  # a slower, older run finishing late
    with open_store(url) as store:
        assert store.latest("exp") == "20260102T000000Z-b"
        assert store.list_versions("exp") == ["20260101T000000Z-a", "20260102T000000Z-b"]

    # Publishing the same version again (a resumed run) re-uploads nothing already in place.
    uploads: list[str] = []
    real_upload = sftp_module.SftpBackend.upload

    def counting(self: sftp_module.SftpBackend, source: Path, path: str, progress: object) -> None:
        uploads.append(path)
        real_upload(self, source, path, progress)  # type: ignore[arg-type]

    monkeypatch.setattr(sftp_module.SftpBackend, "upload", counting)
    publish(url, "exp", "20260102T000000Z-b", files)
    assert uploads == []
    publish(url, "exp", "20260103T000000Z-c", files)
    assert uploads == ["exp/20260103T000000Z-c/a.bin.part"]
    assert (remote_dir / "exp/LATEST").read_text() == "20260103T000000Z-c\n"


def test_bad_latest_and_planted_symlink_version_over_sftp(
    sshd: Sshd, remote_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = sshd.url(remote_dir)
    files = make_files(tmp_path / "out", {"a.bin": 100})
    publish(url, "exp", "20260101T000000Z-a", files)
    # A far-future version that is a symlink to a complete version outside the store.
    outside = remote_dir / "outside/29990101T000000Z-planted"
    outside.mkdir(parents=True)
    (outside / "a.bin").write_bytes(b"planted")
    (outside / "manifest.json").write_text(
        json.dumps(manifest_for("x", {"a.bin": outside / "a.bin"}))
    )
    (remote_dir / "exp/29990101T000000Z-planted").symlink_to(outside)
    (remote_dir / "exp/LATEST").write_bytes(b"\xff\xfe not a version")
    subprocess.run(["chown", "-R", "-h", f"{sshd.user}:", str(remote_dir)], check=True)
    caplog.set_level(logging.WARNING, logger="kubetrain.store.protocol")
    publish(url, "exp", "20260102T000000Z-b", files)
    assert "LATEST was invalid (it is not UTF-8 text)" in caplog.text
    assert (remote_dir / "exp/LATEST").read_text() == "20260102T000000Z-b\n"
    with open_store(url) as store:
        assert store.list_versions("exp") == ["20260101T000000Z-a", "20260102T000000Z-b"]
    assert not list((remote_dir / "exp").glob("LATEST.*"))


def test_eight_concurrent_publishes(sshd: Sshd, remote_dir: Path, tmp_path: Path) -> None:
    url = sshd.url(remote_dir)
    versions = [f"20261128T1200{i:02d}Z-{i:04x}" for i in range(8)]
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            files = make_files(tmp_path / f"run{i}", {"clf_lda.joblib": 20_000 + i, "m.json": 10})
            publish(url, "shared", versions[i], files)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    with open_store(url) as store:
        assert store.list_versions("shared") == versions
        latest = store.latest("shared")
        assert latest in versions
        for i, version in enumerate(versions):
            fetched = store.fetch("shared", version, tmp_path / "fetched")
            assert (fetched / "clf_lda.joblib").stat().st_size == 20_000 + i
    assert not [p for p in remote_tree(remote_dir) if p.endswith(".part")]


def test_session_killed_mid_upload_is_retried_and_completes(
    sshd: Sshd,
    remote_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(sftp_module.SftpBackend, "__init__", _fast_retry_init)
    url = sshd.url(remote_dir)
    files = make_files(tmp_path / "out", {"clf_nn.joblib": 6_000_000, "metadata.json": 50})
    part = remote_dir / "exp/v1/clf_nn.joblib.part"
    killed: list[int] = []
    visible_while_partial: list[list[str]] = []
    in_flight, kill_done = threading.Event(), threading.Event()
    reader = open_store(url)  # a concurrent reader, connected before the publisher
    reader_sessions = _wait_for_sessions(sshd, 1)

    def kill_when_part_appears() -> None:
        try:
            if not in_flight.wait(60) or not part.exists():
                return
            visible_while_partial.append(reader.list_versions("exp"))
            pids = [p for p in sshd.session_pids() if p not in reader_sessions]
            for pid in pids:
                os.kill(pid, 9)
            killed.extend(pids)
        finally:
            kill_done.set()

    # The first progress report (1 MB written, the .part exists) holds the upload until the
    # killer has killed its server process: the kill always lands mid-upload.
    def hold_once(name: str, done: int, total: int) -> None:
        if name == "clf_nn.joblib" and done >= 1_000_000 and not in_flight.is_set():
            in_flight.set()
            kill_done.wait(60)

    killer = threading.Thread(target=kill_when_part_appears)
    caplog.set_level(logging.WARNING, logger="kubetrain.store.sftp")
    killer.start()
    try:
        with open_store(url) as store:
            store.publish("exp", "v1", files, manifest_for("v1", files), progress=hold_once)
    finally:
        in_flight.set()
        killer.join()
        reader.backend.close()

    assert len(killed) == 1, "expected exactly the publisher's session to be killed"
    assert visible_while_partial
    assert all(v == [] for v in visible_while_partial)
    assert "reconnecting" in caplog.text
    with open_store(url) as store:
        assert store.list_versions("exp") == ["v1"]
        fetched = store.fetch("exp", "v1", tmp_path / "fetched")
    assert (fetched / "clf_nn.joblib").read_bytes() == files["clf_nn.joblib"].read_bytes()
    assert not part.exists()


_real_init = sftp_module.SftpBackend.__init__


def _wait_for_sessions(server: Sshd, count: int) -> set[int]:
    # sshd renames the session process to "sshd: USER@notty" a moment after authentication.
    for _ in range(500):
        pids = server.session_pids()
        if len(pids) >= count:
            return set(pids)
        threading.Event().wait(0.01)
    raise AssertionError(f"expected {count} session(s), found {server.session_pids()}")


def _fast_retry_init(self: sftp_module.SftpBackend, *args: object, **kwargs: object) -> None:
    kwargs.setdefault("base_delay", 0.05)
    _real_init(self, *args, **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def small_disk(sshd: Sshd, remote_dir: Path) -> Iterator[Path]:
    remote_dir.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m,mode=0755", "tmpfs", str(remote_dir)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a 2 MB tmpfs for the full-disk case: {mounted.stderr.strip()}")
    try:
        shutil.chown(remote_dir, sshd.user, sshd.user)
        yield remote_dir
    finally:
        subprocess.run(["umount", str(remote_dir)], check=True)


def test_full_disk_clear_error_nothing_published(
    sshd: Sshd, small_disk: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = sshd.url(small_disk)
    publish(url, "exp", "v1", make_files(tmp_path / "small", {"a.bin": 1000}))
    big = make_files(tmp_path / "big", {"a.bin": 1000, "clf_nn.joblib": 3_000_000})
    caplog.set_level(logging.WARNING, logger="kubetrain.store.sftp")
    with pytest.raises(StoreError, match="disk is full") as caught:
        publish(url, "exp", "v2", big)
    assert "clf_nn.joblib.part" in str(caught.value)
    assert "reconnecting" not in caplog.text  # not retried
    assert not (small_disk / "exp/v2/manifest.json").exists()
    assert not (small_disk / "exp/v2/clf_nn.joblib.part").exists()  # space given back
    assert (small_disk / "exp/LATEST").read_text() == "v1\n"
    with open_store(url) as store:
        assert store.list_versions("exp") == ["v1"]


def test_permission_denied_clear_error(sshd: Sshd, remote_dir: Path, tmp_path: Path) -> None:
    remote_dir.mkdir(mode=0o755)  # owned by root: the SFTP user may not write here
    url = sshd.url(remote_dir / "store")
    with pytest.raises(StoreError, match=f"permission denied for user '{sshd.user}'"):
        publish(url, "exp", "v1", make_files(tmp_path / "out", {"a.bin": 10}))
    assert remote_tree(remote_dir) == []


def test_wrong_key_refused(
    sshd: Sshd, remote_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBETRAIN_SSH_KEY", str(generate_key(tmp_path / "stranger")))
    with pytest.raises(SshAuthenticationError, match="refused the key"):
        open_store(sshd.url(remote_dir))
    assert not remote_dir.exists()


def test_encrypted_key_with_wrong_passphrase(
    sshd: Sshd, remote_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = generate_key(tmp_path / "locked", passphrase="right passphrase")
    sshd.authorize_key(Path(f"{key}.pub"))
    monkeypatch.setenv("KUBETRAIN_SSH_KEY", str(key))
    monkeypatch.setenv("KUBETRAIN_SSH_KEY_PASSPHRASE", "not-the-passphrase")
    with pytest.raises(SshAuthenticationError, match="wrong passphrase") as caught:
        open_store(sshd.url(remote_dir))
    assert "not-the-passphrase" not in str(caught.value)
    assert "KUBETRAIN_SSH_KEY_PASSPHRASE" in str(caught.value)
    monkeypatch.setenv("KUBETRAIN_SSH_KEY_PASSPHRASE", "right passphrase")
    publish(sshd.url(remote_dir), "exp", "v1", make_files(tmp_path / "out", {"a.bin": 10}))


def test_unknown_host_key_refused(
    sshd: Sshd, remote_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    monkeypatch.setenv("KUBETRAIN_KNOWN_HOSTS", str(empty))
    with pytest.raises(HostKeyError, match=f"ssh-keyscan -p {sshd.port} {sshd.address}"):
        open_store(sshd.url(remote_dir))
    assert not remote_dir.exists()


def test_changed_host_key_refused(
    sshd: Sshd, remote_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    impostor = generate_key(tmp_path / "impostor")
    key_type, key_b64 = Path(f"{impostor}.pub").read_text().split()[:2]
    changed = tmp_path / "known_hosts"
    changed.write_text(f"[{sshd.address}]:{sshd.port} {key_type} {key_b64}\n")
    monkeypatch.setenv("KUBETRAIN_KNOWN_HOSTS", str(changed))
    with pytest.raises(HostKeyError, match="HOST KEY CHANGED"):
        open_store(sshd.url(remote_dir))
    assert not remote_dir.exists()


@pytest.mark.parametrize("experiment", ["../evil", "/abs", "a/b", "..", "x\ny"])
def test_path_traversal_experiment_refused(
    sshd: Sshd, remote_dir: Path, tmp_path: Path, experiment: str
) -> None:
    files = make_files(tmp_path / "out", {"a.bin": 10})
    with pytest.raises(StoreError, match="invalid experiment name"):
        publish(sshd.url(remote_dir / "store"), experiment, "v1", files)
    assert remote_tree(remote_dir) == []
    assert not (sshd.home / "evil").exists()


def test_bad_url_refused_before_connecting(sshd: Sshd) -> None:
    with pytest.raises(StoreError, match="names no user"):
        open_store(f"sftp://{sshd.address}:{sshd.port}/tmp/x")


def test_download_file_for_data_sources(sshd: Sshd, remote_dir: Path, tmp_path: Path) -> None:
    remote_dir.mkdir()
    (remote_dir / "letters.csv").write_text("a,b\n1,2\n")
    destination = tmp_path / "data/letters.csv"
    download_file(sshd.url(remote_dir / "letters.csv"), destination)
    assert destination.read_text() == "a,b\n1,2\n"
    # /~/ is the SFTP user's home.
    home_relative = f"sftp://{sshd.user}@{sshd.address}:{sshd.port}/~/{remote_dir.name}/letters.csv"
    download_file(home_relative, tmp_path / "again.csv")
    assert (tmp_path / "again.csv").read_text() == "a,b\n1,2\n"
    with pytest.raises(StoreError, match="no such file"):
        download_file(sshd.url(remote_dir / "missing.csv"), tmp_path / "missing.csv")
    assert not (tmp_path / "missing.csv").exists()
    with pytest.raises(StoreError, match="larger than KUBETRAIN_MAX_DOWNLOAD_BYTES=7"):
        download_file(sshd.url(remote_dir / "letters.csv"), tmp_path / "big.csv", max_bytes=7)
    assert not (tmp_path / "big.csv").exists()


def test_progress_artifact_and_logs_inside_a_flow_run(
    sshd: Sshd,
    remote_dir: Path,
    tmp_path: Path,
    prefect_server: object,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    monkeypatch.setattr(sftp_module, "PROGRESS_MIN_BYTES", 1_000_000)
    files = make_files(tmp_path / "out", {"clf_nn.joblib": 2_000_000, "small.json": 10})
    url = sshd.url(remote_dir)

    @flow(name="sftp-progress-check")
    def publish_flow() -> Any:
        from prefect.runtime import flow_run

        publish(url, "exp", "v1", files)
        return flow_run.id

    # Prefect's run loggers do not propagate to the root logger caplog listens on.
    run_logger = logging.getLogger("prefect.flow_runs")
    run_logger.addHandler(caplog.handler)
    try:
        run_id = publish_flow()
    finally:
        run_logger.removeHandler(caplog.handler)
    assert "clf_nn.joblib.part: 100% of 2.0 MB" in caplog.text
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[uuid.UUID(str(run_id))])
            )
        )
    progress = [a for a in artifacts if a.type == "progress"]
    # One for the upload of the large file, none for the small one.
    assert len(progress) == 1
    assert "clf_nn.joblib.part" in (progress[0].description or "")
    assert progress[0].data == pytest.approx(100.0)


def test_train_flow_reads_csv_from_and_publishes_to_sftp(
    sshd: Sshd, remote_dir: Path, tmp_path: Path, prefect_server: object
) -> None:
    import joblib

    from flows.train import train
    from tests.train_helpers import write_original_layout_csv

    remote_dir.mkdir()
    shutil.chown(remote_dir, sshd.user, sshd.user)
    csv = write_original_layout_csv(remote_dir / "letters.csv")
    shutil.chown(csv, sshd.user, sshd.user)
    data_url = sshd.url(csv)
    destination = sshd.url(remote_dir / "models")

    outcome = train(
        data=data_url,
        models=["lda"],
        destination=destination,
        experiment="letters",
    )

    assert outcome.location == f"{destination}/letters/{outcome.version}"
    with open_store(destination) as store:
        assert store.latest("letters") == outcome.version
        assert store.list_versions("letters") == [outcome.version]
        fetched = store.fetch("letters", None, tmp_path / "fetched")  # verifies every sha256
    assert {"clf_lda.joblib", "metadata.json", "manifest.json"} <= set(os.listdir(fetched))
    manifest = json.loads((fetched / "manifest.json").read_text())
    assert manifest["data"]["source"] == data_url
    assert manifest["data"]["sha256"] == hashlib.sha256(csv.read_bytes()).hexdigest()
    metadata = json.loads((fetched / "metadata.json").read_text())
    folds = manifest["models"]["lda"]["cv"]["accuracy"]["folds"]
    assert metadata["train_accuracy_lda"] == pytest.approx(sum(folds) / len(folds), rel=1e-12)
    model = joblib.load(fetched / "clf_lda.joblib")
    assert hasattr(model, "predict")
    # Credentials never travel as flow parameters.
    text = json.dumps(manifest["parameters"])
    assert "KUBETRAIN_SSH" not in text
    assert sshd.client_key.read_text().splitlines()[1] not in text
    assert not [p for p in remote_tree(remote_dir) if p.endswith(".part")]
