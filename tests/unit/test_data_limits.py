"""Bounded inputs: every message quotes values truncated, every input has a limit with a clear
error, and the checks stay linear. Each test bounds itself (pytest timeout, small inputs)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kubetrain.data import DataError, load_dataset, preflight_csv

MESSAGE_LIMIT = 2000


def _load(path: Path, **kwargs: object) -> object:
    args: dict[str, object] = {"target": "y", "drop_columns": [], "folds": 2} | kwargs
    return load_dataset(str(path), **args)  # type: ignore[arg-type]


def test_a_huge_cell_is_quoted_truncated(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text("a,y\n" + "x" * 2_000_000 + ",1\n1,2\n")
    with pytest.raises(DataError) as caught:
        _load(path)
    assert "not numeric" in str(caught.value)
    assert len(str(caught.value)) < MESSAGE_LIMIT


def test_huge_column_names_are_quoted_truncated(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    names = ",".join(f"{'n' * 50_000}{i}" for i in range(5))
    path.write_text(names + "\n" + ",".join("1" * 5) + "\n")
    with pytest.raises(DataError, match="target column 'y' not found") as caught:
        _load(path)
    assert len(str(caught.value)) < MESSAGE_LIMIT


def test_bool_column_message_shows_the_value_as_written(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text("a,y\nFalse,1\nTrue,2\nFalse,1\nTrue,2\n")
    with pytest.raises(DataError, match=r"'a' is not numeric \(e\.g\. False\)"):
        _load(path)


@pytest.mark.timeout(60)
def test_duplicate_column_check_is_linear(tmp_path: Path) -> None:
    # 200k columns never finished with the quadratic check; linear takes well under a second.
    path = tmp_path / "wide.csv"
    header = [f"c{i}" for i in range(200_000)] + ["c7", "y"]
    path.write_text(",".join(header) + "\n" + ",".join("1" * len(header)) + "\n")
    with pytest.raises(DataError, match=r"duplicate column name\(s\) \['c7'\]"):
        _load(path, max_columns=300_000)


def test_too_many_columns_is_refused_before_parsing(tmp_path: Path) -> None:
    path = tmp_path / "wide.csv"
    path.write_text(",".join(f"c{i}" for i in range(1001)) + "\n")
    with pytest.raises(DataError, match=r"1001 columns.*KUBETRAIN_MAX_COLUMNS=1000"):
        preflight_csv(path, "wide.csv", max_columns=1000, max_line_bytes=1 << 20)


def test_an_endless_line_is_refused_with_bounded_memory(tmp_path: Path) -> None:
    # A 64 MiB line against a 1 MiB limit: refused after reading ~1 MiB, not parsed whole.
    path = tmp_path / "one-line.csv"
    with path.open("wb") as out:
        out.write(b"a,y\n")
        block = b"1" * (1 << 20)
        for _ in range(64):
            out.write(block)
    with pytest.raises(DataError, match=r"longer than KUBETRAIN_MAX_LINE_BYTES=1048576"):
        preflight_csv(path, "one-line.csv", max_columns=1000, max_line_bytes=1 << 20)


def test_data_larger_than_the_memory_this_process_may_use_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text("a,y\n" + "1,2\n" * 1000)
    with pytest.raises(DataError, match=r"needs about .* of memory.*may use"):
        preflight_csv(path, "d.csv", max_columns=1000, max_line_bytes=1 << 20, memory_limit=1024)


class _Dripping:
    """An HTTP server on 127.0.0.1 that sends headers, then one body byte every 0.2 s."""

    def __init__(self, redirect_to: str | None = None) -> None:
        import http.server
        import threading
        import time

        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if redirect_to is not None:
                    self.send_response(302)
                    self.send_header("Location", redirect_to)
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Length", "1000000")
                self.end_headers()
                for _ in range(200):  # bounded: 40 s at most even if nobody hangs up
                    if server.stopped:
                        return
                    try:
                        self.wfile.write(b"1")
                        self.wfile.flush()
                    except OSError:
                        return
                    time.sleep(0.2)

            def log_message(self, format: str, *args: object) -> None:
                return None

        self.stopped = False
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/d.csv"

    def __enter__(self) -> _Dripping:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopped = True
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.mark.timeout(30)
def test_a_dripping_server_is_bounded_by_the_attempts_total_time(tmp_path: Path) -> None:
    import time

    from kubetrain.data import TransientFetchError, fetch_http

    started = time.monotonic()
    with _Dripping() as server, pytest.raises(TransientFetchError, match=r"within 1s"):
        fetch_http(server.url(), tmp_path / "d.csv", timeout=1.0)
    # Each read returns within the timeout, but the attempt as a whole may not take longer.
    assert time.monotonic() - started < 5
    assert not (tmp_path / "d.csv").exists()


def test_a_redirect_to_a_file_url_is_a_user_error_not_retried(tmp_path: Path) -> None:
    from kubetrain.data import TransientFetchError, fetch_http
    from kubetrain.errors import is_transient

    with (
        _Dripping(redirect_to="file:///etc/hostname") as server,
        pytest.raises(DataError, match="redirected to a non-HTTP location") as caught,
    ):
        fetch_http(server.url(), tmp_path / "d.csv", timeout=5)
    assert not isinstance(caught.value, TransientFetchError)
    assert not is_transient(caught.value)
