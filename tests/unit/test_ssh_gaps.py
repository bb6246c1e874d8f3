"""kubetrain/ssh.py: what is retried and how long it waits (found untested by mutation testing)."""

from __future__ import annotations

import socket

import paramiko
import pytest

from kubetrain.ssh import _is_transient, backoff_delay


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (ConnectionRefusedError(), True),
        (ConnectionResetError(), True),
        (TimeoutError(), True),
        (EOFError(), True),
        (paramiko.SSHException("Error reading SSH protocol banner"), True),
        (socket.gaierror(-2, "Name or service not known"), False),  # retrying will not help
        (paramiko.ssh_exception.IncompatiblePeer("no matching cipher"), False),
        (ValueError("a bug"), False),
    ],
)
def test_which_connect_failures_are_retried(error: BaseException, transient: bool) -> None:
    assert _is_transient(error) is transient


def test_default_backoff_starts_at_half_a_second_and_caps_at_ten() -> None:
    for _ in range(20):
        assert 0.25 <= backoff_delay(0) <= 0.5
        assert 0.5 <= backoff_delay(1) <= 1.0
        assert 5.0 <= backoff_delay(10) <= 10.0
