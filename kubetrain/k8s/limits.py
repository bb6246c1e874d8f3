"""Run limits of flows on Kubernetes: a Prefect timeout before the Job deadline, and a cap on
reschedules.

prefect-kubernetes runs a Job with backoffLimit 0 with PREFECT_FLOW_RUN_EXECUTE_SIGTERM_BEHAVIOR
=reschedule: a SIGTERM (eviction, or the Job's activeDeadlineSeconds) reschedules the run and
the worker starts a new Job. A run that needs longer than the deadline would so be rescheduled
forever. So the time limit lives in Prefect: the flow times out (TimedOut, Failed, once) a
little before the deadline, which the job template passes as KUBETRAIN_JOB_DEADLINE; and a run
rescheduled more than KUBETRAIN_MAX_RESCHEDULES times fails, saying so. The flows apply both
through their one decorator, `flows/_flow.py`.
"""

from __future__ import annotations

from datetime import timedelta

from kubetrain.errors import UserError

# Time left between the flow's timeout and the Job's deadline: the engine reports TimedOut and
# the process exits before Kubernetes sends SIGTERM.
DEADLINE_MARGIN_SECONDS = 60.0
DEADLINE_MARGIN_FRACTION = 0.05


class RescheduleLimitError(UserError):
    """A run was rescheduled (its pod evicted or stopped) more often than allowed."""


def flow_timeout_seconds(deadline: timedelta | None) -> float | None:
    """The flow timeout for a Job deadline: the deadline less a margin (None: no deadline)."""
    if deadline is None:
        return None
    total = deadline.total_seconds()
    margin = min(max(DEADLINE_MARGIN_SECONDS, total * DEADLINE_MARGIN_FRACTION), total / 2)
    return total - margin


def check_reschedule_limit(run_count: int, limit: int) -> None:
    """Fail a run that has started more than limit + 1 times (every start after the first
    follows a reschedule: an evicted or stopped pod)."""
    rescheduled = max(run_count - 1, 0)
    if rescheduled > limit:
        raise RescheduleLimitError(
            f"this flow run was rescheduled {rescheduled} times (each time its pod was evicted "
            f"or stopped), more than KUBETRAIN_MAX_RESCHEDULES={limit}: find why with `kubectl "
            "-n kubetrain get events` (memory limit, node pressure, preemption), fix it, then "
            "start a new run; or raise the limit"
        )
