"""The SSH client offers only the configured key: never agent keys, never ~/.ssh keys (issue #17).

Behavioural, against the real test sshd: the authorized key sits both in a running ssh-agent
(SSH_AUTH_SOCK) and in ~/.ssh of a fake HOME, while the configured key is a wrong one. The
connection must fail; if paramiko were allowed the agent or ~/.ssh it would log in.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest

from kubetrain.ssh import HostKeyError, KeySource, SshAuthenticationError, SshEndpoint, connect
from tests.sshd import Sshd, generate_key


@pytest.fixture
def tempting_keys(sshd: Sshd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """HOME with the authorized key in ~/.ssh and an ssh-agent holding it; yields a wrong key."""
    if shutil.which("ssh-agent") is None or shutil.which("ssh-add") is None:
        pytest.skip("ssh-agent/ssh-add not installed (apt-get install -y openssh-client)")
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True, mode=0o700)
    for name in ("id_ed25519", "id_rsa", "id_ecdsa"):
        shutil.copy(sshd.client_key, home / ".ssh" / name)
        (home / ".ssh" / name).chmod(0o600)
    socket_path = tmp_path / "agent.sock"
    agent = subprocess.Popen(
        ["ssh-agent", "-D", "-a", str(socket_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while not socket_path.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        env = dict(os.environ, SSH_AUTH_SOCK=str(socket_path))
        subprocess.run(
            ["ssh-add", str(sshd.client_key)], env=env, check=True, capture_output=True, timeout=10
        )
        monkeypatch.setenv("HOME", str(home))
        monkeypatch.setenv("SSH_AUTH_SOCK", str(socket_path))
        yield generate_key(tmp_path / "wrong_ed25519")
    finally:
        agent.terminate()
        agent.wait(timeout=10)


def _endpoint(server: Sshd, key: Path) -> SshEndpoint:
    return SshEndpoint(
        host=server.address,
        user=server.user,
        key=KeySource(path=key),
        known_hosts=server.known_hosts,
        port=server.port,
        connect_timeout=5,
    )


@pytest.mark.parametrize("source", ["agent", "home"])
def test_the_set_up_would_log_in_if_paramiko_looked(
    sshd: Sshd, tempting_keys: Path, source: str
) -> None:
    # The premise: each of the two tempting sources alone is enough to log in.
    client = paramiko.SSHClient()
    client.load_host_keys(str(sshd.known_hosts))
    try:
        client.connect(
            sshd.address,
            port=sshd.port,
            username=sshd.user,
            pkey=paramiko.Ed25519Key.from_private_key_file(str(tempting_keys)),
            timeout=5,
            allow_agent=source == "agent",
            look_for_keys=source == "home",
        )
    finally:
        client.close()


def test_only_the_configured_key_is_offered(sshd: Sshd, tempting_keys: Path) -> None:
    with pytest.raises(SshAuthenticationError, match=r"refused the key from key file .*wrong"):
        connect(_endpoint(sshd, tempting_keys), attempts=1)


def test_the_configured_key_still_logs_in(sshd: Sshd, tempting_keys: Path) -> None:
    client = connect(_endpoint(sshd, sshd.client_key), attempts=1)
    client.close()


def _plain_endpoint(server: Sshd, key: Path, known_hosts: Path) -> SshEndpoint:
    return SshEndpoint(
        host=server.address,
        user=server.user,
        key=KeySource(path=key),
        known_hosts=known_hosts,
        port=server.port,
        connect_timeout=10,
    )


def test_a_changed_host_key_message_gives_the_safe_fix(sshd: Sshd, tmp_path: Path) -> None:
    other = generate_key(tmp_path / "other_host_key")
    key_type, key_b64 = Path(f"{other}.pub").read_text().split()[:2]
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"[{sshd.address}]:{sshd.port} {key_type} {key_b64}\n")
    with pytest.raises(HostKeyError) as raised:
        connect(_plain_endpoint(sshd, sshd.client_key, known_hosts), attempts=1)
    message = str(raised.value)
    assert (
        "This can be a man-in-the-middle attack or a reinstalled server; refusing to connect. "
        "If the change is legitimate, remove the old entry "
        f"(`ssh-keygen -R '[{sshd.address}]:{sshd.port}' -f {known_hosts}`) and get the "
        f"server's key with `ssh-keyscan -p {sshd.port} {sshd.address}`" in message
    )


def test_a_refused_key_message_says_where_the_key_must_be(sshd: Sshd, tmp_path: Path) -> None:
    wrong = generate_key(tmp_path / "wrong_ed25519")
    with pytest.raises(SshAuthenticationError) as raised:
        connect(_plain_endpoint(sshd, wrong, sshd.known_hosts), attempts=1)
    assert str(raised.value) == (
        f"{sshd.user}@{sshd.address}:{sshd.port} refused the key from key file {wrong}; check "
        f"that its public key is in ~{sshd.user}/.ssh/authorized_keys on the server and that "
        "the user may log in"
    )
