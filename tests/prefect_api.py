"""Plain HTTP calls to the tests' Prefect server, retried while it is busy, as Prefect's client is.

The session's server keeps its database in SQLite; while runs write to it, a request can meet a
locked database and the server answers 503 ("Service Unavailable", Prefect's signal that the
request may be retried), or 429. Prefect's own client retries those; the tests' direct calls go
through `http` below, which does the same, so a busy moment is not a failed test.
"""

from __future__ import annotations

import time
from typing import Any

import httpx

BUSY = frozenset({429, 503})
ATTEMPTS = 10


class _RetryWhileBusy(httpx.HTTPTransport):
    def handle_request(self, request: httpx.Request) -> httpx.Response:
        for attempt in range(1, ATTEMPTS):
            response = super().handle_request(request)
            if response.status_code not in BUSY:
                return response
            response.close()
            time.sleep(0.5 * attempt)
        return super().handle_request(request)  # the last attempt's answer, whatever it is


http = httpx.Client(transport=_RetryWhileBusy(), timeout=30)


def api_get(api: str, path: str, **params: Any) -> Any:
    """GET path from the API at api; its JSON, or a failed test showing the server's answer."""
    response = http.get(f"{api}{path}", params=params or None)
    assert response.status_code < 300, f"GET {path}: {response.status_code} {response.text[:2000]}"
    return response.json()


def api_post(api: str, path: str, body: dict[str, Any]) -> Any:
    """POST body to path of the API at api; its JSON, or a failed test showing the answer."""
    response = http.post(f"{api}{path}", json=body)
    assert response.status_code < 300, f"POST {path}: {response.status_code} {response.text[:2000]}"
    return response.json()
