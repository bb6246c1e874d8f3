"""How a flow run ends on a user's mistake: Failed with the error's own message, no traceback."""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from prefect.context import FlowRunContext
from prefect.logging import get_run_logger
from prefect.states import Failed

from kubetrain.errors import UserError

P = ParamSpec("P")
R = TypeVar("R")


def fail_on_user_error(fn: Callable[P, R]) -> Callable[P, R]:
    """Wrap a flow function: a UserError ends the run Failed(message=<its message>).

    Put it under `@flow`. The caller of the flow still receives the UserError itself (it is the
    state's data); any other exception propagates unchanged and keeps its traceback.
    """

    @functools.wraps(fn)
    def run(*args: P.args, **kwargs: P.kwargs) -> Any:
        try:
            return fn(*args, **kwargs)
        except UserError as error:
            if FlowRunContext.get() is None:  # called as a plain function (`flow.fn`)
                raise
            get_run_logger().error("%s", error)
            return Failed(message=str(error), data=error)

    # Prefect builds the parameter schema from the annotations; resolve them here, in the flow
    # module's namespace, because postponed (string) annotations would be looked up in this one.
    run.__annotations__ = typing.get_type_hints(fn, include_extras=True)
    run.__signature__ = inspect.signature(fn, eval_str=True)  # type: ignore[attr-defined]
    return run
