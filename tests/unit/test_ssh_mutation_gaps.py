"""kubetrain/ssh.py behaviour that mutation testing found unasserted (issue #17).

Stand-ins only where the real thing is out of reach of a fast test: Prefect's Secret lookup
(the real API server is left out of mutation runs) and the name resolver (a real unresolvable
name would send a DNS query outside 127.0.0.0/8).
"""

from __future__ import annotations

import base64
import socket
import subprocess
import threading
import time
from collections.abc import Callable
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


def test_private_key_is_read_from_the_named_secret_block(
    tmp_path: Path, secret_blocks: dict[str, str]
) -> None:
    key = generate_key(tmp_path / "id_ed25519")
    secret_blocks["ssh-key"] = key.read_text()
    secret_blocks["other"] = "not a key"
    loaded = KeySource(secret_block="ssh-key").load()
    public = (tmp_path / "id_ed25519.pub").read_text().split()
    assert [loaded.get_name(), loaded.get_base64()] == public[:2]


def test_a_missing_key_block_is_named_as_the_private_key(
    secret_blocks: dict[str, str],
) -> None:
    with pytest.raises(ssh.SshAuthenticationError) as raised:
        KeySource(secret_block="ssh-key").load()
    message = str(raised.value)
    assert "'ssh-key'" in message
    assert "SSH private key" in message
    assert "passphrase" not in message


def test_an_empty_key_variable_and_no_key_source_say_what_to_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KUBETRAIN_SSH_KEY_DATA", " \n")
    with pytest.raises(ssh.SshAuthenticationError) as raised:
        KeySource(env_var="KUBETRAIN_SSH_KEY_DATA").load()
    assert str(raised.value) == (
        "environment variable KUBETRAIN_SSH_KEY_DATA is empty or unset; "
        "set it to the private key text"
    )
    with pytest.raises(ssh.SshAuthenticationError) as raised:
        KeySource().load()
    assert str(raised.value) == (
        "no SSH private key configured: set KUBETRAIN_SSH_KEY=/path/to/key, "
        "KUBETRAIN_SSH_KEY_DATA=<key text> or "
        "KUBETRAIN_SSH_KEY_SECRET_BLOCK=<Prefect Secret block name>"
    )


def test_an_encrypted_pem_key_loads_with_its_passphrase(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Older tools write PEM ("BEGIN EC PRIVATE KEY" with DEK-Info), not the OpenSSH format."""
    key = tmp_path / "id_ecdsa"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ecdsa", "-m", "PEM", "-N", "pem-pw", "-f", str(key)],
        check=True,
        capture_output=True,
    )
    assert "ENCRYPTED" in key.read_text()
    monkeypatch.setenv("PEM_PASSPHRASE", "pem-pw")
    loaded = KeySource(path=key, passphrase_env="PEM_PASSPHRASE").load()
    public = Path(f"{key}.pub").read_text().split()
    assert [loaded.get_name(), loaded.get_base64()] == public[:2]


def _openssh_key_with_body(path: Path, change: Callable[[bytes], bytes]) -> Path:
    """path rewritten as an OpenSSH private key whose decoded body went through change."""
    lines = path.read_text().strip().splitlines()
    body = change(base64.b64decode("".join(lines[1:-1])))
    path.write_text(f"{lines[0]}\n{base64.b64encode(body).decode()}\n{lines[-1]}\n")
    return path


def test_an_unsupported_key_type_names_the_file_and_the_supported_types(tmp_path: Path) -> None:
    # e.g. a FIDO (sk-) key: a key type neither cryptography nor paramiko loads.
    key = _openssh_key_with_body(
        generate_key(tmp_path / "id_odd"), lambda b: b.replace(b"ssh-ed25519", b"ssh-ed99999")
    )
    with pytest.raises(ssh.SshAuthenticationError) as raised:
        KeySource(path=key).load()
    message = str(raised.value)
    assert f"key file {key}" in message
    assert "unsupported key type" in message
    assert "use an ed25519, ECDSA or RSA key" in message


@pytest.mark.filterwarnings("ignore::cryptography.utils.CryptographyDeprecationWarning")
def test_a_dsa_key_is_refused_naming_its_type(tmp_path: Path) -> None:
    try:
        key = generate_key(tmp_path / "id_dsa", key_type="dsa")
    except subprocess.CalledProcessError:
        pytest.skip("this ssh-keygen no longer generates DSA keys")
    with pytest.raises(ssh.SshAuthenticationError) as raised:
        KeySource(path=key).load()
    message = str(raised.value)
    assert f"key file {key}" in message
    assert "DSAPrivateKey" in message
    assert "use an ed25519, ECDSA or RSA key" in message


def test_a_damaged_key_with_a_needless_passphrase_names_the_key_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A passphrase configured for an unencrypted key is dropped; a damaged key must still be
    reported as the key file's problem, not as a wrong passphrase."""
    key = _openssh_key_with_body(
        generate_key(tmp_path / "id_ed25519"), lambda b: b[:-40] + b"\0" * 40
    )
    monkeypatch.setenv("SOME_PASSPHRASE", "needless")
    with pytest.raises(ssh.SshAuthenticationError) as raised:
        KeySource(path=key, passphrase_env="SOME_PASSPHRASE").load()
    message = str(raised.value)
    assert f"the SSH private key from key file {key} is not a readable" in message
    assert "passphrase" not in message


def test_a_passphrase_file_keeps_trailing_spaces_and_drops_only_the_line_end(
    tmp_path: Path,
) -> None:
    """Editors end the file with a newline; a space at the end is part of the passphrase."""
    key = tmp_path / "id_ed25519"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "two words ", "-f", str(key)],
        check=True,
        capture_output=True,
    )
    passphrase = tmp_path / "passphrase"
    passphrase.write_text("two words \r\n")
    loaded = KeySource(path=key, passphrase_file=passphrase).load()
    assert loaded.get_base64() == Path(f"{key}.pub").read_text().split()[1]
