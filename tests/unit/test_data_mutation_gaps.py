"""kubetrain.data.fetch_http behaviour that mutation testing found unasserted (issue #17):
the configured Authorization header is sent, and messages show the URL without secrets."""

from __future__ import annotations

from pathlib import Path

import pytest

from kubetrain.data import DataError, fetch_http
from tests.train_helpers import LocalHttpServer

BODY = b"a,b\n1,2\n"


def test_the_configured_authorization_header_is_sent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBETRAIN_HTTP_AUTHORIZATION", "Bearer tok-123")
    with LocalHttpServer({"/d.csv": BODY}) as server:
        fetch_http(server.url("/d.csv"), tmp_path / "d.csv", timeout=5)
    assert server.authorizations == ["Bearer tok-123"]
    assert (tmp_path / "d.csv").read_bytes() == BODY


def test_no_authorization_header_unless_configured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KUBETRAIN_HTTP_AUTHORIZATION", raising=False)
    with LocalHttpServer({"/d.csv": BODY}) as server:
        fetch_http(server.url("/d.csv"), tmp_path / "d.csv", timeout=5)
    assert server.authorizations == [None]


def test_a_refused_download_names_the_url_but_no_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBETRAIN_HTTP_AUTHORIZATION", "Bearer tok-123")
    with LocalHttpServer({}) as server:
        url = server.url("/team/missing.csv").replace("http://", "http://ana:pw-456@")
        with pytest.raises(DataError) as raised:
            fetch_http(f"{url}?token=qs-789&v=2", tmp_path / "d.csv", timeout=5)
    message = str(raised.value)
    assert f"127.0.0.1:{server.port}/team/missing.csv" in message  # which download failed
    assert "v=2" in message
    assert "HTTP 404" in message
    for secret in ("pw-456", "qs-789", "tok-123"):
        assert secret not in message
