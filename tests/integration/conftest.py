"""Integration fixtures: a real OpenSSH sshd on 127.0.0.1 (session) and per-test SFTP roots."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.sshd import Sshd


def _sshd_unavailable() -> str | None:
    if not Path("/usr/sbin/sshd").exists():
        return "OpenSSH server not installed (apt-get install -y openssh-server)"
    if os.geteuid() != 0:
        return "the test sshd needs root (it creates the test user and runs sshd)"
    return None


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    """A private OpenSSH sshd on 127.0.0.1 for the whole session (user `kubetrain`)."""
    reason = _sshd_unavailable()
    if reason:
        pytest.skip(reason)
    server = Sshd(tmp_path_factory.mktemp("sshd"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def remote_dir(sshd: Sshd) -> Iterator[Path]:
    """A fresh, not yet existing directory path in the test user's home (removed afterwards)."""
    path = sshd.home / f"kt-test-{uuid.uuid4().hex[:10]}"
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def ssh_env(sshd: Sshd, monkeypatch: pytest.MonkeyPatch) -> Sshd:
    """KUBETRAIN_SSH_KEY / KUBETRAIN_KNOWN_HOSTS pointing at the session sshd's key and host key."""
    for name in list(os.environ):
        if name.startswith("KUBETRAIN_SSH_") or name == "KUBETRAIN_KNOWN_HOSTS":
            monkeypatch.delenv(name)
    monkeypatch.setenv("KUBETRAIN_SSH_KEY", str(sshd.client_key))
    monkeypatch.setenv("KUBETRAIN_KNOWN_HOSTS", str(sshd.known_hosts))
    return sshd
