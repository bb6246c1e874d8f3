"""One error family: every error kubetrain raises on purpose derives from KubetrainError.

`UserError`s are problems a user can fix; their message names the problem and the fix, and a
flow run that meets one ends Failed with exactly that message (no engine traceback).
`TransientError`s may pass on their own (timeouts, resets, busy servers): I/O tasks retry them,
and only them (see `tasks.retries`). Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class KubetrainError(Exception):
    """Base of every error kubetrain raises on purpose."""


class UserError(KubetrainError):
    """Something the user can fix; the message says what is wrong and how to fix it."""


class TransientError(KubetrainError):
    """A failure that may pass if tried again later (network, server busy): worth a retry."""


def is_transient(error: BaseException | None) -> bool:
    """True for errors worth retrying: transient ones, never user errors such as bad keys."""
    return isinstance(error, TransientError) and not isinstance(error, UserError)
