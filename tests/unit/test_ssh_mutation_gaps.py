"""kubetrain/ssh.py behaviour that mutation testing found unasserted (issue #17).

Stand-ins only where the real thing is out of reach of a fast test: Prefect's Secret lookup
(the real API server is left out of mutation runs) and the name resolver (a real unresolvable
name would send a DNS query outside 127.0.0.0/8).
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from prefect.blocks.system import Secret

from kubetrain import ssh
from kubetrain.ssh import KeySource, SshEndpoint, SshError, SshTransientError
from tests.sshd import generate_key


@pytest.fixture
def secret_blocks(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Secret blocks by name; Secret.load finds only these (an unknown name: ValueError)."""
    blocks: dict[str, str] = {}

    def load(name: str, *args: Any, **kwargs: Any) -> Secret:
        if name not in blocks:
            raise ValueError(f"Unable to find block document named {name}")
        return Secret(value=blocks[name])

    monkeypatch.setattr(Secret, "load", load)
    return blocks


def test_passphrase_is_read_from_the_named_secret_block(
    tmp_path: Path, secret_blocks: dict[str, str]
) -> None:
    key = generate_key(tmp_path / "id_ed25519", passphrase="block-secret")
    secret_blocks["ssh-passphrase"] = "block-secret"
    secret_blocks["other"] = "wrong"
    loaded = KeySource(path=key, passphrase_secret_block="ssh-passphrase").load()
    public = (tmp_path / "id_ed25519.pub").read_text().split()
    assert [loaded.get_name(), loaded.get_base64()] == public[:2]


def test_a_missing_passphrase_block_is_named_as_the_passphrase(
    tmp_path: Path, secret_blocks: dict[str, str]
) -> None:
    key = generate_key(tmp_path / "id_ed25519", passphrase="block-secret")
    with pytest.raises(ssh.SshAuthenticationError) as raised:
        KeySource(path=key, passphrase_secret_block="ssh-passphrase").load()
    message = str(raised.value)
    # The user must learn which block to create, and that it is the passphrase, not the key.
    assert "'ssh-passphrase'" in message
    assert "SSH key passphrase" in message
    assert "private key" not in message


@pytest.fixture
def endpoint_key(tmp_path: Path) -> tuple[Path, Any]:
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("")
    return known_hosts, KeySource(path=generate_key(tmp_path / "id_ed25519")).load()


def test_an_unresolvable_host_fails_at_once_naming_the_host(
    monkeypatch: pytest.MonkeyPatch, endpoint_key: tuple[Path, Any]
) -> None:
    real = socket.getaddrinfo
    looked_up: list[str] = []

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host == "build-box.example.invalid":
            looked_up.append(host)
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    known_hosts, pkey = endpoint_key
    endpoint = SshEndpoint("build-box.example.invalid", "admin", KeySource(), known_hosts)
    with pytest.raises(SshError) as raised:
        ssh._connect_once(endpoint, pkey)
    assert not isinstance(raised.value, SshTransientError)  # retrying will not help
    message = str(raised.value)
    assert "'build-box.example.invalid'" in message
    assert "Name or service not known" in message
    assert looked_up == ["build-box.example.invalid"]


def test_a_listener_that_never_completes_the_handshake_times_out(
    endpoint_key: tuple[Path, Any],
) -> None:
    """The TCP connect itself is bounded by connect_timeout (a host that drops SYNs)."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    fillers: list[socket.socket] = []
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        # Fill the accept queue without accepting: the kernel then drops further SYNs, so the
        # next connect neither succeeds nor is refused (like a firewalled host).
        for _ in range(4):
            filler = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
            fillers.append(filler)
        time.sleep(0.2)
        probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        probe.settimeout(0.5)
        try:
            probe.connect(("127.0.0.1", port))
        except TimeoutError:
            pass
        else:
            pytest.skip("this kernel completed a connect on a full accept queue")
        finally:
            probe.close()
        known_hosts, pkey = endpoint_key
        endpoint = SshEndpoint(
            "127.0.0.1", "admin", KeySource(), known_hosts, port=port, connect_timeout=1.0
        )
        outcome: list[BaseException] = []

        def attempt() -> None:
            try:
                ssh._connect_once(endpoint, pkey)
            except BaseException as error:  # handed to the test thread
                outcome.append(error)

        started = time.monotonic()
        worker = threading.Thread(target=attempt, daemon=True)
        worker.start()
        worker.join(timeout=15)
        assert not worker.is_alive(), "connect did not give up within 15 s (timeout 1 s)"
        assert time.monotonic() - started < 10
        assert len(outcome) == 1, outcome
        assert isinstance(outcome[0], SshTransientError), outcome
        assert f"127.0.0.1:{port}" in str(outcome[0])
    finally:
        for filler in fillers:
            filler.close()
        listener.close()
