"""SFTP backend of the artifact store, and single-file downloads for data="sftp://…".

Connections come from kubetrain/ssh.py (known_hosts verified, key from file/env/Secret block).
Transfers use 255 KiB pipelined SFTP requests (OpenSSH refuses 256 KiB messages), a 16 MiB
channel window accepting packets up to 1 MiB, and an AES-GCM cipher preference, which is what
gets paramiko to OpenSSH's own `sftp` speed (`python -m benchmarks.sftp_throughput`).

paramiko internals: everything here uses paramiko's public API, except four things that only
run when the installed paramiko is in PARAMIKO_INTERNALS_TESTED (`USE_PARAMIKO_INTERNALS`):
copy-free SFTP packet reads/writes and a bytearray channel buffer (`_avoid_quadratic_copies`;
the wide channel window is only asked for with that buffer), reading write replies as they
arrive (`_collect_write_replies`), the free-space figure in disk-full errors (`_free_bytes`),
and telling a server's status reply from a lost connection by paramiko's raising function
(`_raised_by_server_status`). Outside the range each falls back to the public API: the same
bytes move (tests/integration/test_sftp_paramiko_paths.py checks both paths), just with more
CPU per byte. To widen the range, run that test and `python -m benchmarks.sftp_throughput` on
the new paramiko.

Every primitive is retried on a transient failure (connection reset, channel closed, timeout)
by reconnecting with backoff and jitter and redoing that primitive; the store's publish then
carries on with the same version. Authentication, host-key, permission and disk-full errors are
never retried.

Over 400 lines on purpose: the backend's primitives share one connection, one retry loop and
the paramiko version gate; split apart, each would need the others' private state.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import logging
import os
import posixpath
import re
import socket
import stat
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import paramiko

from kubetrain.errors import TransientError
from kubetrain.locations import SftpUrl
from kubetrain.locations import parse_sftp_url as parse_location_sftp
from kubetrain.ssh import (
    KeySource,
    SshEndpoint,
    SshError,
    SshTransientError,
    backoff_delay,
    connect,
    known_hosts_from_env,
)
from kubetrain.store.protocol import EntryKind, ProgressCallback, StoreError, entry_kind

logger = logging.getLogger(__name__)

# OpenSSH's sftp-server refuses messages over 256 KiB; 256 KiB - 1 KiB is the largest
# read/write payload it accepts (its SFTP_MAX_READ_LENGTH).
MAX_REQUEST_BYTES = 261120
PREFETCH_REQUESTS = 64  # 64 x 255 KiB in flight: enough to fill the pipe, bounded memory
# The SFTP channel's receive window and the largest SSH packet it accepts. With paramiko's
# defaults (2 MiB, 32 KiB) OpenSSH sends every download in 32 KiB packets; with a wider window
# it keeps reading ahead while the client is busy and sends what piled up as one larger packet,
# so paramiko's per-packet cost (Python, not the cipher, on this path) shrinks exactly when
# the client falls behind, e.g. on a loaded machine. Memory stays bounded by the window.
# Only with the bytearray channel buffer (_avoid_quadratic_copies): paramiko's own buffer
# memmoves everything buffered on each read, which a 16 MiB window turns into ~3x the CPU.
CHANNEL_WINDOW_BYTES = 16 * 1024 * 1024
CHANNEL_MAX_PACKET_BYTES = 1024 * 1024
PROGRESS_MIN_BYTES = 32 * 1024 * 1024  # files this large get progress logs and an artifact
REPORT_INTERVAL_SECONDS = 2.0
IO_TIMEOUT_SECONDS = 60.0

# [first, last) paramiko versions whose private internals the speed-ups were tested against.
PARAMIKO_INTERNALS_TESTED = ((5, 1), (5, 2))

T = TypeVar("T")


def paramiko_internals_supported(version: str) -> bool:
    """Whether a paramiko version is in the range the private-internals speed-ups were tested on."""
    match = re.match(r"(\d+)\.(\d+)", version)
    if match is None:
        return False
    low, high = PARAMIKO_INTERNALS_TESTED
    return low <= (int(match[1]), int(match[2])) < high


USE_PARAMIKO_INTERNALS = paramiko_internals_supported(paramiko.__version__)


class SftpTransferError(TransientError):
    """A transfer kept failing on transient errors; running again later resumes the version."""


def parse_sftp_url(url: str, what: str = "destination") -> SftpUrl:
    """Parse and check an sftp:// URL (kubetrain.locations); problems raise StoreError."""
    return parse_location_sftp(url, what, error=StoreError)


def _raised_by_server_status(error: BaseException, sftp: paramiko.SFTPClient | None) -> bool:
    """True when error is an SFTP status reply from the server (the connection is fine)."""
    if not USE_PARAMIKO_INTERNALS:
        return _status_on_live_channel(error, sftp)
    tb = error.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and tb.tb_frame.f_code.co_name == "_convert_status"


def _status_on_live_channel(error: BaseException, sftp: paramiko.SFTPClient | None) -> bool:
    # Public-API rule: paramiko turns status replies into OSErrors without errno or with
    # ENOENT/EACCES; a lost connection shows as a timeout, a reset, or a closed channel.
    if not isinstance(error, OSError) or isinstance(error, (socket.timeout, ConnectionError)):
        return False
    if error.errno not in (None, errno.ENOENT, errno.EACCES):
        return False
    channel = sftp.get_channel() if sftp is not None else None
    transport = channel.get_transport() if channel is not None else None
    return bool(channel is not None and not channel.closed and transport and transport.is_active())


class _Progress:
    """Progress of one large transfer: log lines and, for transfers, a Prefect progress artifact.

    Reports at most every REPORT_INTERVAL_SECONDS (each artifact update is an API call) and
    always at the end.
    """

    def __init__(
        self,
        verb: str,
        label: str,
        total: int,
        callback: ProgressCallback | None,
        artifact: bool = True,
    ) -> None:
        self.verb, self.label, self.total, self.callback = verb, label, total, callback
        self.large = total >= PROGRESS_MIN_BYTES
        self.started = self.last_report = time.monotonic()
        self.artifact_id: Any = None
        if self.large and artifact:
            self.artifact_id = _create_progress_artifact(f"{verb} {label}")

    def update(self, done: int) -> None:
        if self.callback:
            self.callback(done, self.total)
        if not self.large:
            return
        now = time.monotonic()
        if done < self.total and now - self.last_report < REPORT_INTERVAL_SECONDS:
            return
        self.last_report = now
        fraction = done / self.total
        _run_logger().info(
            "%s %s: %d%% of %.1f MB (%.1f MB/s)",
            self.verb,
            self.label,
            round(fraction * 100),
            self.total / 1e6,
            done / max(now - self.started, 1e-6) / 1e6,
        )
        if self.artifact_id is not None:
            _update_progress_artifact(self.artifact_id, fraction * 100)


def _prefect_run_context() -> bool:
    # Only when prefect is already imported: never pay its import for a plain library call.
    if "prefect" not in sys.modules:
        return False
    from prefect.context import FlowRunContext, TaskRunContext

    return FlowRunContext.get() is not None or TaskRunContext.get() is not None


def _run_logger() -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
    if _prefect_run_context():
        from prefect import get_run_logger

        return get_run_logger()
    return logger


def _create_progress_artifact(description: str) -> Any:
    if not _prefect_run_context():
        return None
    try:
        from prefect.artifacts import create_progress_artifact

        return create_progress_artifact(0.0, description=description)
    except Exception as error:  # progress display must never fail a transfer
        logger.debug("no progress artifact: %s", error)
        return None


def _update_progress_artifact(artifact_id: Any, percent: float) -> None:
    try:
        from prefect.artifacts import update_progress_artifact

        update_progress_artifact(artifact_id, min(percent, 100.0))
    except Exception as error:
        logger.debug("progress artifact update failed: %s", error)


def _avoid_quadratic_copies(sftp: paramiko.SFTPClient) -> None:
    """Send and receive SFTP packets without re-slicing/concatenating bytes per SSH packet.

    paramiko's BaseSFTP._write_all slices the remaining bytes after every 32 KiB channel send
    and _read_all concatenates, so a 255 KiB request is copied ~4 times; with memoryview and
    join it is copied once. Measured: ~25% less main-thread CPU per uploaded byte. Only for
    paramiko versions in PARAMIKO_INTERNALS_TESTED, and skipped if these internals are missing.
    """
    if not USE_PARAMIKO_INTERNALS or not (
        isinstance(getattr(sftp, "sock", None), paramiko.Channel)
        and hasattr(sftp, "_write_all")
        and hasattr(sftp, "_read_all")
    ):
        return
    channel: paramiko.Channel = sftp.sock

    def write_all(out: bytes) -> None:
        # Slices of one SSH packet each: Channel.send copies what it sends anyway, and a bytes
        # slice of exactly that size passes through it uncopied, where a memoryview would cost
        # paramiko two caught exceptions per packet in util.asbytes. Channel.send puts at most
        # out_max_packet_size - 64 bytes of data in one packet.
        total, done = len(out), 0
        while done < total:
            step = max(channel.out_max_packet_size - 64, 1)
            piece = out if done == 0 and total <= step else out[done : done + step]
            sent = channel.send(piece)
            if sent <= 0:
                raise EOFError()
            done += sent

    def read_all(n: int) -> bytes:
        chunks = []
        while n > 0:
            chunk = channel.recv(n)
            if not chunk:
                raise EOFError()
            chunks.append(chunk)
            n -= len(chunk)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    sftp._write_all = write_all
    sftp._read_all = read_all

    # The channel's receive buffer is an array that every read deletes from the front of: a
    # memmove of everything still buffered, per read. A bytearray drops its front in O(1).
    # Skipped, like the above, if a paramiko release renames these internals.
    pipe: Any = channel.in_buffer
    if all(hasattr(pipe, a) for a in ("_lock", "_buffer", "_buffer_frombytes", "_buffer_tobytes")):
        with pipe._lock:
            buffer = bytearray(pipe._buffer)
            pipe._buffer = buffer
            pipe._buffer_frombytes = buffer.extend
            pipe._buffer_tobytes = lambda limit=None: bytes(memoryview(buffer)[:limit])


def _collect_write_replies(sftp: paramiko.SFTPClient, handle: paramiko.SFTPFile) -> None:
    """Read the status replies of pipelined writes that have already arrived, without waiting.

    paramiko leaves them queued until over 100 writes are outstanding and then reads them all,
    waiting for the server to finish every write in flight: the pipe runs dry once per ~25 MB.
    Reading what is there after each write keeps the queue short, so that never happens; a
    failed write raises here, as it would in paramiko's own read. Internals only (the reply
    queue is private); the public-API path keeps paramiko's behaviour.
    """
    requests = handle._reqs  # type: ignore[attr-defined]
    channel = sftp.get_channel()
    while requests and channel is not None and channel.recv_ready():
        kind, _ = sftp._read_response(requests.popleft())  # type: ignore[attr-defined]
        if kind != paramiko.sftp.CMD_STATUS:
            raise paramiko.SFTPError("Expected status")


class SftpBackend:
    """kubetrain.store.Backend over SFTP, rooted at a directory on the server."""

    def __init__(
        self,
        target: SftpUrl,
        endpoint: SshEndpoint,
        attempts: int = 5,
        base_delay: float = 0.5,
        request_bytes: int = MAX_REQUEST_BYTES,
    ) -> None:
        self.target = target
        self.endpoint = endpoint
        self.attempts = attempts
        self.base_delay = base_delay
        self.request_bytes = request_bytes
        self.url = target.display
        self.root = target.path
        self._client: paramiko.SSHClient | None = None
        self._sftp: paramiko.SFTPClient | None = None

    # -- connection ---------------------------------------------------------------------------

    def __enter__(self) -> SftpBackend:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _session(self) -> paramiko.SFTPClient:
        if self._sftp is not None:
            return self._sftp
        client = connect(self.endpoint, base_delay=self.base_delay)
        try:
            wide = USE_PARAMIKO_INTERNALS
            opened = paramiko.SFTPClient.from_transport(
                client.get_transport(),  # type: ignore[arg-type]  # set by connect()
                window_size=CHANNEL_WINDOW_BYTES if wide else None,
                max_packet_size=CHANNEL_MAX_PACKET_BYTES if wide else None,
            )
            if opened is None:
                raise EOFError("the server closed the connection")
            sftp = opened
        except (OSError, EOFError, paramiko.SSHException) as error:
            client.close()
            raise SshTransientError(f"cannot open the SFTP channel: {error}") from error
        sftp.get_channel().settimeout(IO_TIMEOUT_SECONDS)  # type: ignore[union-attr]
        _avoid_quadratic_copies(sftp)
        if self.target.path.startswith("/~"):
            home = sftp.normalize(".")
            self.root = posixpath.normpath(home + self.target.path[2:])
        self._client, self._sftp = client, sftp
        return sftp

    def connect(self) -> None:
        """Open the connection now, so host-key and key problems surface immediately."""
        self._run("connect", "", lambda sftp: None)

    def close(self) -> None:
        """Close the SFTP channel and the SSH connection."""
        sftp, client = self._sftp, self._client
        self._sftp = self._client = None
        for resource in (sftp, client):
            if resource is not None:
                try:
                    resource.close()
                except Exception as error:  # closing a dead connection may raise anything
                    logger.debug("close: %s", error)

    def _full(self, path: str) -> str:
        return posixpath.join(self.root, path) if path else self.root

    def _where(self, path: str) -> str:
        return f"{self.url.rstrip('/')}/{path}" if path else self.url

    def _run(self, what: str, path: str, operation: Callable[[paramiko.SFTPClient], T]) -> T:
        """Run operation on a live session; reconnect and redo it on transient failures."""
        for attempt in range(self.attempts):
            try:
                return operation(self._session())
            except (SshError, StoreError):
                raise
            except (OSError, EOFError, paramiko.SSHException) as error:
                if _raised_by_server_status(error, self._sftp):
                    raise self._server_error(what, path, error) from None
                self.close()
                if attempt + 1 >= self.attempts:
                    raise SftpTransferError(
                        f"{what} {self._where(path)} failed {self.attempts} times, last with "
                        f"{type(error).__name__}: {error or 'connection lost'}; nothing partial "
                        "is visible: run again (a publish resumes the same version)"
                    ) from error
                delay = backoff_delay(attempt, self.base_delay)
                _run_logger().warning(
                    "SFTP %s %s: %s: %s; reconnecting, retry %d/%d in %.1fs",
                    what,
                    self._where(path),
                    type(error).__name__,
                    error or "connection lost",
                    attempt + 1,
                    self.attempts - 1,
                    delay,
                )
                time.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def _server_error(self, what: str, path: str, error: BaseException) -> StoreError:
        where = self._where(path)
        code = getattr(error, "errno", None)
        if code == errno.EACCES:
            return StoreError(
                f"{what} {where}: permission denied for user {self.target.user!r} on the server; "
                "grant that user write access to the directory or choose another destination"
            )
        if code == errno.ENOENT:
            return StoreError(f"{what} {where}: no such file or directory on the server")
        if what in ("upload", "write"):
            free = self._free_bytes(posixpath.dirname(self._full(path)))
            space = f" (the server reports {free} bytes free there)" if free is not None else ""
            return StoreError(
                f"{what} {where}: the server failed the write ({error}){space}; most likely its "
                "disk is full or a quota is exceeded: free space on the server or choose "
                "another destination"
            )
        return StoreError(f"{what} {where}: the server refused: {error}")

    def _free_bytes(self, directory: str) -> int | None:
        """Free bytes via the statvfs@openssh.com extension, if the server has it."""
        if not USE_PARAMIKO_INTERNALS:
            return None  # paramiko has no public call for SFTP extensions
        try:
            sftp = self._session()
            kind, msg = sftp._request(  # type: ignore[attr-defined]
                paramiko.sftp.CMD_EXTENDED, "statvfs@openssh.com", directory
            )
            if kind != paramiko.sftp.CMD_EXTENDED_REPLY:
                return None
            bsize, frsize, _blocks, _bfree, bavail = (msg.get_int64() for _ in range(5))
            return int(bavail * (frsize or bsize))
        except Exception:
            return None

    # -- Backend ------------------------------------------------------------------------------

    def makedirs(self, path: str) -> list[str]:
        """Create path (and the root) as needed; concurrent creators are fine."""
        created: list[str] = []

        def make(sftp: paramiko.SFTPClient) -> None:
            missing: list[str] = []
            current = self._full(path)
            while current not in ("/", "", "."):
                try:
                    if not stat.S_ISDIR(sftp.stat(current).st_mode or 0):
                        raise StoreError(
                            f"{self.url}: {current} exists on the server and is not a directory"
                        )
                    break
                except FileNotFoundError:
                    missing.append(current)
                    current = posixpath.dirname(current)
            for directory in reversed(missing):
                try:
                    sftp.mkdir(directory)
                except OSError as error:
                    # SFTP v3 reports "already exists" as a generic failure: another
                    # publisher may just have created it.
                    if not _raised_by_server_status(error, sftp) or not self._is_dir(
                        sftp, directory
                    ):
                        raise
                    continue
                if directory.startswith(self.root.rstrip("/") + "/"):
                    created.append(posixpath.relpath(directory, self.root))

        self._run("create directory", path, make)
        return created

    def rmdir(self, path: str) -> None:
        """Remove path if it is an empty directory (the server refuses a non-empty one)."""

        def remove(sftp: paramiko.SFTPClient) -> None:
            with contextlib.suppress(OSError):
                sftp.rmdir(self._full(path))

        self._run("remove directory", path, remove)

    def kind(self, path: str) -> EntryKind | None:
        """What path is on the server, by lstat (a symlink is reported, never followed)."""

        def look(sftp: paramiko.SFTPClient) -> EntryKind | None:
            try:
                mode = sftp.lstat(self._full(path)).st_mode or 0
            except FileNotFoundError:
                return None
            return entry_kind(mode)

        return self._run("stat", path, look)

    def modified(self, path: str) -> float | None:
        """When path last changed on the server, by lstat; None when it does not exist."""

        def look(sftp: paramiko.SFTPClient) -> float | None:
            try:
                return sftp.lstat(self._full(path)).st_mtime
            except FileNotFoundError:
                return None

        return self._run("stat", path, look)

    @staticmethod
    def _is_dir(sftp: paramiko.SFTPClient, path: str) -> bool:
        try:
            return stat.S_ISDIR(sftp.stat(path).st_mode or 0)
        except OSError:
            return False

    def upload(self, source: Path, path: str, progress: ProgressCallback | None) -> None:
        """Write source to path with pipelined 255 KiB requests; removes path on failure."""
        total = source.stat().st_size

        def put(sftp: paramiko.SFTPClient) -> None:
            tracker = _Progress("upload", self._where(path), total, progress)
            with source.open("rb") as reader:
                self._write_stream(sftp, self._full(path), reader, tracker)

        try:
            self._run("upload", path, put)
        except BaseException:
            self._discard(path)
            raise

    def _write_stream(
        self, sftp: paramiko.SFTPClient, full: str, reader: Any, tracker: _Progress | None
    ) -> None:
        handle = sftp.open(full, "wb", bufsize=0)
        handle.MAX_REQUEST_SIZE = self.request_bytes
        handle.set_pipelined(True)
        # Two reused buffers (the block being sent and the one read ahead): paramiko copies a
        # block into its request message before write() returns, so a buffer is free again
        # then, and no 255 KiB bytes object is allocated per request.
        views = [memoryview(bytearray(self.request_bytes)) for _ in range(2)]
        try:
            done = 0
            current = 0
            count = reader.readinto(views[current])
            while count:
                following = reader.readinto(views[1 - current])
                if not following:
                    # paramiko drops the status replies of pipelined writes at close(); an
                    # unpipelined write waits for every outstanding reply and raises on a
                    # failed one, so a full disk surfaces as an error, not as a short file.
                    handle.set_pipelined(False)
                handle.write(views[current][:count])
                if USE_PARAMIKO_INTERNALS:
                    _collect_write_replies(sftp, handle)
                done += count
                if tracker is not None:
                    tracker.update(done)
                current, count = 1 - current, following
        finally:
            handle.close()

    def _discard(self, path: str) -> None:
        try:
            if self._sftp is not None:
                self._sftp.remove(self._full(path))
        except Exception as error:  # best effort: the publish reruns remove stale parts too
            logger.debug("could not remove %s: %s", path, error)

    def write_bytes(self, path: str, data: bytes) -> None:
        """Write a small file in one go."""

        def put(sftp: paramiko.SFTPClient) -> None:
            self._write_stream(sftp, self._full(path), io.BytesIO(data), None)

        try:
            self._run("write", path, put)
        except BaseException:
            self._discard(path)
            raise

    def _read_stream(
        self,
        sftp: paramiko.SFTPClient,
        full: str,
        sink: Callable[[bytes], Any],
        label: str,
        progress: ProgressCallback | None,
        verb: str,
    ) -> None:
        with sftp.open(full, "rb") as handle:
            size = handle.stat().st_size or 0
            handle.MAX_REQUEST_SIZE = self.request_bytes
            handle.prefetch(size, PREFETCH_REQUESTS)
            tracker = _Progress(verb, label, size, progress, artifact=verb == "download")
            done = 0
            while done < size:
                block = handle.read(min(self.request_bytes, size - done))
                if not block:
                    raise StoreError(f"{label}: the file shrank while it was read")
                sink(block)
                done += len(block)
                tracker.update(done)

    def read_bytes(self, path: str, limit: int) -> bytes:
        """The whole content of a small file; StoreError when it is over limit bytes."""

        def read(sftp: paramiko.SFTPClient) -> bytes:
            size = sftp.stat(self._full(path)).st_size or 0
            if size > limit:
                raise StoreError(
                    f"{self._where(path)} is larger than the {limit} bytes allowed for it"
                )
            chunks: list[bytes] = []
            self._read_stream(sftp, self._full(path), chunks.append, path, None, "read")
            return b"".join(chunks)

        return self._run("read", path, read)

    def download(self, path: str, destination: Path, progress: ProgressCallback | None) -> None:
        """Download path to destination (written to a temp file, then renamed)."""
        destination.parent.mkdir(parents=True, exist_ok=True)

        def get(sftp: paramiko.SFTPClient) -> None:
            fd, tmp_name = tempfile.mkstemp(dir=destination.parent, prefix=f".{destination.name}.")
            try:
                with os.fdopen(fd, "wb") as writer:
                    self._read_stream(
                        sftp,
                        self._full(path),
                        writer.write,
                        self._where(path),
                        progress,
                        "download",
                    )
                os.replace(tmp_name, destination)
            except BaseException:
                Path(tmp_name).unlink(missing_ok=True)
                raise

        self._run("download", path, get)

    def size(self, path: str) -> int:
        """Size in bytes of a remote file."""
        return self._run("stat", path, lambda sftp: int(sftp.stat(self._full(path)).st_size or 0))

    def sha256(self, path: str) -> str:
        """sha256 of a remote file, read back over SFTP (servers have no hashing extension)."""

        def digest(sftp: paramiko.SFTPClient) -> str:
            hasher = hashlib.sha256()
            self._read_stream(sftp, self._full(path), hasher.update, path, None, "verify")
            return hasher.hexdigest()

        return self._run("verify", path, digest)

    def replace(self, source: str, target: str) -> None:
        """Atomically rename source onto target (posix-rename@openssh.com)."""
        state = {"attempted": False}

        def rename(sftp: paramiko.SFTPClient) -> None:
            try:
                sftp.posix_rename(self._full(source), self._full(target))
            except FileNotFoundError:
                # A retry after a lost reply: the first attempt may have renamed it already.
                if not state["attempted"] or not self._exists(sftp, self._full(target)):
                    raise
            finally:
                state["attempted"] = True

        self._run("rename", source, rename)

    @staticmethod
    def _exists(sftp: paramiko.SFTPClient, full: str) -> bool:
        try:
            sftp.stat(full)
            return True
        except FileNotFoundError:
            return False

    def exists(self, path: str) -> bool:
        """Whether path exists on the server."""
        return self._run("stat", path, lambda sftp: self._exists(sftp, self._full(path)))

    def listdir(self, path: str) -> list[str]:
        """Sorted entry names of a remote directory."""
        return self._run("list", path, lambda sftp: sorted(sftp.listdir(self._full(path))))

    def remove(self, path: str) -> None:
        """Remove a remote file if it exists."""

        def remove(sftp: paramiko.SFTPClient) -> None:
            with contextlib.suppress(FileNotFoundError):
                sftp.remove(self._full(path))

        self._run("remove", path, remove)


def _endpoint_for(target: SftpUrl) -> SshEndpoint:
    return SshEndpoint(
        host=target.host,
        user=target.user,
        key=KeySource.from_env(),
        known_hosts=known_hosts_from_env(),
        port=target.port,
    )


def open_sftp_backend(url: str) -> SftpBackend:
    """An SftpBackend for sftp://user@host[:port]/path, connected; key/known_hosts from env."""
    target = parse_sftp_url(url)
    backend = SftpBackend(target, _endpoint_for(target))
    backend.connect()
    return backend


def download_file(url: str, destination: Path, max_bytes: int | None = None) -> None:
    """Download the single file sftp://user@host[:port]/path/file to destination.

    A file larger than max_bytes is refused before any byte is transferred.
    """
    target = parse_sftp_url(url, what="data source")
    directory, name = posixpath.split(target.path)
    parent = SftpUrl(target.user, target.host, target.port, directory or "/")
    with SftpBackend(parent, _endpoint_for(target)) as backend:
        if max_bytes is not None and backend.size(name) > max_bytes:
            raise StoreError(
                f"data source {target.display} is larger than KUBETRAIN_MAX_DOWNLOAD_BYTES="
                f"{max_bytes}; raise that limit if the data really is this large"
            )
        backend.download(name, destination, None)
