"""A private OpenSSH sshd for tests: own config, host key, user and client key, on 127.0.0.x.

Everything secret is generated at test time in the instance's workdir. Several instances on
127.0.0.2, 127.0.0.3, … act as separate hosts (they share this machine's users and files).
Needs root (it creates the user and runs sshd) and the openssh-server package.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pwd
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType

SSHD = "/usr/sbin/sshd"


def _free_port(address: str) -> int:
    with socket.socket() as sock:
        sock.bind((address, 0))
        return int(sock.getsockname()[1])


def _shadow_password_field(user: str) -> str | None:
    for line in Path("/etc/shadow").read_text().splitlines():
        fields = line.split(":")
        if fields[0] == user and len(fields) > 1:
            return fields[1]
    return None


def _run_with_lock_retry(command: list[str], done: Callable[[], bool]) -> None:
    # Several test sessions may create or unlock the user at once: useradd/usermod then fail
    # on the /etc/passwd lock or because the other session won; retry until the state is right.
    for attempt in range(20):
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode == 0 or done():
            return
        time.sleep(0.1 * (attempt + 1))
    raise RuntimeError(f"{' '.join(command)} failed: {result.stderr.strip()}")


ACCOUNTS_LOCK = Path("/run/kubetrain-test-accounts.lock")


def ensure_user(user: str) -> pwd.struct_passwd:
    """Create a login user with a home if missing, unlocked for key logins under UsePAM no."""
    # One account change at a time across every test session on the machine: useradd and
    # usermod rewrite /etc/passwd and /etc/shadow, and concurrent sessions raced on them.
    with ACCOUNTS_LOCK.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _ensure_user_locked(user)


def _ensure_user_locked(user: str) -> pwd.struct_passwd:

    def exists() -> bool:
        try:
            pwd.getpwnam(user)
            return True
        except KeyError:
            return False

    if not exists():
        _run_with_lock_retry(["useradd", "-m", "-s", "/bin/sh", user], exists)
    # useradd leaves the password field "!" (locked); sshd without PAM refuses locked accounts.
    if _shadow_password_field(user) != "*":
        _run_with_lock_retry(
            ["usermod", "-p", "*", user], lambda: _shadow_password_field(user) == "*"
        )
    entry = pwd.getpwnam(user)
    home = Path(entry.pw_dir)
    if not home.is_dir():
        home.mkdir(parents=True)
        os.chown(home, entry.pw_uid, entry.pw_gid)
    home.chmod(0o755)
    return entry


def generate_key(path: Path, key_type: str = "ed25519", passphrase: str = "") -> Path:
    """Generate an OpenSSH private key at path (public key at path.pub); returns path."""
    extra = ["-b", "2048"] if key_type == "rsa" else []
    path.unlink(missing_ok=True)
    Path(f"{path}.pub").unlink(missing_ok=True)
    subprocess.run(
        [
            "ssh-keygen",
            "-q",
            "-t",
            key_type,
            *extra,
            "-N",
            passphrase,
            "-C",
            "kubetrain-test",
            "-f",
            str(path),
        ],
        check=True,
        capture_output=True,
    )
    return path


class Sshd:
    """An OpenSSH sshd on address:port (free port) with a generated host key and client key."""

    def __init__(
        self,
        workdir: Path,
        address: str = "127.0.0.1",
        user: str = "kubetrain",
        extra_config: Sequence[str] = (),
    ) -> None:
        if not address.startswith("127."):
            raise ValueError("test sshd listens on 127.0.0.0/8 only")
        self.workdir = Path(workdir).resolve()
        self.address = address
        self.user = user
        self.extra_config = list(extra_config)
        self.port = 0
        self.instance = uuid.uuid4().hex[:12]
        self.host_key = self.workdir / "ssh_host_ed25519_key"
        self.client_key = self.workdir / "client_ed25519"
        self.known_hosts = self.workdir / "known_hosts"
        self.config_path = self.workdir / "sshd_config"
        self.log_path = self.workdir / "sshd.log"
        self.pid_path = self.workdir / "sshd.pid"
        self.home = Path()
        self._authorized_keys: Path | None = None
        self.process: subprocess.Popen[bytes] | None = None

    # -- lifecycle ----------------------------------------------------------------------------

    def __enter__(self) -> Sshd:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self, timeout: float = 15.0) -> None:
        """Generate keys and config, start sshd in the foreground, wait until it accepts."""
        if shutil.which("sshd") is None and not Path(SSHD).exists():
            raise RuntimeError("OpenSSH server not installed: apt-get install -y openssh-server")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.workdir.chmod(0o700)
        Path("/run/sshd").mkdir(parents=True, exist_ok=True)
        entry = ensure_user(self.user)
        self.home = Path(entry.pw_dir)
        if not self.host_key.exists():
            generate_key(self.host_key)
        if not self.client_key.exists():
            generate_key(self.client_key)
        self._install_authorized_key(entry)
        last_error = ""
        for _ in range(3):  # the free port can be taken between probing and binding
            self.port = _free_port(self.address)
            self._write_config()
            self._write_known_hosts()
            with self.log_path.open("ab") as log:
                self.process = subprocess.Popen(
                    [SSHD, "-D", "-f", str(self.config_path), "-E", str(self.log_path)],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            if self._wait_accepting(timeout):
                return
            last_error = self.log_path.read_text()[-3000:]
            self._terminate()
        raise RuntimeError(f"sshd did not start on {self.address}:\n{last_error}")

    def stop(self) -> None:
        """Stop sshd (and its sessions) and remove this instance's authorized key file."""
        self._terminate()
        if self._authorized_keys is not None:
            self._authorized_keys.unlink(missing_ok=True)

    def _terminate(self) -> None:
        if self.process is None:
            return
        for pid in self.session_pids(include_monitors=True):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 15)
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process = None

    # -- set-up -----------------------------------------------------------------------------

    def _install_authorized_key(self, entry: pwd.struct_passwd) -> None:
        # One file per instance (AuthorizedKeysFile below) so instances never edit each other's
        # keys; sshd's StrictModes wants ~/.ssh 0700 and the file 0600, owned by the user.
        ssh_dir = self.home / ".ssh"
        ssh_dir.mkdir(mode=0o700, exist_ok=True)
        os.chown(ssh_dir, entry.pw_uid, entry.pw_gid)
        ssh_dir.chmod(0o700)
        self._authorized_keys = ssh_dir / f"authorized_keys.test-{self.instance}"
        self._authorized_keys.write_text(Path(f"{self.client_key}.pub").read_text())
        os.chown(self._authorized_keys, entry.pw_uid, entry.pw_gid)
        self._authorized_keys.chmod(0o600)

    def authorize_key(self, public_key_path: Path) -> None:
        """Also accept the key whose public half is at public_key_path."""
        assert self._authorized_keys is not None, "start() first"
        with self._authorized_keys.open("a") as stream:
            stream.write(public_key_path.read_text())

    def _write_config(self) -> None:
        assert self._authorized_keys is not None
        lines = [
            f"Port {self.port}",
            f"ListenAddress {self.address}",
            f"HostKey {self.host_key}",
            f"PidFile {self.pid_path}",
            f"AuthorizedKeysFile .ssh/{self._authorized_keys.name}",
            f"AllowUsers {self.user}",
            "PermitRootLogin no",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "UsePAM no",
            "StrictModes yes",
            "MaxStartups 64",
            "MaxSessions 64",
            "LogLevel VERBOSE",
            "Subsystem sftp internal-sftp",
            *self.extra_config,
        ]
        self.config_path.write_text("\n".join(lines) + "\n")
        self.config_path.chmod(0o600)

    def _write_known_hosts(self) -> None:
        key_type, key_b64 = Path(f"{self.host_key}.pub").read_text().split()[:2]
        self.known_hosts.write_text(f"[{self.address}]:{self.port} {key_type} {key_b64}\n")

    def _wait_accepting(self, timeout: float) -> bool:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            try:
                with socket.create_connection((self.address, self.port), timeout=1) as sock:
                    sock.settimeout(2)
                    if sock.recv(64).startswith(b"SSH-"):
                        return True
            except OSError:
                pass
            time.sleep(0.05)
        return False

    # -- inspection ---------------------------------------------------------------------------

    def session_pids(self, include_monitors: bool = False) -> list[int]:
        """PIDs of this instance's `sshd: USER@notty` session processes (optionally [priv] too)."""
        if self.process is None:
            return []
        found = []
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                title = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
            except OSError:
                continue
            # Not "USER@internal-sftp": that is the session's forked SFTP server, a child of it.
            wanted = title == f"sshd: {self.user}@notty" or (
                include_monitors and title.startswith(f"sshd: {self.user} [priv]")
            )
            if wanted and self._descends_from_us(int(proc.name)):
                found.append(int(proc.name))
        return sorted(found)

    def _descends_from_us(self, pid: int) -> bool:
        assert self.process is not None
        for _ in range(8):
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
            except OSError:
                return False
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == self.process.pid:
                return True
            if ppid <= 1:
                return False
            pid = ppid
        return False

    def url(self, path: str | Path) -> str:
        """sftp://user@address:port/<absolute path> for this server."""
        return f"sftp://{self.user}@{self.address}:{self.port}/{str(path).lstrip('/')}"
