"""Task: keep credentials out of what Prefect stores about a run."""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.runtime import flow_run

from kubetrain.locations import redact_url

URL_PARAMETERS = ("data", "source", "destination")


def redacted(parameters: dict[str, Any]) -> dict[str, Any]:
    """A copy of parameters with credentials in URL-valued parameters redacted."""
    return {
        name: redact_url(value) if name in URL_PARAMETERS and isinstance(value, str) else value
        for name, value in parameters.items()
    }


@task(name="redact-run-parameters", cache_policy=NO_CACHE)
def redact_run_parameters(parameters: dict[str, Any]) -> dict[str, Any]:
    """Replace URL credentials in the run's stored parameters; return the redacted copy."""
    safe = redacted(parameters)
    if safe != parameters and flow_run.id:
        with get_client(sync_client=True) as client:
            client.update_flow_run(flow_run.id, parameters=safe)
        get_run_logger().warning(
            "credentials in a URL parameter were removed from this run's record; a re-run from "
            "the UI will not have them: pass HTTP credentials with KUBETRAIN_HTTP_AUTHORIZATION"
        )
    return safe
