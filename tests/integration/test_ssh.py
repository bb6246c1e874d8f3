"""kubetrain/ssh.py against a real OpenSSH sshd: host-key checks, keys, retries, remote commands."""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from kubetrain import ssh
from kubetrain.ssh import (
    HostKeyError,
    KeySource,
    SshAuthenticationError,
    SshCommandTimeout,
    SshEndpoint,
    SshTransientError,
    connect,
    run_command,
)
from tests.sshd import Sshd, generate_key


def endpoint(
    server: Sshd, key: KeySource | None = None, known_hosts: Path | None = None
) -> SshEndpoint:
    return SshEndpoint(
        host=server.address,
        user=server.user,
        key=key or KeySource(path=server.client_key),
        known_hosts=known_hosts or server.known_hosts,
        port=server.port,
        connect_timeout=5,
    )


def test_command_exit_code_output_and_stdin(sshd: Sshd) -> None:
    client = connect(endpoint(sshd))
    try:
        result = run_command(client, "echo out; echo err >&2; exit 3", timeout=20)
        assert (result.exit_code, result.stdout, result.stderr) == (3, "out\n", "err\n")
        assert not result.ok
        echoed = run_command(client, "tr a-z A-Z", timeout=20, stdin=b"hello")
        assert echoed.ok
        assert echoed.stdout == "HELLO"
    finally:
        client.close()


def test_command_timeout_raises(sshd: Sshd) -> None:
    client = connect(endpoint(sshd))
    try:
        with pytest.raises(SshCommandTimeout, match=r"within 0\.5s"):
            run_command(client, "sleep 10", timeout=0.5)
        # The connection is still usable for the next command.
        assert run_command(client, "true", timeout=20).ok
    finally:
        client.close()


@pytest.fixture
def standin_dir() -> Iterator[Path]:
    # Outside pytest's 0700 tmp tree: the unprivileged test user must be able to run these.
    path = Path(tempfile.mkdtemp(prefix="kubetrain-standins-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        subprocess.run(["rm", "-rf", str(path)], check=True)


def test_second_host_with_setenv_path_and_sudo_prefix(
    sshd: Sshd, tmp_path: Path, standin_dir: Path
) -> None:
    sudo = standin_dir / "sudo"
    sudo.write_text('#!/bin/sh\necho "sudo-args: $1 $2" >&2\nshift\nexec "$@"\n')
    sudo.chmod(0o755)
    with Sshd(
        tmp_path / "second",
        address="127.0.0.2",
        extra_config=[f"SetEnv PATH={standin_dir}:/usr/bin:/bin"],
    ) as second:
        client = connect(endpoint(second))
        try:
            result = run_command(
                client, "echo $PATH | cut -d: -f1; echo a | tr a b", timeout=20, sudo=True
            )
            # session_pids() sees this instance's session process only.
            assert len(second.session_pids()) == 1
            assert second.session_pids()[0] not in sshd.session_pids()
        finally:
            client.close()
        assert result.ok, result
        assert result.stdout == f"{standin_dir}\nb\n"
        # The whole command line (pipe included) ran under `sudo -n sh -c`.
        assert result.stderr == "sudo-args: -n sh\n"


def test_unknown_host_key_refused_with_keyscan_hint(sshd: Sshd, tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    with pytest.raises(HostKeyError) as caught:
        connect(endpoint(sshd, known_hosts=empty))
    message = str(caught.value)
    assert f"ssh-keyscan -p {sshd.port} {sshd.address}" in message
    assert "not in" in message
    assert "out of band" in message


def test_plain_host_entry_does_not_match_nonstandard_port(sshd: Sshd, tmp_path: Path) -> None:
    line = sshd.known_hosts.read_text().split(" ", 1)[1]
    plain = tmp_path / "known_hosts"
    plain.write_text(f"{sshd.address} {line}")
    with pytest.raises(HostKeyError):
        connect(endpoint(sshd, known_hosts=plain))


def test_changed_host_key_refused(sshd: Sshd, tmp_path: Path) -> None:
    other = generate_key(tmp_path / "other_host_key")
    key_type, key_b64 = Path(f"{other}.pub").read_text().split()[:2]
    changed = tmp_path / "known_hosts"
    changed.write_text(f"[{sshd.address}]:{sshd.port} {key_type} {key_b64}\n")
    with pytest.raises(HostKeyError, match="HOST KEY CHANGED") as caught:
        connect(endpoint(sshd, known_hosts=changed))
    assert "ssh-keygen -R" in str(caught.value)


def test_missing_known_hosts_file(sshd: Sshd, tmp_path: Path) -> None:
    with pytest.raises(HostKeyError, match="does not exist"):
        connect(endpoint(sshd, known_hosts=tmp_path / "nope"))


def test_hashed_known_hosts_entry_accepted(sshd: Sshd, tmp_path: Path) -> None:
    hashed = tmp_path / "known_hosts"
    hashed.write_text(sshd.known_hosts.read_text())
    subprocess.run(["ssh-keygen", "-H", "-f", str(hashed)], check=True, capture_output=True)
    assert sshd.address not in hashed.read_text()
    connect(endpoint(sshd, known_hosts=hashed)).close()


def test_wrong_key_refused_without_retry(
    sshd: Sshd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stranger = generate_key(tmp_path / "stranger")
    calls = []
    real = ssh._connect_once

    def counting(*args: object) -> object:
        calls.append(1)
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(ssh, "_connect_once", counting)
    with pytest.raises(SshAuthenticationError, match="refused the key"):
        connect(endpoint(sshd, key=KeySource(path=stranger)))
    assert len(calls) == 1


@pytest.mark.parametrize("key_type", ["rsa", "ecdsa"])
def test_rsa_and_ecdsa_keys(sshd: Sshd, tmp_path: Path, key_type: str) -> None:
    key = generate_key(tmp_path / key_type, key_type)
    sshd.authorize_key(Path(f"{key}.pub"))
    client = connect(endpoint(sshd, key=KeySource(path=key)))
    assert run_command(client, "id -un", timeout=20).stdout.strip() == sshd.user
    client.close()


def test_encrypted_key_passphrase_from_env_and_wrong_passphrase(
    sshd: Sshd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "correct horse battery"
    key = generate_key(tmp_path / "locked", passphrase=secret)
    sshd.authorize_key(Path(f"{key}.pub"))
    monkeypatch.setenv("KT_TEST_PASS", secret)
    source = KeySource(path=key, passphrase_env="KT_TEST_PASS")
    connect(endpoint(sshd, key=source)).close()

    monkeypatch.setenv("KT_TEST_PASS", "wrong-passphrase-xyz")
    with pytest.raises(SshAuthenticationError, match="wrong passphrase") as caught:
        connect(endpoint(sshd, key=source))
    assert "wrong-passphrase-xyz" not in str(caught.value)
    assert secret not in repr(source)

    with pytest.raises(SshAuthenticationError, match="encrypted and no passphrase"):
        connect(endpoint(sshd, key=KeySource(path=key)))


def test_key_text_from_env_var_never_echoed(sshd: Sshd, monkeypatch: pytest.MonkeyPatch) -> None:
    text = sshd.client_key.read_text()
    monkeypatch.setenv("KT_TEST_KEY", text)
    source = KeySource(env_var="KT_TEST_KEY")
    ep = endpoint(sshd, key=source)
    connect(ep).close()
    body = text.splitlines()[1]
    assert body not in repr(ep)
    assert body not in repr(source)


def test_refused_port_retried_with_backoff_then_clear_error(
    sshd: Sshd, monkeypatch: pytest.MonkeyPatch
) -> None:
    sleeps: list[float] = []
    monkeypatch.setattr(ssh.time, "sleep", sleeps.append)
    closed = SshEndpoint(
        host=sshd.address,
        user=sshd.user,
        key=KeySource(path=sshd.client_key),
        known_hosts=sshd.known_hosts,
        port=1,  # nothing listens on port 1 here
        connect_timeout=2,
    )
    with pytest.raises(SshTransientError, match="gave up after 3 attempts"):
        connect(closed, attempts=3, base_delay=0.2)
    assert len(sleeps) == 2
    assert 0.1 <= sleeps[0] <= 0.2
    assert 0.2 <= sleeps[1] <= 0.4


def test_transient_failure_then_success(sshd: Sshd, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ssh.time, "sleep", lambda _s: None)
    real = ssh._connect_once
    failures = [SshTransientError("reset"), SshTransientError("reset")]

    def flaky(ep: SshEndpoint, key: object) -> object:
        if failures:
            raise failures.pop()
        return real(ep, key)  # type: ignore[arg-type]

    monkeypatch.setattr(ssh, "_connect_once", flaky)
    client = connect(endpoint(sshd), attempts=3)
    assert run_command(client, "true", timeout=20).ok
    client.close()


def test_key_from_prefect_secret_block(sshd: Sshd, prefect_server: object) -> None:
    from prefect.blocks.system import Secret
    from pydantic import SecretStr

    name = "kubetrain-test-ssh-key"
    Secret(value=SecretStr(sshd.client_key.read_text())).save(name, overwrite=True)
    connect(endpoint(sshd, key=KeySource(secret_block=name))).close()
    with pytest.raises(SshAuthenticationError, match="not found"):
        connect(endpoint(sshd, key=KeySource(secret_block="kubetrain-no-such-block")))
