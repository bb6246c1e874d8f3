"""Data in the original tutorial's layout, generated at test time (no download)."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self

import numpy as np
import pandas as pd


def original_layout_frame(
    classes: int = 26,
    per_class: int = 10,
    features: int = 8,
    seed: int = 0,
    separation: float = 1.5,
) -> pd.DataFrame:
    """`Line` id, integer `# Letter` sorted by class, float features named with a leading space.

    Each class has its own mean, so models learn something but folds still disagree a little.
    """
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(classes, features)) * separation
    labels = np.repeat(np.arange(1, classes + 1), per_class)
    values = centers[labels - 1] + rng.normal(size=(len(labels), features))
    frame = pd.DataFrame(values, columns=[f" f{i}/theta" for i in range(features)])
    frame.insert(0, "# Letter", labels)
    frame.insert(0, "Line", np.arange(1, len(labels) + 1))
    return frame


def write_original_layout_csv(path: Path, **kwargs: Any) -> Path:
    """Write original-layout data to path (as a CSV with a header) and return the path."""
    original_layout_frame(**kwargs).to_csv(path, index=False)
    return path


def published_versions(destination: Path) -> list[Path]:
    """Every version folder under destination (complete or not) and any stray .part file."""
    if not destination.exists():
        return []
    return sorted(
        p
        for p in destination.rglob("*")
        if (p.is_dir() and p.parent.parent == destination) or p.name.endswith(".part")
    )


class BackgroundHttpServer:
    """An http.server on 127.0.0.1 answering with `handler`, served from a thread while entered."""

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.port = self.httpd.server_address[1]
        # shutdown() returns at serve_forever's next poll: 0.5 s per test with the default.
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class LocalHttpServer(BackgroundHttpServer):
    """An http.server on 127.0.0.1 in a thread: serves `files`, fails the first `fail_first`
    requests with `fail_status`, answers unknown paths with 404, and counts requests."""

    def __init__(
        self, files: dict[str, bytes], fail_first: int = 0, fail_status: int = 503
    ) -> None:
        self.files = files
        self.fail_first = fail_first
        self.fail_status = fail_status
        self.requests: list[str] = []
        self.authorizations: list[str | None] = []  # the Authorization header of each request
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests.append(self.path)
                server.authorizations.append(self.headers.get("Authorization"))
                if len(server.requests) <= server.fail_first:
                    self.send_error(server.fail_status)
                    return
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                return None

        super().__init__(Handler)


class StallingServer:
    """A TCP server on 127.0.0.1 that accepts connections and never answers."""

    def __init__(self) -> None:
        import socket
        import threading

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(conn)  # held open, never read or answered

    def url(self, path: str = "/data.csv") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def __enter__(self) -> StallingServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()
        for conn in self.accepted:
            conn.close()
