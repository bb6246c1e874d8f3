"""The SFTP backend with and without paramiko's private internals moves the same bytes.

kubetrain/store/sftp.py uses a few private paramiko attributes only for paramiko versions in
PARAMIKO_INTERNALS_TESTED and the public API otherwise; both paths run here against a real sshd.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest

from kubetrain.store import StoreError, open_store
from kubetrain.store import sftp as sftp_module
from kubetrain.store.sftp import SftpBackend
from tests.sshd import Sshd

pytestmark = pytest.mark.usefixtures("ssh_env")


@pytest.fixture(params=[True, False], ids=["internals", "public-api"])
def internals(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    monkeypatch.setattr(sftp_module, "USE_PARAMIKO_INTERNALS", request.param)
    return bool(request.param)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_upload_and_download_move_the_same_bytes(
    sshd: Sshd, remote_dir: Path, tmp_path: Path, internals: bool
) -> None:
    remote_dir.mkdir()
    shutil.chown(remote_dir, sshd.user, sshd.user)
    # Several full 255 KiB requests plus a ragged tail, and an empty file.
    payload = tmp_path / "payload.bin"
    payload.write_bytes(os.urandom(5 * sftp_module.MAX_REQUEST_BYTES + 12_345))
    empty = tmp_path / "empty.bin"
    empty.write_bytes(b"")
    with open_store(sshd.url(remote_dir)) as store:
        backend = store.backend
        assert isinstance(backend, SftpBackend)
        sftp = backend._session()
        # The private speed-ups are installed exactly when the gate allows them.
        assert ("_read_all" in vars(sftp)) is internals
        assert isinstance(sftp.get_channel().in_buffer._buffer, bytearray) is internals  # type: ignore[union-attr]
        for source in (payload, empty):
            backend.upload(source, source.name, None)
            assert _sha256(remote_dir / source.name) == _sha256(source)
            back = tmp_path / f"back-{source.name}"
            backend.download(source.name, back, None)
            assert _sha256(back) == _sha256(source)
            assert backend.sha256(source.name) == _sha256(source)
        assert backend.read_bytes(payload.name, payload.stat().st_size) == payload.read_bytes()
        with pytest.raises(StoreError, match="larger than"):
            backend.read_bytes(payload.name, payload.stat().st_size - 1)


def test_session_asks_for_the_transfer_settings(
    sshd: Sshd, remote_dir: Path, internals: bool
) -> None:
    # A wide window and large packets let the server coalesce downloads when the client lags,
    # but only pay with the bytearray channel buffer, so only the internals path asks for
    # them; TCP_NODELAY keeps paramiko's one-send-per-message from waiting on delayed ACKs.
    remote_dir.mkdir()
    shutil.chown(remote_dir, sshd.user, sshd.user)
    with open_store(sshd.url(remote_dir)) as store:
        backend = store.backend
        assert isinstance(backend, SftpBackend)
        channel = backend._session().get_channel()
        assert channel is not None
        transport = channel.get_transport()
        assert transport is not None
        window = sftp_module.CHANNEL_WINDOW_BYTES if internals else transport.default_window_size
        packet = (
            sftp_module.CHANNEL_MAX_PACKET_BYTES if internals else transport.default_max_packet_size
        )
        assert channel.in_window_size == window
        assert channel.in_max_packet_size == packet
        sock = transport.sock
        assert isinstance(sock, socket.socket)
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


def test_gate_follows_the_installed_paramiko_version() -> None:
    supported = sftp_module.paramiko_internals_supported
    low, high = sftp_module.PARAMIKO_INTERNALS_TESTED
    assert supported(f"{low[0]}.{low[1]}.0")
    assert not supported(f"{high[0]}.{high[1]}.0")
    assert not supported(f"{low[0] - 1}.99.9")
    assert not supported("not a version")
    assert supported(paramiko.__version__) == sftp_module.USE_PARAMIKO_INTERNALS


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


def test_full_disk_is_a_server_error_on_both_paths(
    sshd: Sshd,
    small_disk: Path,
    tmp_path: Path,
    internals: bool,
    caplog: pytest.LogCaptureFixture,
) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(3_000_000))
    caplog.set_level(logging.WARNING, logger="kubetrain.store.sftp")
    with open_store(sshd.url(small_disk)) as store, pytest.raises(StoreError) as caught:
        store.backend.upload(big, "big.bin.part", None)
    assert "disk is full" in str(caught.value)
    assert ("bytes free there" in str(caught.value)) is internals  # statvfs needs internals
    assert "reconnecting" not in caplog.text  # a status reply, not a lost connection
    assert not (small_disk / "big.bin.part").exists()
