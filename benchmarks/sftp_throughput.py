"""SFTP throughput: the store's SftpBackend vs OpenSSH's own `sftp` client, same server, same run.

Starts a private OpenSSH sshd on 127.0.0.1 (tests/sshd.py; needs root and openssh-server),
makes a random file (200 MB by default) and times, alternating the two clients, median of 3:
  upload:   SftpBackend.upload (255 KiB pipelined writes)   vs  `sftp -b` `put`
  download: SftpBackend.download (prefetch, 255 KiB reads)  vs  `sftp -b` `get`
Both sides use the same cipher (aes128-gcm@openssh.com: the store prefers it, OpenSSH is given
`-o Ciphers=aes128-gcm@openssh.com`) and OpenSSH's default request size and queue depth. Each
timing includes connecting and authenticating (a process start for `sftp`, connect + open for
the store). Loopback only; on a shared machine the figures are noisy, the ratios less so.

    python -m benchmarks.sftp_throughput [--mb 200] [--runs 3]

Last line: `ratio: <store upload MB/s / OpenSSH upload MB/s>`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from kubetrain.ssh import KeySource, SshEndpoint
from kubetrain.store.sftp import SftpBackend, SftpUrl
from tests.sshd import Sshd

CIPHER = "aes128-gcm@openssh.com"


def _make_file(path: Path, megabytes: int) -> None:
    with path.open("wb") as stream:
        for _ in range(megabytes):
            stream.write(os.urandom(1_000_000))


def _timed(action: Callable[[], None]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    """Run the side-by-side measurement and print MB/s, medians and ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--mb", type=int, default=200, help="file size in MB (10^6 bytes)")
    parser.add_argument("--runs", type=int, default=3, help="runs per client and direction")
    args = parser.parse_args(argv)
    if shutil.which("sftp") is None:
        print("OpenSSH client `sftp` not found (apt-get install -y openssh-client)")
        return 2

    work = Path(tempfile.mkdtemp(prefix="kubetrain-bench-sftp-"))
    try:
        with Sshd(work / "sshd") as server:
            remote = server.home / f"bench-{server.instance}"
            remote.mkdir()
            shutil.chown(remote, server.user, server.user)
            try:
                return _measure(server, remote, work, args.mb, args.runs)
            finally:
                shutil.rmtree(remote, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _measure(server: Sshd, remote: Path, work: Path, megabytes: int, runs: int) -> int:
    source = work / "payload.bin"
    _make_file(source, megabytes)
    size = source.stat().st_size
    endpoint = SshEndpoint(
        host=server.address,
        user=server.user,
        key=KeySource(path=server.client_key),
        known_hosts=server.known_hosts,
        port=server.port,
    )
    target = SftpUrl(server.user, server.address, server.port, str(remote))
    sftp_cmd = [
        "sftp",
        "-q",
        "-i",
        str(server.client_key),
        "-o",
        f"UserKnownHostsFile={server.known_hosts}",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        "BatchMode=yes",
        "-o",
        f"Ciphers={CIPHER}",
        "-P",
        str(server.port),
    ]

    def openssh(command: str) -> None:
        batch = work / "batch"
        batch.write_text(command + "\n")
        subprocess.run(
            [*sftp_cmd, "-b", str(batch), f"{server.user}@{server.address}"],
            check=True,
            stdout=subprocess.DEVNULL,
        )

    def store(action: Callable[[SftpBackend], None]) -> None:
        with SftpBackend(target, endpoint) as backend:
            backend.connect()
            transport = backend._client.get_transport() if backend._client else None
            cipher = transport.local_cipher if transport else "?"
            if cipher != CIPHER:
                raise SystemExit(f"store negotiated {cipher}, expected {CIPHER}")
            action(backend)

    download = work / "download.bin"
    timings: dict[str, list[float]] = {
        k: [] for k in ("store up", "openssh up", "store down", "openssh down")
    }
    for run in range(runs):
        timings["store up"].append(
            _timed(lambda: store(lambda b: b.upload(source, "store.bin", None)))
        )
        timings["openssh up"].append(_timed(lambda: openssh(f"put {source} {remote}/ssh.bin")))
        timings["store down"].append(
            _timed(lambda: store(lambda b: b.download("store.bin", download, None)))
        )
        download.unlink()
        timings["openssh down"].append(_timed(lambda: openssh(f"get {remote}/ssh.bin {download}")))
        download.unlink()
        print(
            f"run {run + 1}: "
            + ", ".join(
                f"{k} {size / t / 1e6:.1f} MB/s"
                for k, t in ((k, v[-1]) for k, v in timings.items())
            )
        )
    rates = {k: size / statistics.median(v) / 1e6 for k, v in timings.items()}
    print(f"file {size / 1e6:.0f} MB, cipher {CIPHER}, median of {runs}, loopback, shared machine")
    for name, rate in rates.items():
        print(f"{name:>13}: {rate:7.1f} MB/s")
    upload_ratio = rates["store up"] / rates["openssh up"]
    download_ratio = rates["store down"] / rates["openssh down"]
    print(f"download ratio (store/OpenSSH): {download_ratio:.2f}")
    print(f"upload ratio (store/OpenSSH): {upload_ratio:.2f}")
    print(f"ratio: {upload_ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
