"""The SSH client offers only the configured key: never agent keys, never ~/.ssh keys (issue #17).

Behavioural, against the real test sshd: the authorized key sits both in a running ssh-agent
(SSH_AUTH_SOCK) and in ~/.ssh of a fake HOME, while the configured key is a wrong one. The
connection must fail; if paramiko were allowed the agent or ~/.ssh it would log in.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest

from kubetrain.ssh import (
    HostKeyError,
    KeySource,
    SshAuthenticationError,
    SshEndpoint,
    SshError,
    SshTransientError,
    connect,
)
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
        # The socket file appears at bind(), before the agent listens: retry while it starts.
        while True:
            added = subprocess.run(
                ["ssh-add", str(sshd.client_key)], env=env, capture_output=True, timeout=10
            )
            if added.returncode == 0 or time.monotonic() >= deadline:
                added.check_returncode()
                break
            time.sleep(0.05)
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


def test_connections_negotiate_aes_gcm_and_send_without_delay(sshd: Sshd) -> None:
    """Throughput: AES-GCM (hardware-accelerated AEAD) rather than paramiko's default CTR+HMAC,
    and no Nagle delay on the many small request/reply messages of SFTP."""
    client = connect(_plain_endpoint(sshd, sshd.client_key, sshd.known_hosts), attempts=1)
    try:
        transport = client.get_transport()
        assert transport is not None
        ciphers = (transport.local_cipher, getattr(transport, "remote_cipher", None))
        assert ciphers == ("aes128-gcm@openssh.com",) * 2
        assert isinstance(transport.sock, socket.socket)
        assert transport.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    finally:
        client.close()


def test_a_server_without_a_common_cipher_fails_once_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not retried (retrying cannot help) and the message names the server."""
    if os.geteuid() != 0 or not Path("/usr/sbin/sshd").exists():
        pytest.skip("the test sshd needs root and openssh-server")
    import kubetrain.ssh

    retries: list[int] = []

    def no_wait(attempt: int, base: float) -> float:
        retries.append(attempt)
        return 0.0

    monkeypatch.setattr(kubetrain.ssh, "backoff_delay", no_wait)
    odd = Sshd(tmp_path / "sshd", extra_config=["Ciphers chacha20-poly1305@openssh.com"])
    with odd, pytest.raises(SshError) as raised:
        connect(_plain_endpoint(odd, odd.client_key, odd.known_hosts), attempts=3)
    assert not isinstance(raised.value, SshTransientError)
    assert retries == []
    message = str(raised.value)
    assert f"cannot connect to {odd.user}@{odd.address}:{odd.port}" in message
    assert "cipher" in message
