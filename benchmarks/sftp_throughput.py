"""SFTP throughput: the store's SftpBackend vs OpenSSH's own `sftp` client, same server, same run.

Starts a private OpenSSH sshd on 127.0.0.1 (tests/sshd.py; needs root and openssh-server),
makes a random file (200 MB by default) and times, for each of 5 runs, the two clients back to
back in alternating order:
  upload:   SftpBackend.upload (255 KiB pipelined writes)   vs  `sftp -b` `put`
  download: SftpBackend.download (prefetch, 255 KiB reads)  vs  `sftp -b` `get`
One untimed round of all four goes first: it pays one-time costs that are no part of a
transfer (the store's lazy imports, the `sftp`/`ssh` binaries and the remote files' first
write), which otherwise land on whichever client runs first. A direction's ratio is the
median over runs of (OpenSSH seconds / store seconds) of one run's pair, so load that changes
between runs cancels out; the spread over runs and the load average are printed too.
Client CPU seconds per 100 MB: this process for the store, the `sftp` + `ssh` processes for
OpenSSH (the server's share is the same for both and not counted).
Both sides use the same cipher (aes128-gcm@openssh.com: the store prefers it, OpenSSH is given
`-o Ciphers=aes128-gcm@openssh.com`) and OpenSSH's default request size, queue depth and
channel window; the store uses its own (kubetrain/store/sftp.py). Each
timing includes connecting and authenticating (a process start for `sftp`, connect + open for
the store). Loopback only; on a shared machine the figures are noisy, the ratios less so.

    python -m benchmarks.sftp_throughput [--mb 200] [--runs 5]

Last line: `ratio: <the lower of the upload and download ratios>`.
"""

from __future__ import annotations

import argparse
import os
import resource
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


def _cpu_seconds(children: bool) -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _timed(action: Callable[[], None], children: bool) -> tuple[float, float]:
    """Wall seconds and client CPU seconds of action: this process's, or its children's (the
    `sftp` process and the `ssh` it runs; the test sshd is not reaped until the end)."""
    cpu_before = _cpu_seconds(children)
    started = time.perf_counter()
    action()
    return time.perf_counter() - started, _cpu_seconds(children) - cpu_before


def main(argv: list[str] | None = None) -> int:
    """Run the side-by-side measurement and print MB/s, medians and ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--mb", type=int, default=200, help="file size in MB (10^6 bytes)")
    parser.add_argument("--runs", type=int, default=5, help="runs per client and direction")
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

    def store_up() -> None:
        store(lambda b: b.upload(source, "store.bin", None))

    def openssh_up() -> None:
        openssh(f"put {source} {remote}/ssh.bin")

    download = work / "download.bin"

    def store_down() -> None:
        store(lambda b: b.download("store.bin", download, None))
        download.unlink()

    def openssh_down() -> None:
        openssh(f"get {remote}/ssh.bin {download}")
        download.unlink()

    pairs = {"up": (store_up, openssh_up), "down": (store_down, openssh_down)}
    for ours, theirs in pairs.values():
        ours()
        theirs()
    seconds: dict[str, list[float]] = {}
    cpu: dict[str, list[float]] = {}
    ratios: dict[str, list[float]] = {"up": [], "down": []}
    for run in range(runs):
        line = []
        for direction, (ours, theirs) in pairs.items():
            # Each run times both clients back to back, in alternating order, so a change in
            # the machine's load hits both sides of a ratio alike.
            order = [("store", ours), ("openssh", theirs)]
            for client, action in order if run % 2 == 0 else order[::-1]:
                elapsed, used = _timed(action, children=client == "openssh")
                seconds.setdefault(f"{client} {direction}", []).append(elapsed)
                cpu.setdefault(f"{client} {direction}", []).append(used)
            ratio = seconds[f"openssh {direction}"][-1] / seconds[f"store {direction}"][-1]
            ratios[direction].append(ratio)
            line.append(f"{direction} {ratio:.2f}")
        print(f"run {run + 1}: store/OpenSSH " + ", ".join(line), flush=True)

    per_100mb = 100e6 / size
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    print(f"file {size / 1e6:.0f} MB, cipher {CIPHER}, median of {runs}, loopback, load {load}")
    print(f"{'':>14}{'MB/s':>8}{'client CPU s/100MB':>21}")
    for name, times in seconds.items():
        rate = size / statistics.median(times) / 1e6
        print(f"{name:>14}{rate:8.1f}{statistics.median(cpu[name]) * per_100mb:21.2f}")
    upload_ratio = statistics.median(ratios["up"])
    download_ratio = statistics.median(ratios["down"])
    spread = {d: f"{min(r):.2f}-{max(r):.2f}" for d, r in ratios.items()}
    print(
        f"download ratio (store/OpenSSH, median of paired runs): {download_ratio:.2f}"
        f" (runs {spread['down']})"
    )
    print(
        f"upload ratio (store/OpenSSH, median of paired runs): {upload_ratio:.2f}"
        f" (runs {spread['up']})"
    )
    print(f"ratio: {min(upload_ratio, download_ratio):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
