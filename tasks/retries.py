"""Retry policy shared by the I/O tasks: transient errors only, backoff with jitter.

Declared on each task's decorator (`**IO_RETRIES`) so every retry shows in the Prefect UI as an
AwaitingRetry state. Authentication, host-key, permission, validation, integrity and disk-full
errors are UserErrors: they fail at once with their message.
"""

from __future__ import annotations

from typing import Any

from prefect.tasks import exponential_backoff

from kubetrain.errors import is_transient


def retry_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect `retry_condition_fn`: retry only when the task failed on a TransientError."""
    error = getattr(state, "data", None)
    if not isinstance(error, BaseException):
        try:
            error = state.result(raise_on_failure=False)
        except Exception:  # a result that cannot be read is no reason to retry
            return False
    return is_transient(error if isinstance(error, BaseException) else None)


IO_RETRIES: dict[str, Any] = {
    "retries": 3,
    "retry_delay_seconds": exponential_backoff(backoff_factor=2),
    "retry_jitter_factor": 0.5,
    "retry_condition_fn": retry_transient,
}
