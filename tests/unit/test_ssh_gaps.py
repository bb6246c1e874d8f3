"""kubetrain/ssh.py: what is retried and how long it waits (found untested by mutation testing)."""

from __future__ import annotations

import socket
from pathlib import Path

import paramiko
import pytest

from kubetrain.ssh import _is_transient, backoff_delay


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (ConnectionRefusedError(), True),
        (ConnectionResetError(), True),
        (TimeoutError(), True),
        (EOFError(), True),
        (paramiko.SSHException("Error reading SSH protocol banner"), True),
        (socket.gaierror(-2, "Name or service not known"), False),  # retrying will not help
        (paramiko.ssh_exception.IncompatiblePeer("no matching cipher"), False),
        (ValueError("a bug"), False),
    ],
)
def test_which_connect_failures_are_retried(error: BaseException, transient: bool) -> None:
    assert _is_transient(error) is transient


def test_default_backoff_starts_at_half_a_second_and_caps_at_ten() -> None:
    for _ in range(20):
        assert 0.25 <= backoff_delay(0) <= 0.5
        assert 0.5 <= backoff_delay(1) <= 1.0
        assert 5.0 <= backoff_delay(10) <= 10.0


SSH_VARIABLES = (
    "KUBETRAIN_SSH_KEY",
    "KUBETRAIN_SSH_KEY_DATA",
    "KUBETRAIN_SSH_KEY_SECRET_BLOCK",
    "KUBETRAIN_SSH_KEY_PASSPHRASE",
    "KUBETRAIN_SSH_KEY_PASSPHRASE_FILE",
    "KUBETRAIN_SSH_KEY_PASSPHRASE_SECRET_BLOCK",
)


def test_key_source_from_env_takes_every_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    from pathlib import Path

    from kubetrain.ssh import KeySource

    for name in SSH_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", "/home/someone")
    assert KeySource.from_env() == KeySource()
    monkeypatch.setenv("KUBETRAIN_SSH_KEY", "~/.ssh/id")
    monkeypatch.setenv("KUBETRAIN_SSH_KEY_DATA", "key text")
    monkeypatch.setenv("KUBETRAIN_SSH_KEY_SECRET_BLOCK", "key-block")
    monkeypatch.setenv("KUBETRAIN_SSH_KEY_PASSPHRASE", "pw")
    monkeypatch.setenv("KUBETRAIN_SSH_KEY_PASSPHRASE_FILE", "~/pw.txt")
    monkeypatch.setenv("KUBETRAIN_SSH_KEY_PASSPHRASE_SECRET_BLOCK", "pw-block")
    assert KeySource.from_env() == KeySource(
        path=Path("/home/someone/.ssh/id"),
        env_var="KUBETRAIN_SSH_KEY_DATA",
        secret_block="key-block",
        passphrase_env="KUBETRAIN_SSH_KEY_PASSPHRASE",
        passphrase_file=Path("/home/someone/pw.txt"),
        passphrase_secret_block="pw-block",
    )


def test_unknown_host_refusal_gives_the_whole_safe_trust_recipe(tmp_path: Path) -> None:
    from kubetrain.ssh import HostKeyError, KeySource, SshEndpoint, _RefuseUnknownHost

    known_hosts = tmp_path / "known_hosts"
    endpoint = SshEndpoint("10.0.0.7", "admin", KeySource(), known_hosts, port=2222)
    offered = paramiko.ECDSAKey.generate()
    client = paramiko.SSHClient()
    with pytest.raises(HostKeyError) as raised:
        _RefuseUnknownHost(endpoint).missing_host_key(client, "[10.0.0.7]:2222", offered)
    message = str(raised.value)
    assert message.startswith(f"host key of [10.0.0.7]:2222 is not in {known_hosts} ")
    assert f"(the server offered ecdsa-sha2-nistp256 {offered.fingerprint}); refusing" in message
    # The recipe's steps, each a command the user runs, in order, ending with the trust step.
    steps = [
        "get the server's key with `ssh-keyscan -p 2222 10.0.0.7`",
        "check its fingerprint (`ssh-keyscan -p 2222 10.0.0.7 | ssh-keygen -lf -`)",
        "against the one the server's administrator reads out of band",
        "(`ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub` on the server)",
    ]
    positions = [message.index(step) for step in steps]
    assert positions == sorted(positions)
    assert message.endswith(", and only then add the line to the known_hosts file")


@pytest.mark.parametrize("passphrase", [None, "a passphrase"])
def test_a_garbled_key_is_unreadable_not_a_wrong_passphrase(passphrase: str | None) -> None:
    from kubetrain.ssh import SshAuthenticationError, _parse_private_key

    garbled = "this text is not an SSH private key\n"
    with pytest.raises(SshAuthenticationError) as raised:
        _parse_private_key(
            garbled, passphrase, "KUBETRAIN_SSH_KEY_DATA", "KUBETRAIN_SSH_PASSPHRASE"
        )
    message = str(raised.value)
    assert "from KUBETRAIN_SSH_KEY_DATA is not a readable ed25519, ECDSA or RSA" in message
    assert "passphrase" not in message  # no passphrase would make this key readable


def test_key_and_passphrase_sources_are_described_by_kind_and_name(tmp_path: Path) -> None:
    from kubetrain.ssh import KeySource

    assert KeySource(env_var="K").describe() == "environment variable K"
    assert KeySource(secret_block="blk").describe() == "Prefect Secret block 'blk'"
    assert KeySource().describe() == "no key source"
    file = tmp_path / "pass"
    assert KeySource(passphrase_file=file)._describe_passphrase() == f"passphrase file {file}"
    assert (
        KeySource(passphrase_secret_block="pb")._describe_passphrase()
        == "Prefect Secret block 'pb'"
    )
    assert KeySource()._describe_passphrase() == "no passphrase source"


def test_a_passphrase_file_loses_only_its_line_ending(tmp_path: Path) -> None:
    from kubetrain.ssh import KeySource, SshAuthenticationError

    file = tmp_path / "pass"
    file.write_text(" XsecretX\r\n")
    assert KeySource(passphrase_file=file)._read_passphrase() == " XsecretX"
    with pytest.raises(
        SshAuthenticationError,
        match=rf"^cannot read the passphrase file {tmp_path}/gone: No such file",
    ):
        KeySource(passphrase_file=tmp_path / "gone")._read_passphrase()


def test_a_server_that_never_sends_its_banner_fails_within_the_connect_timeout(
    tmp_path: Path,
) -> None:
    import time

    from kubetrain.ssh import KeySource, SshEndpoint, SshTransientError, _connect_once
    from tests.train_helpers import StallingServer

    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("")
    with StallingServer() as server:
        endpoint = SshEndpoint(
            "127.0.0.1", "u", KeySource(), known_hosts, port=server.port, connect_timeout=0.5
        )
        started = time.monotonic()
        with pytest.raises(
            SshTransientError, match=r"^cannot connect to u@127\.0\.0\.1:\d+: SSHException: "
        ):
            _connect_once(endpoint, paramiko.ECDSAKey.generate())
    assert time.monotonic() - started < 5  # paramiko's own banner timeout is 15 s


def test_an_unreadable_known_hosts_file_is_named(tmp_path: Path) -> None:
    from kubetrain.ssh import HostKeyError, KeySource, SshEndpoint, _connect_once

    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("[127.0.0.1]:22 ssh-ed25519 not-base64!!\n")
    endpoint = SshEndpoint("127.0.0.1", "u", KeySource(), known_hosts)
    with pytest.raises(HostKeyError, match=rf"^cannot read known_hosts file {known_hosts}: "):
        _connect_once(endpoint, paramiko.ECDSAKey.generate())


def test_connect_tries_four_times_with_growing_delays_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import logging
    import threading

    import kubetrain.ssh as ssh

    calls: list[int] = []
    slept: list[float] = []

    def refuse(endpoint: object, pkey: object) -> None:
        calls.append(1)
        raise ssh.SshTransientError("refused")

    monkeypatch.setattr(ssh, "_connect_once", refuse)
    real_sleep, this_thread = ssh.time.sleep, threading.get_ident()

    def record_sleep(seconds: float) -> None:
        # time.sleep is global: threads left by earlier tests (paramiko's) must not be recorded.
        if threading.get_ident() == this_thread:
            slept.append(seconds)
        else:
            real_sleep(seconds)

    monkeypatch.setattr(ssh.time, "sleep", record_sleep)
    monkeypatch.setattr(ssh.KeySource, "load", lambda self: None)
    endpoint = ssh.SshEndpoint("10.0.0.7", "admin", ssh.KeySource(), tmp_path / "kh", port=2222)
    caplog.set_level(logging.WARNING, logger="kubetrain.ssh")
    with pytest.raises(ssh.SshTransientError, match=r"\(gave up after 4 attempts\)"):
        ssh.connect(endpoint)
    assert len(calls) == 4
    assert [0.25 <= slept[0] <= 0.5, 0.5 <= slept[1] <= 1.0, 1.0 <= slept[2] <= 2.0] == [True] * 3
    assert [m.split(" in ")[0] for m in caplog.messages if "10.0.0.7" in m] == [
        f"SSH connect to admin@10.0.0.7:2222 failed (refused); retry {n}/3" for n in (1, 2, 3)
    ]


def test_an_unset_key_variable_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    from kubetrain.ssh import KeySource, SshAuthenticationError

    monkeypatch.delenv("KUBETRAIN_TEST_UNSET_KEY", raising=False)
    with pytest.raises(
        SshAuthenticationError, match=r"^environment variable KUBETRAIN_TEST_UNSET_KEY is empty"
    ):
        KeySource(env_var="KUBETRAIN_TEST_UNSET_KEY")._read_key_text()


def test_a_missing_known_hosts_file_gives_the_keyscan_recipe_for_this_host(
    tmp_path: Path,
) -> None:
    from kubetrain.ssh import HostKeyError, KeySource, SshEndpoint, _connect_once

    endpoint = SshEndpoint("10.0.0.7", "u", KeySource(), tmp_path / "missing", port=2222)
    with pytest.raises(HostKeyError) as raised:
        _connect_once(endpoint, paramiko.ECDSAKey.generate())
    recipe = "get the server's key with `ssh-keyscan -p 2222 10.0.0.7`"
    assert f"known_hosts file with the server's key: {recipe}" in str(raised.value)
