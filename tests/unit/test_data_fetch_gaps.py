"""kubetrain.data.fetch_http's size bound, timeouts and error messages that mutation testing found
unasserted (issue #17): the announced-size pre-check, the streamed-bytes counter at and past the
limit with chunked bodies, the timeout given to the request, and what transport errors are named."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kubetrain.data import DataError, TransientFetchError, fetch_http
from tests.train_helpers import BackgroundHttpServer, LocalHttpServer, StallingServer

LIMIT = 10


class _ScriptedServer(BackgroundHttpServer):
    """An HTTP/1.1 server on 127.0.0.1 in a thread that answers every GET with 200 and `chunks`:
    with `content_length` announced if given (then the chunks are written raw and the connection
    closed, so a short body is cut off), else in chunked transfer encoding, one chunk per write
    with a pause between them so that each arrives on its own; or with a 302 to `redirect_to`."""

    def __init__(
        self,
        chunks: list[bytes],
        content_length: int | None = None,
        redirect_to: str | None = None,
    ) -> None:
        import http.server

        server = self
        self.requests = 0

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                server.requests += 1
                if redirect_to is not None:
                    self.send_response(302)
                    self.send_header("Location", redirect_to)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Connection", "close")
                if content_length is not None:
                    self.send_header("Content-Length", str(content_length))
                else:
                    self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                try:
                    for chunk in chunks:
                        if content_length is not None:
                            self.wfile.write(chunk)
                        else:
                            self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                        self.wfile.flush()
                        time.sleep(0.05)
                    if content_length is None:
                        self.wfile.write(b"0\r\n\r\n")
                        self.wfile.flush()
                except OSError:  # the client hung up on a refused download
                    return

            def log_message(self, format: str, *args: object) -> None:
                return None

        super().__init__(Handler)

    def url(self, path: str = "/d.csv") -> str:
        return super().url(path)


@pytest.fixture
def limit(monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setenv("KUBETRAIN_MAX_DOWNLOAD_BYTES", str(LIMIT))
    return LIMIT


@pytest.fixture
def refused_port() -> Iterator[int]:
    """A port on 127.0.0.1 that is bound but not listening: connections to it are refused."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


@pytest.mark.timeout(30)
def test_an_announced_size_over_the_limit_is_refused_before_the_body_is_read(
    tmp_path: Path, limit: int
) -> None:
    # The server announces 1000 bytes but sends 5 and hangs up: only a refusal from the announced
    # size (not from counting bytes, nor the cut-off body) says the file is too large.
    target = tmp_path / "d.csv"
    with (
        _ScriptedServer([b"a,b\n1"], content_length=1000) as server,
        pytest.raises(DataError) as caught,
    ):
        fetch_http(server.url(), target, timeout=5)
    message = str(caught.value)
    assert not isinstance(caught.value, TransientFetchError)
    assert f"127.0.0.1:{server.httpd.server_address[1]}/d.csv" in message
    assert f"KUBETRAIN_MAX_DOWNLOAD_BYTES={limit}" in message
    assert not target.exists()


@pytest.mark.timeout(30)
@pytest.mark.parametrize("announce", [True, False], ids=["content-length", "chunked"])
def test_a_body_of_exactly_the_limit_is_saved(tmp_path: Path, limit: int, announce: bool) -> None:
    body = b"a,b\n1,2\n3,4"[:limit]
    assert len(body) == limit
    chunks = [body[:4], body[4:]]
    target = tmp_path / "d.csv"
    with _ScriptedServer(chunks, content_length=len(body) if announce else None) as server:
        fetch_http(server.url(), target, timeout=5)
    assert target.read_bytes() == body


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    "chunks",
    [[b"a,b\n1,2\n3,4\n"], [b"a,b\n1,", b"2\n3,", b"4\n5,6\n"]],
    ids=["one-chunk", "chunks-each-under-the-limit"],
)
def test_a_chunked_body_one_byte_over_the_limit_is_refused_and_not_kept(
    tmp_path: Path, limit: int, chunks: list[bytes]
) -> None:
    # No Content-Length: only the count of bytes received, summed over chunks, can refuse it.
    assert sum(map(len, chunks)) > limit
    assert all(len(chunk) <= limit for chunk in chunks[1:])
    target = tmp_path / "d.csv"
    with _ScriptedServer(chunks) as server, pytest.raises(DataError) as caught:
        fetch_http(server.url(), target, timeout=5)
    message = str(caught.value)
    assert f"127.0.0.1:{server.httpd.server_address[1]}/d.csv" in message
    assert f"KUBETRAIN_MAX_DOWNLOAD_BYTES={limit}" in message
    assert not target.exists()


@pytest.mark.timeout(30)
def test_a_chunked_body_over_the_limit_is_refused_once_the_sum_passes_it(
    tmp_path: Path, limit: int
) -> None:
    # Three chunks of limit-1 bytes: no single chunk is over the limit, their sum is.
    chunks = [b"1" * (limit - 1)] * 3
    target = tmp_path / "d.csv"
    with _ScriptedServer(chunks) as server, pytest.raises(DataError, match="larger than"):
        fetch_http(server.url(), target, timeout=5)
    assert not target.exists()


@pytest.mark.timeout(30)
def test_a_stalled_server_is_given_up_on_after_the_configured_timeout_not_a_default(
    tmp_path: Path,
) -> None:
    # httpx's own default is 5 s; a 0.3 s budget must end the attempt well before that.
    started = time.monotonic()
    with StallingServer() as server, pytest.raises(TransientFetchError) as caught:
        fetch_http(server.url(), tmp_path / "x", timeout=0.3)
    elapsed = time.monotonic() - started
    assert elapsed < 4, f"took {elapsed:.1f}s"
    message = str(caught.value)
    assert "(ReadTimeout)" in message  # which kind of timeout
    assert "KUBETRAIN_HTTP_TIMEOUT" in message  # the setting that fixes it
    assert not (tmp_path / "x").exists()


@pytest.mark.timeout(30)
def test_a_refused_connection_is_transient_and_named(tmp_path: Path, refused_port: int) -> None:
    url = f"http://127.0.0.1:{refused_port}/d.csv"
    with pytest.raises(TransientFetchError) as caught:
        fetch_http(url, tmp_path / "d.csv", timeout=5)
    message = str(caught.value)
    assert f"127.0.0.1:{refused_port}/d.csv" in message
    assert "ConnectError" in message
    assert not (tmp_path / "d.csv").exists()


def test_a_4xx_message_tells_to_check_the_url(tmp_path: Path) -> None:
    with LocalHttpServer({}) as server, pytest.raises(DataError) as caught:
        fetch_http(server.url("/missing.csv"), tmp_path / "d.csv", timeout=5)
    assert "HTTP 404" in str(caught.value)
    assert "check the URL" in str(caught.value)


def test_a_redirect_to_a_non_http_url_asks_for_the_final_http_url(tmp_path: Path) -> None:
    with (
        _ScriptedServer([], redirect_to="file:///etc/hostname") as server,
        pytest.raises(DataError) as caught,
    ):
        fetch_http(server.url(), tmp_path / "d.csv", timeout=5)
    assert "redirected to a non-HTTP location" in str(caught.value)
    assert "give the final http(s) URL" in str(caught.value)
    assert server.requests == 1


@pytest.mark.timeout(30)
def test_a_download_past_its_deadline_says_how_far_it_got_and_what_to_raise(
    tmp_path: Path,
) -> None:
    # 100 one-byte chunks 0.05 s apart: every read is quick, the whole takes 5 s, the budget 1 s.
    target = tmp_path / "d.csv"
    with (
        _ScriptedServer([b"1"] * 100) as server,
        pytest.raises(TransientFetchError) as caught,
    ):
        fetch_http(server.url(), target, timeout=1.0)
    message = str(caught.value)
    assert f"127.0.0.1:{server.httpd.server_address[1]}/d.csv" in message
    assert "not finished within 1s" in message
    assert "bytes so far" in message
    assert "KUBETRAIN_HTTP_TIMEOUT" in message
    assert not target.exists()
