"""The one place that opens SSH connections: keys, known_hosts, timeouts, retries.

Host keys are always checked against a known_hosts file (RejectPolicy semantics: an unknown or
changed key is refused, never added). Private keys and passphrases are read when a connection is
made and never stored in reprs, logs or exception messages.

Configuration from the environment (see `KeySource.from_env`, `known_hosts_from_env`):
  KUBETRAIN_SSH_KEY                     path to the private key (e.g. a mounted Kubernetes Secret)
  KUBETRAIN_SSH_KEY_DATA                the private key text itself
  KUBETRAIN_SSH_KEY_SECRET_BLOCK        name of a Prefect Secret block holding the key text
  KUBETRAIN_SSH_KEY_PASSPHRASE          the key's passphrase
  KUBETRAIN_SSH_KEY_PASSPHRASE_FILE     path to a file holding the passphrase
  KUBETRAIN_SSH_KEY_PASSPHRASE_SECRET_BLOCK  name of a Prefect Secret block holding it
  KUBETRAIN_KNOWN_HOSTS                 path to the known_hosts file (default ~/.ssh/known_hosts)
(read through kubetrain/settings.py).

Over 400 lines on purpose: key loading, host-key policy and connecting are one security
boundary; keeping them in one module keeps every path a key or passphrase takes in one view.
"""

from __future__ import annotations

import io
import logging
import os
import random
import select
import shlex
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paramiko
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from kubetrain.errors import KubetrainError, TransientError, UserError
from kubetrain.settings import get_settings

logger = logging.getLogger(__name__)

ENV_KEY_PATH = "KUBETRAIN_SSH_KEY"
ENV_KEY_DATA = "KUBETRAIN_SSH_KEY_DATA"
ENV_KEY_SECRET_BLOCK = "KUBETRAIN_SSH_KEY_SECRET_BLOCK"  # noqa: S105 (a variable name)
ENV_PASSPHRASE = "KUBETRAIN_SSH_KEY_PASSPHRASE"  # noqa: S105 (a variable name)
ENV_PASSPHRASE_FILE = "KUBETRAIN_SSH_KEY_PASSPHRASE_FILE"  # noqa: S105 (a variable name)
ENV_PASSPHRASE_SECRET_BLOCK = "KUBETRAIN_SSH_KEY_PASSPHRASE_SECRET_BLOCK"  # noqa: S105 (a variable name)
ENV_KNOWN_HOSTS = "KUBETRAIN_KNOWN_HOSTS"

# AES-GCM first: on loopback/LAN the cipher is the bottleneck and GCM is paramiko's fastest
# (measured ≈1.3x aes128-ctr); the rest keep paramiko's order so any OpenSSH server still works.
PREFERRED_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")


class SshError(KubetrainError):
    """An SSH problem with a user-facing message naming the problem and the fix."""


class HostKeyError(SshError, UserError):
    """The server's host key is unknown or changed: never retried."""


class SshAuthenticationError(SshError, UserError):
    """The key, its passphrase or the login was refused: never retried."""


class SshTransientError(SshError, TransientError):
    """Connection refused, reset or timed out: worth retrying with backoff."""


class SshCommandTimeout(SshError):
    """A remote command did not finish within its timeout."""


@dataclass(frozen=True)
class KeySource:
    """Where the private key comes from, in this order of preference: file, env var, Secret block.

    Only names and paths are held here; the key text and passphrase are read at connect time.
    """

    path: Path | None = None
    env_var: str | None = None
    secret_block: str | None = None
    passphrase_env: str | None = None
    passphrase_file: Path | None = None
    passphrase_secret_block: str | None = None

    @classmethod
    def from_env(cls) -> KeySource:
        """A KeySource from the KUBETRAIN_SSH_KEY* environment variables (those that are set)."""
        settings = get_settings()
        return cls(
            path=settings.ssh_key.expanduser() if settings.ssh_key else None,
            env_var=ENV_KEY_DATA if settings.ssh_key_data else None,
            secret_block=settings.ssh_key_secret_block or None,
            passphrase_env=ENV_PASSPHRASE if settings.ssh_key_passphrase else None,
            passphrase_file=(
                settings.ssh_key_passphrase_file.expanduser()
                if settings.ssh_key_passphrase_file
                else None
            ),
            passphrase_secret_block=settings.ssh_key_passphrase_secret_block or None,
        )

    def describe(self) -> str:
        """Where the key is taken from, for messages (never the key itself)."""
        if self.path is not None:
            return f"key file {self.path}"
        if self.env_var is not None:
            return f"environment variable {self.env_var}"
        if self.secret_block is not None:
            return f"Prefect Secret block {self.secret_block!r}"
        return "no key source"

    def _describe_passphrase(self) -> str:
        if self.passphrase_env is not None:
            return f"environment variable {self.passphrase_env}"
        if self.passphrase_file is not None:
            return f"passphrase file {self.passphrase_file}"
        if self.passphrase_secret_block is not None:
            return f"Prefect Secret block {self.passphrase_secret_block!r}"
        return "no passphrase source"

    def _read_key_text(self) -> str:
        if self.path is not None:
            try:
                return self.path.read_text()
            except OSError as error:
                raise SshAuthenticationError(
                    f"cannot read the SSH private key file {self.path}: {error.strerror}; "
                    f"point {ENV_KEY_PATH} at a readable key file (e.g. a mounted Secret)"
                ) from None
        if self.env_var is not None:
            text = os.environ.get(self.env_var, "")
            if not text.strip():
                raise SshAuthenticationError(
                    f"environment variable {self.env_var} is empty or unset; "
                    "set it to the private key text"
                )
            # Some secret stores flatten newlines to a literal "\n".
            return text.replace("\\n", "\n") if "\n" not in text.strip() else text
        if self.secret_block is not None:
            return _read_secret_block(self.secret_block, "SSH private key")
        raise SshAuthenticationError(
            "no SSH private key configured: set "
            f"{ENV_KEY_PATH}=/path/to/key, {ENV_KEY_DATA}=<key text> or "
            f"{ENV_KEY_SECRET_BLOCK}=<Prefect Secret block name>"
        )

    def _read_passphrase(self) -> str | None:
        if self.passphrase_env is not None:
            value = os.environ.get(self.passphrase_env)
            return value if value else None
        if self.passphrase_file is not None:
            try:
                return self.passphrase_file.read_text().rstrip("\r\n") or None
            except OSError as error:
                raise SshAuthenticationError(
                    f"cannot read the passphrase file {self.passphrase_file}: {error.strerror}"
                ) from None
        if self.passphrase_secret_block is not None:
            return _read_secret_block(self.passphrase_secret_block, "SSH key passphrase")
        return None

    def load(self) -> paramiko.PKey:
        """The private key (ed25519, ECDSA or RSA; OpenSSH or PEM format), decrypted if needed."""
        text = self._read_key_text()
        passphrase = self._read_passphrase()
        return _parse_private_key(text, passphrase, self.describe(), self._describe_passphrase())


def _read_secret_block(name: str, what: str) -> str:
    try:
        from prefect.blocks.system import Secret

        value = Secret.load(name).get()  # type: ignore[union-attr]
    except ValueError:
        raise SshAuthenticationError(
            f"Prefect Secret block {name!r} ({what}) not found: create it in the UI "
            "(Blocks → Secret) or with `Secret(value=...).save(name)`"
        ) from None
    except Exception as error:  # the API may be down; never echo a block's content
        raise SshError(
            f"cannot load Prefect Secret block {name!r} ({what}): {type(error).__name__}; "
            "check PREFECT_API_URL and that the block exists"
        ) from None
    if not isinstance(value, str) or not value:
        raise SshAuthenticationError(f"Prefect Secret block {name!r} ({what}) holds no text")
    return value


def _load_private_key(data: bytes, password: bytes | None) -> object:
    try:
        return serialization.load_ssh_private_key(data, password=password)
    except ValueError as error:
        if "Not OpenSSH private key format" not in str(error):
            raise
    return serialization.load_pem_private_key(data, password=password)


def _is_encrypted(data: bytes) -> bool:
    try:
        _load_private_key(data, None)
    except TypeError:
        return True
    except Exception:
        return False
    return False


def _parse_private_key(
    text: str, passphrase: str | None, source: str, passphrase_source: str
) -> paramiko.PKey:
    # Exceptions below are re-raised `from None`: cryptography and paramiko errors can carry the
    # key bytes (e.g. UnknownKeyType(key_bytes=...)).
    data = text.encode()
    password = passphrase.encode() if passphrase else None
    try:
        loaded = _load_private_key(data, password)
    except TypeError as error:
        if "not encrypted" in str(error):
            # A passphrase was supplied for an unencrypted key: use it without one.
            return _parse_private_key(text, None, source, passphrase_source)
        raise SshAuthenticationError(
            f"the SSH private key from {source} is encrypted and no passphrase is configured; "
            f"set {ENV_PASSPHRASE} (or {ENV_PASSPHRASE_FILE} / {ENV_PASSPHRASE_SECRET_BLOCK})"
        ) from None
    except ValueError:
        if password is not None and _is_encrypted(data):
            raise SshAuthenticationError(
                f"cannot decrypt the SSH private key from {source} with the passphrase from "
                f"{passphrase_source}: wrong passphrase"
            ) from None
        raise SshAuthenticationError(
            f"the SSH private key from {source} is not a readable ed25519, ECDSA or RSA private "
            "key (OpenSSH or PEM format)"
        ) from None
    except Exception:
        raise SshAuthenticationError(
            f"the SSH private key from {source} cannot be loaded (unsupported key type?); "
            "use an ed25519, ECDSA or RSA key"
        ) from None
    key_class: type[paramiko.PKey]
    if isinstance(loaded, rsa.RSAPrivateKey):
        key_class = paramiko.RSAKey
    elif isinstance(loaded, ed25519.Ed25519PrivateKey):
        key_class = paramiko.Ed25519Key
    elif isinstance(loaded, ec.EllipticCurvePrivateKey):
        key_class = paramiko.ECDSAKey
    else:
        raise SshAuthenticationError(
            f"the SSH private key from {source} is a {type(loaded).__name__}; "
            "use an ed25519, ECDSA or RSA key"
        )
    try:
        return key_class.from_private_key(io.StringIO(text), password=passphrase)
    except Exception:
        raise SshAuthenticationError(
            f"paramiko cannot load the SSH private key from {source}"
        ) from None


def known_hosts_from_env() -> Path:
    """The known_hosts path: $KUBETRAIN_KNOWN_HOSTS, else ~/.ssh/known_hosts."""
    return get_settings().known_hosts.expanduser()


@dataclass(frozen=True)
class SshEndpoint:
    """One SSH server and how to log in to it."""

    host: str
    user: str
    key: KeySource = field(repr=False)
    known_hosts: Path
    port: int = 22
    connect_timeout: float = 15.0

    @property
    def display(self) -> str:
        """user@host:port, for messages."""
        return f"{self.user}@{self.host}:{self.port}"


def _keyscan_hint(host: str, port: int) -> str:
    return (
        f"get the server's key with `ssh-keyscan -p {port} {host}`, check its fingerprint "
        f"(`ssh-keyscan -p {port} {host} | ssh-keygen -lf -`) against the one the server's "
        "administrator reads out of band (`ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub` "
        "on the server), and only then add the line to the known_hosts file"
    )


class _RefuseUnknownHost(paramiko.MissingHostKeyPolicy):
    """RejectPolicy with a message that tells the user how to trust the key safely."""

    def __init__(self, endpoint: SshEndpoint) -> None:
        self.endpoint = endpoint

    def missing_host_key(
        self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey
    ) -> None:
        client.close()
        raise HostKeyError(
            f"host key of {hostname} is not in {self.endpoint.known_hosts} "
            f"(the server offered {key.get_name()} {key.fingerprint}); refusing to connect. "
            + _keyscan_hint(self.endpoint.host, self.endpoint.port)
        )


def backoff_delay(attempt: int, base: float = 0.5, cap: float = 10.0) -> float:
    """Seconds to wait before retry `attempt` (0-based): 50-100% of base·2^attempt, capped."""
    return random.uniform(0.5, 1.0) * min(cap, base * (2**attempt))


def _transport_factory(sock: Any, /, **kwargs: Any) -> paramiko.Transport:
    # paramiko writes each SSH message with its own send(); with Nagle's algorithm a message
    # sent while the previous one is unacknowledged waits for the peer's delayed ACK (~40 ms),
    # which cost every connection one such stall during authentication and slows each small
    # request/reply (stat, open, rename). Bulk transfers send full packets either way.
    if isinstance(sock, socket.socket) and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    # paramiko 5 passes only disabled_algorithms; older versions also passed gss_* options.
    transport = paramiko.Transport(sock, disabled_algorithms=kwargs.get("disabled_algorithms"))
    options = transport.get_security_options()
    available = list(options.ciphers)
    options.ciphers = tuple(
        [c for c in PREFERRED_CIPHERS if c in available]
        + [c for c in available if c not in PREFERRED_CIPHERS]
    )
    return transport


def _is_transient(error: BaseException) -> bool:
    if isinstance(error, socket.gaierror):
        return False  # a name that does not resolve will not start resolving by retrying
    if isinstance(error, (OSError, EOFError)):
        return True  # refused, reset, timeout, unreachable, NoValidConnectionsError
    if isinstance(error, paramiko.ssh_exception.IncompatiblePeer):
        return False
    # Banner/kex read errors: the server closed or reset the connection mid-handshake.
    return isinstance(error, paramiko.SSHException)


def _connect_once(endpoint: SshEndpoint, pkey: paramiko.PKey) -> paramiko.SSHClient:
    if not endpoint.known_hosts.is_file():
        raise HostKeyError(
            f"known_hosts file {endpoint.known_hosts} does not exist; set {ENV_KNOWN_HOSTS} to a "
            f"known_hosts file with the server's key: {_keyscan_hint(endpoint.host, endpoint.port)}"
        )
    client = paramiko.SSHClient()
    try:
        client.load_host_keys(str(endpoint.known_hosts))
    # InvalidHostKey (a line with bad base64) is no SSHException; ValueError: not UTF-8.
    except (OSError, ValueError, paramiko.SSHException, paramiko.hostkeys.InvalidHostKey) as error:
        raise HostKeyError(
            f"cannot read known_hosts file {endpoint.known_hosts}: {error}"
        ) from None
    client.set_missing_host_key_policy(_RefuseUnknownHost(endpoint))
    try:
        client.connect(
            endpoint.host,
            port=endpoint.port,
            username=endpoint.user,
            pkey=pkey,
            timeout=endpoint.connect_timeout,
            banner_timeout=endpoint.connect_timeout,
            auth_timeout=endpoint.connect_timeout,
            channel_timeout=endpoint.connect_timeout,
            allow_agent=False,
            look_for_keys=False,
            transport_factory=_transport_factory,
        )
    except HostKeyError:
        client.close()
        raise
    except paramiko.BadHostKeyException as error:
        client.close()
        raise HostKeyError(
            f"HOST KEY CHANGED for {endpoint.host}:{endpoint.port}: the server offered "
            f"{error.key.get_name()} {error.key.fingerprint} but {endpoint.known_hosts} expects "
            f"{error.expected_key.fingerprint}. This can be a man-in-the-middle attack or a "
            "reinstalled server; refusing to connect. If the change is legitimate, remove the "
            f"old entry (`ssh-keygen -R '[{endpoint.host}]:{endpoint.port}' -f "
            f"{endpoint.known_hosts}`) and {_keyscan_hint(endpoint.host, endpoint.port)}"
        ) from None
    except paramiko.AuthenticationException:
        client.close()
        raise SshAuthenticationError(
            f"{endpoint.display} refused the key from {endpoint.key.describe()}; check that its "
            f"public key is in ~{endpoint.user}/.ssh/authorized_keys on the server and that the "
            "user may log in"
        ) from None
    except socket.gaierror as error:
        client.close()
        raise SshError(
            f"cannot resolve SSH host {endpoint.host!r}: {error.strerror}; check the host name"
        ) from None
    except (OSError, EOFError, paramiko.SSHException) as error:
        client.close()
        if _is_transient(error):
            raise SshTransientError(
                f"cannot connect to {endpoint.display}: {type(error).__name__}: {error}"
            ) from error
        raise SshError(f"cannot connect to {endpoint.display}: {error}") from None
    transport = client.get_transport()
    if transport is not None:
        transport.set_keepalive(15)
    return client


def connect(
    endpoint: SshEndpoint, attempts: int = 4, base_delay: float = 0.5
) -> paramiko.SSHClient:
    """An authenticated SSHClient; the host key is verified, transient failures are retried."""
    pkey = endpoint.key.load()  # key problems are not transient: fail before any retry
    for attempt in range(attempts):
        try:
            return _connect_once(endpoint, pkey)
        except SshTransientError as error:
            if attempt + 1 >= attempts:
                raise SshTransientError(
                    f"{error} (gave up after {attempts} attempts); check that sshd runs on "
                    f"{endpoint.host} port {endpoint.port} and is reachable"
                ) from None
            delay = backoff_delay(attempt, base_delay)
            logger.warning(
                "SSH connect to %s failed (%s); retry %d/%d in %.1fs",
                endpoint.display,
                error,
                attempt + 1,
                attempts - 1,
                delay,
            )
            time.sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover


@dataclass(frozen=True)
class CommandResult:
    """What a remote command did."""

    command: str
    exit_code: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        """True when the command exited 0."""
        return self.exit_code == 0


def run_command(
    client: paramiko.SSHClient,
    command: str,
    *,
    timeout: float,
    sudo: bool = False,
    stdin: bytes | None = None,
) -> CommandResult:
    """Run a shell command; with sudo it runs as `sudo -n sh -c '<command>'` (never prompts).

    Returns the exit code and decoded output; raises SshCommandTimeout after timeout seconds
    and SshTransientError when the connection drops before the command exits.
    """
    full = f"sudo -n sh -c {shlex.quote(command)}" if sudo else command
    transport = client.get_transport()
    if transport is None or not transport.is_active():
        raise SshTransientError("the SSH connection is closed; reconnect and retry")
    deadline = time.monotonic() + timeout
    try:
        channel = transport.open_session(timeout=max(1.0, min(timeout, 30.0)))
        channel.exec_command(full)
        if stdin:
            channel.sendall(stdin)
        channel.shutdown_write()
    except (OSError, EOFError, paramiko.SSHException) as error:
        raise SshTransientError(f"cannot start remote command: {error}") from error
    out, err = bytearray(), bytearray()
    try:
        while True:
            while channel.recv_ready():
                out += channel.recv(65536)
            while channel.recv_stderr_ready():
                err += channel.recv_stderr(65536)
            if channel.exit_status_ready():
                # exit-status arrives after the data: drain what is already buffered.
                while channel.recv_ready():
                    out += channel.recv(65536)
                while channel.recv_stderr_ready():
                    err += channel.recv_stderr(65536)
                break
            if channel.closed or not transport.is_active():
                raise SshTransientError(
                    "the SSH connection dropped before the remote command exited"
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise SshCommandTimeout(
                    f"remote command did not finish within {timeout:g}s: {_first_words(command)}"
                )
            select.select([channel], [], [], min(remaining, 0.1))
        exit_code = channel.recv_exit_status()
    finally:
        channel.close()
    return CommandResult(
        command=command,
        exit_code=exit_code,
        stdout=out.decode(errors="replace"),
        stderr=err.decode(errors="replace"),
    )


def _first_words(command: str, limit: int = 60) -> str:
    return command if len(command) <= limit else command[:limit] + "…"
