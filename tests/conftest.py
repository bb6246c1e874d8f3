"""Shared test set-up: quiet, local-only Prefect settings and a real Prefect server on 127.0.0.1."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

# Set before anything imports prefect: every process the tests start inherits these.
_PREFECT_HOME = Path(tempfile.mkdtemp(prefix="kubetrain-prefect-home-"))
os.environ.update(
    {
        "PREFECT_HOME": str(_PREFECT_HOME),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
        "PREFECT_LOGGING_TO_API_BATCH_INTERVAL": "0.3",
        # Unit tests call tasks through .fn outside a flow run: there is no run to log to.
        "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",
    }
)
os.environ.pop("PREFECT_API_URL", None)

REPO_ROOT = Path(__file__).resolve().parent.parent

# A skipped system test fails in `make test` and CI (KUBETRAIN_REQUIRE_ALL): see the module.
from tests.require_all import (  # noqa: E402
    pytest_collection_modifyitems,
    pytest_configure,
    pytest_runtest_makereport,
)

__all__ = ["pytest_collection_modifyitems", "pytest_configure", "pytest_runtest_makereport"]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now at host."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class PrefectServer:
    """A `prefect server start` process on 127.0.0.1 with its own PREFECT_HOME and SQLite DB."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.port = free_port()
        self.api_url = f"http://127.0.0.1:{self.port}/api"
        self.log_path = home / "server.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 240.0) -> None:
        # The UI served at the root asks this URL for its API (else it assumes port 4200).
        env = dict(os.environ, PREFECT_HOME=str(self.home), PREFECT_UI_API_URL=self.api_url)
        env.pop("PREFECT_API_URL", None)
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "prefect",
                    "server",
                    "start",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                ],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.home,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"prefect server exited:\n{self.log_path.read_text()[-4000:]}")
            try:
                if httpx.get(f"{self.api_url}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(
            f"prefect server not healthy after {timeout}s:\n{self.log_path.read_text()[-4000:]}"
        )

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[PrefectServer]:
    """A real Prefect API server; PREFECT_API_URL points at it for the rest of the session."""
    home = Path(tempfile.mkdtemp(prefix="kubetrain-prefect-server-"))
    server = PrefectServer(home)
    server.start()
    # Prefect reads its settings into a context at import: set both the context (this process)
    # and the environment (every subprocess a test starts).
    from prefect.settings import PREFECT_API_URL, temporary_settings

    os.environ["PREFECT_API_URL"] = server.api_url
    try:
        with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
            yield server
    finally:
        try:
            # Send buffered run logs while the server is still up, not to a closed port at exit.
            from prefect.logging.handlers import APILogWorker

            APILogWorker.drain_all(timeout=5)
        finally:
            os.environ.pop("PREFECT_API_URL", None)
            server.stop()
        shutil.rmtree(home, ignore_errors=True)
