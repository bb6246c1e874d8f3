"""A private Docker engine for the container tests, and the images it builds.

No engine runs here by default and there is no registry. The `docker_engine` fixture starts
Debian's dockerd with its own data-root (kept between runs, so the base image and the build
cache survive), exec-root, pidfile and unix socket, without touching the host's network
(--iptables=false --ip-forward=false --bridge=none), and stops it by PID at the end. The base
image comes from debootstrap (build_base_image.sh beside this file); the Python wheels are
downloaded once into a cache and served to the build from 127.0.0.1 only, so the image build
itself reaches no network.

Only an engine that cannot be started at all skips the tests; every later failure fails.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import http.server
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
STATE_DIR = Path(os.environ.get("KUBETRAIN_TEST_DOCKER_STATE", "/var/lib/kubetrain-test-docker"))
# Unix socket paths must stay short (108 bytes): exec-root and socket live under /run.
RUN_DIR = Path("/run/kubetrain-test-docker")
IMAGE = "kubetrain:container-test"
IMAGE_UID = 10001


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Container tests may build the base and the image cold (about 6 minutes here): more time."""
    for item in items:
        if item.get_closest_marker("container") and not item.get_closest_marker("timeout"):
            item.add_marker(pytest.mark.timeout(1800))


@dataclass
class DockerEngine:
    """A running private dockerd and the matching client."""

    cli: str
    host: str
    pid: int
    log: Path
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        """Environment for the docker client: this engine, BuildKit on."""
        return dict(os.environ, DOCKER_HOST=self.host, DOCKER_BUILDKIT="1")

    def run(
        self, *args: str, timeout: float = 600.0, check: bool = True, input: bytes | None = None
    ) -> subprocess.CompletedProcess[bytes]:
        """Run `docker ARGS` against this engine; on failure raise with its output."""
        proc = subprocess.run(
            [self.cli, *args],
            env=self.env,
            capture_output=True,
            timeout=timeout,
            check=False,
            input=input,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"docker {' '.join(args[:3])}… exited {proc.returncode}:\n"
                f"{proc.stdout.decode(errors='replace')[-3000:]}\n"
                f"{proc.stderr.decode(errors='replace')[-5000:]}"
            )
        return proc

    def text(self, *args: str, timeout: float = 600.0) -> str:
        """stdout of `docker ARGS` as text (raises on failure)."""
        return self.run(*args, timeout=timeout).stdout.decode().strip()


def run_restricted(
    engine: DockerEngine, image: str, *command: str, user: str | None = None, timeout: float = 300
) -> str:
    """`docker run` under the pod's restrictions (read-only root, no network, no capabilities,
    no privilege escalation), as `user` or the image's own; returns stdout+stderr text."""
    as_user = ["--user", user] if user else []
    proc = engine.run(
        "run", "--rm", "--pull", "never", "--network", "none", "--read-only",
        "--tmpfs", "/tmp:rw,mode=1777", "--cap-drop", "ALL",
        "--security-opt", "no-new-privileges", *as_user, image, *command,
        timeout=timeout,
    )  # fmt: skip
    return (proc.stdout + proc.stderr).decode(errors="replace")


def _docker_cli(dockerd: str) -> str | None:
    """The client that ships with this dockerd.

    A newer client elsewhere on PATH (Docker >= 23) refuses DOCKER_BUILDKIT=1 without the buildx
    plugin, which Debian's docker.io does not have; its own /usr/bin/docker builds fine.
    """
    override = os.environ.get("KUBETRAIN_DOCKER_CLI")
    if override:
        return override
    for candidate in (
        Path(dockerd).resolve().parent.parent / "bin" / "docker",
        Path("/usr/bin/docker"),
    ):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return shutil.which("docker")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stop_pid(pid: int, timeout: float = 30.0) -> None:
    """SIGTERM, wait, then SIGKILL: dockerd stops its containers and containerd on SIGTERM."""
    if not _pid_alive(pid):
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done:
                return
        except ChildProcessError:
            if not _pid_alive(pid):
                return
        time.sleep(0.2)
    os.kill(pid, signal.SIGKILL)


def _running_engine(pidfile: Path, data_root: Path) -> int | None:
    """PID of a dockerd already serving our data-root (dockerd.sh here, or a crashed run)."""
    try:
        pid = int(pidfile.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return None
    if cmdline and cmdline[0].endswith(b"dockerd") and str(data_root).encode() in cmdline:
        return pid
    return None


@pytest.fixture(scope="session")
def docker_engine() -> Iterator[DockerEngine]:
    """A private dockerd for this session; skips only when no engine can be started at all."""
    dockerd = shutil.which("dockerd")
    if dockerd is None:
        pytest.skip(
            "no container engine: dockerd is not installed "
            "(`make test` or scripts/setup.sh test installs docker.io)"
        )
    if os.geteuid() != 0:
        pytest.skip("no container engine: starting a private dockerd needs root")
    cli = _docker_cli(dockerd)
    if cli is None:
        pytest.skip("no container engine: the docker client is missing (package docker.io)")

    STATE_DIR.mkdir(parents=True, exist_ok=True)
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    data_root, exec_root = STATE_DIR / "data", RUN_DIR / "exec"
    pidfile, sock = RUN_DIR / "dockerd.pid", RUN_DIR / "docker.sock"
    log = STATE_DIR / "dockerd.log"
    # One engine per data-root: a second test session on this machine waits for the first.
    lock = (STATE_DIR / "lock").open("w")
    fcntl.flock(lock, fcntl.LOCK_EX)
    owner = RUN_DIR / "owner"
    running = _running_engine(pidfile, data_root)
    if running is not None:
        by_hand = owner.is_file() and owner.read_text().strip() == "tests/container/dockerd.sh"
        engine = DockerEngine(
            cli=cli, host=f"unix://{sock}", pid=running, log=STATE_DIR / "dockerd.log"
        )
        if by_hand and engine.run("version", timeout=20, check=False).returncode == 0:
            # Started by hand with tests/container/dockerd.sh: use it, and leave it running.
            try:
                yield engine
            finally:
                lock.close()
            return
        _stop_pid(running)  # what a crashed test session left behind
    pidfile.unlink(missing_ok=True)
    sock.unlink(missing_ok=True)

    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                dockerd,
                "--data-root",
                str(data_root),
                "--exec-root",
                str(exec_root),
                "--pidfile",
                str(pidfile),
                "--host",
                f"unix://{sock}",
                "--iptables=false",
                "--ip-forward=false",
                "--bridge=none",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    engine = DockerEngine(cli=cli, host=f"unix://{sock}", pid=proc.pid, log=log)
    owner.write_text("tests/container\n")
    try:
        deadline = time.monotonic() + 60
        ready = False
        while time.monotonic() < deadline and proc.poll() is None:
            if sock.exists() and engine.run("version", timeout=20, check=False).returncode == 0:
                ready = True
                break
            time.sleep(0.3)
        if not ready:
            tail = log.read_text(errors="replace")[-3000:]
            _stop_pid(proc.pid)
            pytest.skip(f"no container engine: dockerd did not start within 60 s:\n{tail}")
        yield engine
    finally:
        _stop_pid(proc.pid)
        sock.unlink(missing_ok=True)
        lock.close()


def _file_key(*paths: Path, length: int = 12) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.read_bytes())
    return digest.hexdigest()[:length]


@pytest.fixture(scope="session")
def base_image(docker_engine: DockerEngine) -> str:
    """A Debian bookworm image with python3 + venv from debootstrap, built once and kept.

    KUBETRAIN_TEST_BASE_IMAGE names an image already in the engine to use instead.
    """
    override = os.environ.get("KUBETRAIN_TEST_BASE_IMAGE")
    if override:
        return override
    script = Path(__file__).with_name("build_base_image.sh")
    # Named after the script's content: changing the script rebuilds the base.
    name = f"kubetrain-base:bookworm-{_file_key(script)}"
    started = time.monotonic()
    proc = subprocess.run(
        [str(script), name],
        env=dict(
            docker_engine.env,
            DOCKER=docker_engine.cli,
            KUBETRAIN_BASE_CACHE=str(STATE_DIR / "cache"),
        ),
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    assert proc.returncode == 0, f"building the base image failed:\n{proc.stderr[-5000:]}"
    docker_engine.timings["base_image_s"] = time.monotonic() - started
    return name


@pytest.fixture(scope="session")
def wheelhouse() -> Path:
    """Every wheel of requirements/runtime.txt, downloaded once per lock file and kept."""
    lock = REPO_ROOT / "requirements" / "runtime.txt"
    target = STATE_DIR / "wheels" / _file_key(lock, length=16)
    if target.is_dir():
        return target
    partial = Path(
        tempfile.mkdtemp(prefix="wheels.", dir=target.parent if target.parent.is_dir() else None)
    )
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--require-hashes",
            "--only-binary=:all:",
            "--dest",
            str(partial),
            "--requirement",
            str(lock),
        ],
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    if proc.returncode != 0:
        shutil.rmtree(partial, ignore_errors=True)
        raise AssertionError(f"downloading the runtime wheels failed:\n{proc.stderr[-5000:]}")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial.rename(target)
    return target


@pytest.fixture(scope="session")
def wheel_server(wheelhouse: Path) -> Iterator[str]:
    """The wheelhouse over HTTP on 127.0.0.1 (a find-links page), for builds with --network host."""
    handler = functools.partial(_QuietHandler, directory=str(wheelhouse))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@dataclass(frozen=True)
class BuiltImage:
    """The project image built for this session."""

    name: str
    base: str
    build_seconds: float
    context: Path
    decoy_token: str
    secret_markers: tuple[str, ...]
    secrets: tuple[tuple[str, Path], ...]


DECOY_FILES = (
    ".env",
    "id_rsa",
    "flows/.env",
    "tasks/id_ed25519",
    "data/server.pem",
    "data/known_hosts",
)


def _copy_build_context(destination: Path) -> None:
    """The files a user's checkout holds (tracked or not ignored), as a user would build them."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=REPO_ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for raw in listed:
        if not raw:
            continue
        rel = Path(raw.decode())
        source = REPO_ROOT / rel
        if not source.is_file():
            continue  # deleted in the working tree
        (destination / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, destination / rel)
    # Folders git cannot track while empty still belong to the context.
    for folder in ("flows", "tasks", "data"):
        (destination / folder).mkdir(exist_ok=True)


def plant_decoys(context: Path, token: str) -> None:
    """Key, known_hosts and .env files where a careless user might leave them in the checkout."""
    for rel in DECOY_FILES:
        path = context / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.name.startswith("id_") or path.suffix == ".pem":
            subprocess.run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", token, "-f", str(path)],
                check=True,
                capture_output=True,
            )
            path.write_text(path.read_text() + f"# {token}\n")
            Path(f"{path}.pub").unlink()  # public: not what this test is about
        else:
            path.write_text(f"KUBETRAIN_DECOY_SECRET={token}\n")


def build_project_image(
    engine: DockerEngine,
    context: Path,
    base: str,
    name: str,
    secrets: Sequence[tuple[str, Path]] = (),
    build_args: Sequence[str] = (),
) -> float:
    """`docker build` the Dockerfile in context (BuildKit, --network host); returns seconds."""
    args = ["build", "--network", "host", "--progress", "plain", "--tag", name]
    args += ["--build-arg", f"BASE_IMAGE={base}"]
    for arg in build_args:
        args += ["--build-arg", arg]
    for secret_id, path in secrets:
        args += ["--secret", f"id={secret_id},src={path}"]
    started = time.monotonic()
    engine.run(*args, str(context), timeout=1800)
    return time.monotonic() - started


@pytest.fixture(scope="session")
def project_image(
    docker_engine: DockerEngine,
    base_image: str,
    wheel_server: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[BuiltImage]:
    """The kubetrain image from a copy of the checkout with decoy secrets planted in it.

    The wheels come through a pip.conf handed to the build as a BuildKit secret: no network
    beyond 127.0.0.1, and the secret's content (the wheel server's address) must appear nowhere
    in the image.
    """
    context = tmp_path_factory.mktemp("build-context")
    _copy_build_context(context)
    token = f"decoy-{os.urandom(8).hex()}"
    plant_decoys(context, token)
    secrets_dir = tmp_path_factory.mktemp("build-secrets")
    pip_conf = secrets_dir / "pip.conf"
    pip_conf.write_text(f"[global]\nno-index = true\nfind-links = {wheel_server}\n")
    secrets = (("pip.conf", pip_conf),)
    seconds = build_project_image(
        docker_engine,
        context,
        base_image,
        IMAGE,
        secrets=secrets,
        build_args=["VERSION=0.1.0", "REVISION=container-test"],
    )
    docker_engine.timings["project_image_s"] = seconds
    yield BuiltImage(
        name=IMAGE,
        base=base_image,
        build_seconds=seconds,
        context=context,
        decoy_token=token,
        secret_markers=(token, wheel_server.rstrip("/")),
        secrets=secrets,
    )
    # Keep the engine's disk use bounded across runs: drop superseded images and old cache.
    docker_engine.run("image", "prune", "--force", check=False)
    docker_engine.run("builder", "prune", "--force", "--keep-storage", "4GB", check=False)
