"""Key loading, URL parsing and retry classification, without a server."""

from __future__ import annotations

import errno
import logging
from pathlib import Path
from typing import Any

import paramiko
import pytest

from kubetrain import ssh
from kubetrain.data import DataError, TransientFetchError
from kubetrain.errors import TransientError, UserError
from kubetrain.ssh import (
    KeySource,
    SshAuthenticationError,
    SshEndpoint,
    SshTransientError,
    backoff_delay,
)
from kubetrain.store import IntegrityError, StoreError, open_store
from kubetrain.store import sftp as sftp_module
from kubetrain.store.sftp import SftpBackend, SftpTransferError, SftpUrl, parse_sftp_url
from tasks.retries import retry_transient
from tests.sshd import generate_key

PASSPHRASE = "s3cret passphrase"


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("keys")
    made = {kind: generate_key(folder / kind, kind) for kind in ("ed25519", "ecdsa", "rsa")}
    made["encrypted"] = generate_key(folder / "encrypted", passphrase=PASSPHRASE)
    pem = folder / "rsa_pem"
    import subprocess

    subprocess.run(
        ["ssh-keygen", "-q", "-t", "rsa", "-b", "2048", "-m", "PEM", "-N", "", "-f", str(pem)],
        check=True,
    )
    made["rsa_pem"] = pem
    return made


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        ssh.ENV_KEY_PATH,
        ssh.ENV_KEY_DATA,
        ssh.ENV_KEY_SECRET_BLOCK,
        ssh.ENV_PASSPHRASE,
        ssh.ENV_PASSPHRASE_FILE,
        ssh.ENV_PASSPHRASE_SECRET_BLOCK,
        ssh.ENV_KNOWN_HOSTS,
    ):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("ed25519", paramiko.Ed25519Key),
        ("ecdsa", paramiko.ECDSAKey),
        ("rsa", paramiko.RSAKey),
        ("rsa_pem", paramiko.RSAKey),
    ],
)
def test_key_types_load_from_file(keys: dict[str, Path], kind: str, expected: type) -> None:
    assert isinstance(KeySource(path=keys[kind]).load(), expected)


def test_encrypted_key_passphrase_sources(
    keys: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KT_PASS", PASSPHRASE)
    assert KeySource(path=keys["encrypted"], passphrase_env="KT_PASS").load()
    pass_file = tmp_path / "passphrase"
    pass_file.write_text(PASSPHRASE + "\n")  # a trailing newline as editors and Secrets add
    assert KeySource(path=keys["encrypted"], passphrase_file=pass_file).load()


def test_wrong_and_missing_passphrase_never_echoed(
    keys: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KT_PASS", "hunter2-wrong")
    source = KeySource(path=keys["encrypted"], passphrase_env="KT_PASS")
    with pytest.raises(SshAuthenticationError, match="wrong passphrase") as caught:
        source.load()
    assert "hunter2-wrong" not in str(caught.value)
    assert caught.value.__cause__ is None
    assert "environment variable KT_PASS" in str(caught.value)
    with pytest.raises(SshAuthenticationError, match="encrypted and no passphrase"):
        KeySource(path=keys["encrypted"]).load()


def test_passphrase_for_unencrypted_key_is_ignored(
    keys: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KT_PASS", "unused")
    assert KeySource(path=keys["ed25519"], passphrase_env="KT_PASS").load()


def test_key_text_from_env_including_flattened_newlines(
    keys: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    text = keys["ed25519"].read_text()
    monkeypatch.setenv("KT_KEY", text)
    assert KeySource(env_var="KT_KEY").load()
    monkeypatch.setenv("KT_KEY", text.replace("\n", "\\n"))
    assert KeySource(env_var="KT_KEY").load()


def test_garbage_key_error_does_not_leak_the_text(monkeypatch: pytest.MonkeyPatch) -> None:
    # Built at run time so no key-shaped block sits in the repository.
    armor = "OPENSSH " + "PRIVATE KEY-----"
    secret_text = f"-----BEGIN {armor}\nAAAAnotakeyTOPSECRET\n-----END {armor}\n"
    monkeypatch.setenv("KT_KEY", secret_text)
    with pytest.raises(SshAuthenticationError, match="not a readable") as caught:
        KeySource(env_var="KT_KEY").load()
    assert "TOPSECRET" not in str(caught.value)
    assert caught.value.__cause__ is None
    assert caught.value.__suppress_context__


def test_missing_sources_have_clear_messages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(SshAuthenticationError, match="KUBETRAIN_SSH_KEY=/path/to/key"):
        KeySource().load()
    with pytest.raises(SshAuthenticationError, match="cannot read the SSH private key file"):
        KeySource(path=tmp_path / "missing").load()
    monkeypatch.setenv("KT_EMPTY", "")
    with pytest.raises(SshAuthenticationError, match="KT_EMPTY is empty"):
        KeySource(env_var="KT_EMPTY").load()


def test_from_env_and_preference_order(
    keys: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ssh.ENV_KEY_PATH, str(keys["rsa"]))
    monkeypatch.setenv(ssh.ENV_KEY_DATA, keys["ed25519"].read_text())
    monkeypatch.setenv(ssh.ENV_KEY_SECRET_BLOCK, "some-block")
    monkeypatch.setenv(ssh.ENV_PASSPHRASE, "pp")
    monkeypatch.setenv(ssh.ENV_KNOWN_HOSTS, str(tmp_path / "kh"))
    source = KeySource.from_env()
    assert source.path == keys["rsa"]
    assert source.env_var == ssh.ENV_KEY_DATA
    assert source.secret_block == "some-block"
    assert source.passphrase_env == ssh.ENV_PASSPHRASE
    # A file wins over key text and Secret block.
    assert isinstance(source.load(), paramiko.RSAKey)
    assert ssh.known_hosts_from_env() == tmp_path / "kh"
    # Only names, never values, in the repr.
    assert keys["ed25519"].read_text().splitlines()[1] not in repr(source)
    assert "pp'" not in repr(source)


def test_endpoint_repr_hides_key_source(keys: dict[str, Path]) -> None:
    endpoint = SshEndpoint("127.0.0.1", "u", KeySource(path=keys["rsa"]), Path("/kh"), 2222)
    assert "rsa" not in repr(endpoint)
    assert endpoint.display == "u@127.0.0.1:2222"


def test_backoff_grows_with_jitter_and_is_capped() -> None:
    for attempt in range(8):
        delay = backoff_delay(attempt, base=0.5, cap=4.0)
        ceiling = min(4.0, 0.5 * 2**attempt)
        assert ceiling / 2 <= delay <= ceiling
    assert len({backoff_delay(3) for _ in range(20)}) > 1


def test_parse_sftp_url_forms() -> None:
    assert parse_sftp_url("sftp://models@store.example:2222/srv/models/") == SftpUrl(
        "models", "store.example", 2222, "/srv/models"
    )
    assert parse_sftp_url("sftp://u@h/~/models").path == "/~/models"
    assert parse_sftp_url("sftp://u@h/data%20set/x.csv").path == "/data set/x.csv"
    assert parse_sftp_url("sftp://u@h/x").port == 22


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("sftp://store.example/srv", "names no user"),
        ("sftp://u@store.example", "names no directory"),
        ("sftp://u@store.example/", "names no directory"),
        # The server's root in other spellings: a store there would mix with the whole disk.
        ("sftp://u@store.example//", "names no directory"),
        ("sftp://u@store.example/./", "names no directory"),
        ("sftp://u@store.example/%2F", "names no directory"),
        ("sftp://u@store.example:99999/srv", "invalid port"),
        ("sftp://u@store.example:abc/srv", "invalid port"),
        ("sftp://u@store.example:0/srv", "invalid port"),
        ("sftp://u@/srv", "names no host"),
        ("sftp://u@h/srv/../etc", r"must not contain '\.\.'"),
        ("sftp://u@h/srv?x=1", "query"),
    ],
)
def test_bad_sftp_urls(url: str, message: str) -> None:
    with pytest.raises(StoreError, match=message):
        open_store(url)


def test_password_in_url_refused_and_not_echoed() -> None:
    with pytest.raises(StoreError, match="passwords in sftp:// URLs are refused") as caught:
        open_store("sftp://u:Pa55word@h/srv")
    assert "Pa55word" not in str(caught.value)


def _status_error(code: int, text: str) -> OSError:
    """The exception paramiko raises for an SFTP status reply (raised by its own code)."""
    message = paramiko.Message()
    message.add_int(code)
    message.add_string(text)
    message.rewind()
    try:
        paramiko.SFTPClient._convert_status(None, message)  # type: ignore[attr-defined]
    except OSError as error:
        return error
    raise AssertionError("no error raised")


def _offline_backend() -> SftpBackend:
    backend = SftpBackend(
        SftpUrl("u", "127.0.0.1", 2222, "/srv"),
        SshEndpoint("127.0.0.1", "u", KeySource(), Path("/nonexistent"), 2222),
        attempts=3,
        base_delay=0.01,
    )
    backend._session = lambda: None  # type: ignore[assignment,method-assign,return-value]
    return backend


def test_transient_errors_retried_then_reported_as_transient(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    sleeps: list[float] = []
    monkeypatch.setattr(sftp_module.time, "sleep", sleeps.append)
    calls = []

    def dropped(_sftp: Any) -> None:
        calls.append(1)
        raise OSError("Socket is closed")

    caplog.set_level(logging.WARNING, logger="kubetrain.store.sftp")
    with pytest.raises(SftpTransferError, match="failed 3 times") as caught:
        _offline_backend()._run("upload", "exp/v/a.part", dropped)
    assert len(calls) == 3
    assert len(sleeps) == 2
    # Worth a task-level retry (the task resumes the version), and not mistaken for a user error.
    assert isinstance(caught.value, TransientError)
    assert not isinstance(caught.value, UserError)
    assert caplog.text.count("reconnecting") == 2


def test_transient_error_then_success(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sftp_module.time, "sleep", lambda _s: None)
    outcomes: list[BaseException | None] = [ConnectionResetError(errno.ECONNRESET, "reset"), None]

    def flaky(_sftp: Any) -> str:
        outcome = outcomes.pop(0)
        if outcome:
            raise outcome
        return "done"

    assert _offline_backend()._run("list", "exp", flaky) == "done"


@pytest.mark.parametrize(
    ("code", "text", "what", "message"),
    [
        (3, "Permission denied", "create directory", "permission denied for user 'u'"),
        (2, "No such file", "read", "no such file or directory"),
        (4, "Failure", "upload", "disk is full"),
    ],
)
def test_server_status_errors_are_not_retried(
    code: int, text: str, what: str, message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []
    error = _status_error(code, text)
    monkeypatch.setattr(SftpBackend, "_free_bytes", lambda self, d: None)

    def refused(_sftp: Any) -> None:
        calls.append(1)
        raise error

    with pytest.raises(StoreError, match=message) as caught:
        _offline_backend()._run(what, "exp/v/a.part", refused)
    assert len(calls) == 1
    assert not isinstance(caught.value, SshTransientError)


def test_retry_condition_for_prefect_tasks() -> None:
    class State:
        def __init__(self, data: object) -> None:
            self.data = data

    assert retry_transient(None, None, State(SshTransientError("reset")))
    assert retry_transient(None, None, State(SftpTransferError("gave up")))
    assert not retry_transient(None, None, State(ssh.HostKeyError("changed")))
    assert not retry_transient(None, None, State(SshAuthenticationError("refused")))
    assert not retry_transient(None, None, State(StoreError("disk full")))
    assert not retry_transient(None, None, State(IntegrityError("sha256 differs")))
    assert retry_transient(None, None, State(TransientFetchError("HTTP 503")))
    assert not retry_transient(None, None, State(DataError("HTTP 404")))
    assert not retry_transient(None, None, State(ValueError("a bug")))


def test_key_text_in_the_path_variable_is_refused_without_echo(
    keys: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A key pasted into KUBETRAIN_SSH_KEY (a path variable) must never reach a message."""
    text = keys["ed25519"].read_text()
    body_lines = [line for line in text.splitlines() if line and not line.startswith("-----")]
    monkeypatch.setenv(ssh.ENV_KEY_PATH, text)
    with pytest.raises(UserError) as caught:
        KeySource.from_env().load()
    assert caught.value.__cause__ is None  # no chained exception carries the value either
    message = str(caught.value)
    assert "looks like private key text" in message
    assert ssh.ENV_KEY_DATA in message  # says where key text belongs
    assert not any(line in message for line in body_lines)
    assert "PRIVATE KEY" not in message
