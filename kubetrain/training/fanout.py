"""Fan-out: every fit of a train run as its own child flow run (README "Scaling out").

The parent starts one run of a `train-fit` deployment on its own work pool per fit with
Prefect's `run_deployment(as_subflow=True, timeout=0)`: each child is a subflow run of the parent
in the UI and, on the Kubernetes pool, its own Job; it is named for what it does
(`fit-nn-fold-3`) and gets its model's job variables (CPU/memory). Children hand their outcomes
back through the store's staging area (kubetrain.training.handoff).

`wait_for_children` polls the children until each is in a final state. Completed ones are done;
a Crashed one (its pod or process died: killed, evicted) is replaced by a new run of the same
fit up to CRASH_RETRIES times; any other final state fails the parent with the child's name and
reason, as does the timeout. Then, and when the parent itself is stopped (cancelled from the
UI, its pod deleted), `stop_children` cancels the unfinished children and waits, bounded, until
they are final.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from kubetrain.errors import UserError
from kubetrain.training.handoff import fit_name

FIT_FLOW = "train-fit"
CRASH_RETRIES = 2
POLL_SECONDS = 1.0
# How long a child that never started is left to a worker that removes its infrastructure.
HANDOVER_SECONDS = 5.0
_MESSAGE_LIMIT = 600
# A Kubernetes quantity as the pool's job template takes it: "500m", "2", "1.5", "512Mi", "4Gi".
_QUANTITY = r"^(\d+(\.\d+)?|\.\d+)(m|k|Ki|M|Mi|G|Gi|T|Ti)?$"


class FanOutError(UserError):
    """A fan-out setting that cannot work, or a child fit that did not finish."""


def _short(text: object, limit: int = 80) -> str:
    shown = str(text)
    return shown if len(shown) <= limit else shown[: limit - 1] + "…"


class FitResources(BaseModel):
    """CPU and memory of one model's child runs: job variables of the pool's job template.

    The defaults are sized for one fit (fits are single-threaded, see kubetrain.training.engine).
    """

    model_config = ConfigDict(extra="forbid")

    cpu_request: str = Field("1", pattern=_QUANTITY)
    cpu_limit: str = Field("1", pattern=_QUANTITY)
    memory_request: str = Field("1Gi", pattern=_QUANTITY)
    memory_limit: str = Field("2Gi", pattern=_QUANTITY)


def check_fit_resources(
    fit_resources: Mapping[str, Any], models: Sequence[str]
) -> dict[str, dict[str, str]]:
    """Validated job variables per model ({} for models without an entry: the deployment's)."""
    stray = sorted(set(fit_resources) - set(models))
    if stray:
        raise FanOutError(
            f"fit_resources names {_short(', '.join(map(repr, stray)))}, which is not in models "
            f"{list(models)}; add it to models or remove its entry"
        )
    checked: dict[str, dict[str, str]] = {}
    for model in models:
        given = fit_resources.get(model)
        if given is None:
            checked[model] = {}
            continue
        try:
            resources = FitResources.model_validate(given)
        except ValidationError as error:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'value'}: {_short(e['msg'], 120)}"
                for e in error.errors()[:4]
            )
            raise FanOutError(
                f"fit_resources for {model!r}: {problems}. Give cpu_request, cpu_limit, "
                'memory_request, memory_limit as Kubernetes quantities, e.g. {"cpu_limit": "2", '
                '"memory_limit": "4Gi"}'
            ) from None
        checked[model] = resources.model_dump()  # a request comes with its default limit
    return checked


def find_fit_deployment(parent_flow_run_id: UUID) -> str:
    """`train-fit/NAME`: the train-fit deployment on the parent run's work pool."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowFilter,
        FlowFilterName,
        WorkPoolFilter,
        WorkPoolFilterName,
    )

    with get_client(sync_client=True) as client:
        pool = client.read_flow_run(parent_flow_run_id).work_pool_name
        if not pool:
            raise FanOutError(
                "fits='fan-out' starts every fit as a run of the train-fit deployment on this "
                "run's work pool, but this run has no work pool (it was not started from a "
                "deployment); start train from a deployment (e.g. train-adhoc) or use "
                "fits='local'"
            )
        deployments = client.read_deployments(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[FIT_FLOW])),
            work_pool_filter=WorkPoolFilter(name=WorkPoolFilterName(any_=[pool])),
        )
    if not deployments:
        raise FanOutError(
            f"fits='fan-out' needs a deployment of the {FIT_FLOW} flow on work pool "
            f"{_short(pool)!r} and there is none; deploy it (prefect.yaml: `prefect deploy "
            "--name train-fit`) or use fits='local'"
        )
    chosen = sorted(deployments, key=lambda d: (d.name != FIT_FLOW, d.name))[0]
    return f"{FIT_FLOW}/{chosen.name}"


@dataclass
class Child:
    """One fit's child flow run (the newest one, after crash replacements)."""

    model: str
    fold: int | None
    parameters: dict[str, Any]
    job_variables: dict[str, Any]
    key: str
    flow_run_id: UUID | None = None
    crashes: int = 0
    done: bool = False

    @property
    def name(self) -> str:
        return fit_name(self.model, self.fold)

    def start(self, deployment: str) -> None:
        """Create this fit's (next) child run as a subflow run of the current run."""
        from prefect.client.schemas.objects import FlowRun
        from prefect.deployments import run_deployment

        # From sync code run_deployment returns the FlowRun; timeout=0: do not wait here.
        run: FlowRun = run_deployment(  # type: ignore[assignment]
            name=deployment,
            parameters=self.parameters,
            job_variables=self.job_variables or None,
            flow_run_name=self.name,
            as_subflow=True,
            timeout=0,
            tags=["kubetrain", "fit", self.model],
            # A repeated submission (e.g. a retried parent) finds its run instead of a twin.
            idempotency_key=f"{self.key}:{self.crashes}",
        )
        self.flow_run_id = run.id


def _read_runs(client: Any, ids: Iterable[UUID | None]) -> list[Any]:
    """The flow runs with these ids, as the API has them now."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    return list(
        client.read_flow_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=list(ids))))
    )


def wait_for_children(
    children: Sequence[Child],
    deployment: str,
    *,
    timeout: float,
    log: Any,
    poll: float = POLL_SECONDS,
    crash_retries: int = CRASH_RETRIES,
) -> None:
    """Return once every child Completed; raise FanOutError when one cannot (see module doc)."""
    from prefect.client.orchestration import get_client

    deadline = time.monotonic() + timeout
    finished = 0
    with get_client(sync_client=True) as client:
        while finished < len(children):
            waiting = {c.flow_run_id: c for c in children if not c.done}
            runs = _read_runs(client, waiting)
            for run in runs:
                child, state = waiting[run.id], run.state
                if state is None or not state.is_final():
                    continue
                reason = _short(state.message or "no message", _MESSAGE_LIMIT)
                if state.is_completed():
                    child.done = True
                    finished += 1
                    log.info("[%d/%d] %s completed", finished, len(children), child.name)
                elif state.is_crashed() and child.crashes < crash_retries:
                    child.crashes += 1
                    log.warning(
                        "%s crashed (%s); starting it again (%d/%d)",
                        child.name, reason, child.crashes, crash_retries,
                    )  # fmt: skip
                    child.start(deployment)
                else:
                    raise FanOutError(
                        f"child run {child.name} ended {state.name}: {reason}; see that "
                        "run's logs and fix the cause (fits that finished are reused when "
                        "train runs again)"
                    )
            if finished < len(children):
                if time.monotonic() > deadline:
                    left = [c.name for c in children if not c.done]
                    raise FanOutError(
                        f"fan-out timed out after {timeout:.0f}s with {len(left)} fit(s) "
                        f"unfinished ({_short(', '.join(left), 200)}); raise "
                        "KUBETRAIN_FANOUT_TIMEOUT or give the cluster more nodes"
                    )
                time.sleep(poll)


def stop_children(
    children: Sequence[Child],
    log: Any,
    *,
    settle: float,
    handover: float = HANDOVER_SECONDS,
    poll: float = POLL_SECONDS,
) -> None:
    """Cancel every unfinished child and wait, at most `settle` seconds, until each is final.

    A child still Scheduled is Cancelled at once. Any other is first set to Cancelling: the server
    lets a Cancelling run go nowhere but Cancelled (`EnforceCancellingToCancelledTransition`), so a
    child that had not started its flow can no longer start it. Whatever runs a started child (the
    process runner, the pod's `prefect flow-run execute`) stops it; a child that never started is
    left `handover` seconds to a worker that removes its infrastructure, then marked Cancelled
    here: its runner may have missed the Cancelling event, and its engine only exits on seeing
    Cancelling, so without this it would stay Cancelling until the server's 300 s clean-up.
    """
    from prefect.client.orchestration import get_client
    from prefect.states import Cancelled, Cancelling

    message = "The parent train run stopped: this fit is no longer needed."
    by_id = {c.flow_run_id: c for c in children if not c.done and c.flow_run_id is not None}
    if not by_id:
        return
    start = time.monotonic()
    with get_client(sync_client=True) as client:

        def unfinished() -> list[Any]:
            runs = _read_runs(client, by_id)
            return [r for r in runs if r.state is not None and not r.state.is_final()]

        def set_state(run: Any, state: Any) -> None:
            try:
                client.set_flow_run_state(run.id, state, force=True)
            except Exception as error:  # best effort: the server also cancels orphaned subflows
                log.warning("could not cancel %s: %s", by_id[run.id].name, _short(error, 200))

        for run in unfinished():
            scheduled = run.state.is_scheduled() and not run.infrastructure_pid
            set_state(run, Cancelled(message=message) if scheduled else Cancelling(message=message))
            log.info("cancelled %s", by_id[run.id].name)
        while (left := unfinished()) and time.monotonic() - start < settle:
            if time.monotonic() - start >= handover:
                for run in left:
                    if run.start_time is None and run.state.is_cancelling():
                        set_state(run, Cancelled(message=f"{message} It never started."))
            time.sleep(poll)
    if left:
        log.warning(
            "%d child run(s) still stopping after %.0fs: %s",
            len(left), settle, _short(", ".join(by_id[r.id].name for r in left), 200),
        )  # fmt: skip


def child_key(parent_flow_run_id: UUID, run_count: int, model: str, fold: int | None) -> str:
    """Idempotency key of a fit's child runs for one attempt of the parent."""
    return f"{parent_flow_run_id}:{run_count}:{fit_name(model, fold)}"
