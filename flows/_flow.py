"""The one decorator every kubetrain flow wears: `prefect.flow` plus how a run ends on a user's
mistake and the Kubernetes run limits.

- A UserError ends the run Failed with the error's own message, no traceback; the caller of the
  flow still receives the UserError itself (it is the state's data). Any other exception
  propagates unchanged and keeps its traceback.
- The flow times out (TimedOut, once) a little before the Job's activeDeadlineSeconds, and a run
  rescheduled more than KUBETRAIN_MAX_RESCHEDULES times fails saying so: why both are needed is
  in `kubetrain/k8s/limits.py`. Off Kubernetes there is no deadline, so no timeout.
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable
from typing import Any, TypeVar

from kubetrain.errors import UserError
from kubetrain.k8s.limits import check_reschedule_limit, flow_timeout_seconds
from kubetrain.settings import get_settings

F = TypeVar("F", bound=Callable[..., Any])


def kubetrain_flow(**flow_options: Any) -> Callable[[F], Any]:
    """`prefect.flow(**flow_options)` with user errors as Failed states and the run limits.

    The timeout is read when the module is imported: in a flow-run pod the environment is fixed
    before `prefect flow-run execute` loads the flow.
    """
    from prefect import flow

    def decorate(fn: F) -> Any:
        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> Any:
            from prefect.context import FlowRunContext
            from prefect.logging import get_run_logger
            from prefect.runtime import flow_run
            from prefect.states import Failed

            in_run = FlowRunContext.get() is not None
            try:
                if in_run:
                    check_reschedule_limit(
                        int(flow_run.run_count or 1), get_settings().max_reschedules
                    )
                return fn(*args, **kwargs)
            except UserError as error:
                if not in_run:  # called as a plain function (`flow.fn`)
                    raise
                get_run_logger().error("%s", error)
                return Failed(message=str(error), data=error)

        # Prefect builds the parameter schema from the annotations; resolve them here, in the
        # flow module's namespace, because postponed (string) annotations would be looked up in
        # this one.
        run.__annotations__ = typing.get_type_hints(fn, include_extras=True)
        run.__signature__ = inspect.signature(fn, eval_str=True)  # type: ignore[attr-defined]
        timeout = flow_timeout_seconds(get_settings().job_deadline)
        return flow(timeout_seconds=timeout, **flow_options)(run)

    return decorate
