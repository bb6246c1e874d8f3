"""Offline rendering: the exact Job the prefect-kubernetes worker would submit for a flow run.

Uses prefect-kubernetes' own KubernetesWorkerJobConfiguration (from_template_and_values, then
prepare_for_flow_run), as the worker does before it creates the Job; no cluster, no API.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, cast

from kubetrain.k8s.template import POOL_NAME, WorkPoolError


def sample_flow_run_objects(
    deployment_name: str = "sample",
    flow_name: str = "train",
    job_variables: Mapping[str, Any] | None = None,
    pool_name: str = POOL_NAME,
) -> dict[str, Any]:
    """FlowRun, deployment, flow and work pool API objects as the worker would read them."""
    from prefect.client.schemas.objects import Flow, FlowRun, WorkPool
    from prefect.client.schemas.responses import DeploymentResponse

    flow_obj = Flow(id=uuid.uuid4(), name=flow_name, labels={})
    deployment = DeploymentResponse(
        id=uuid.uuid4(),
        name=deployment_name,
        flow_id=flow_obj.id,
        work_pool_name=pool_name,
        job_variables=dict(job_variables or {}),
        labels={},
        **cast(dict[str, Any], {"updated": datetime.now(UTC)}),
    )
    flow_run = FlowRun(
        id=uuid.uuid4(),
        name="sample-run",
        flow_id=flow_obj.id,
        deployment_id=deployment.id,
        job_variables=dict(job_variables or {}),
    )
    work_pool = WorkPool(
        id=uuid.uuid4(), name=pool_name, type="kubernetes", default_queue_id=uuid.uuid4()
    )
    return {
        "flow_run": flow_run,
        "deployment": deployment,
        "flow_obj": flow_obj,
        "work_pool": work_pool,
    }


class _OfflineClient:
    """Stands in for the Prefect client while rendering: only block/variable references use it."""

    def __getattr__(self, name: str) -> Any:
        raise WorkPoolError(
            f"rendering needs the Prefect API ({name}): the template references a block or a "
            "variable ({{ prefect.blocks... }} / {{ prefect.variables... }}); render it with "
            "a running API or inline the value"
        )


async def render_job_manifest(
    template: Mapping[str, Any],
    job_variables: Mapping[str, Any],
    *,
    flow_run: Any,
    deployment: Any = None,
    flow_obj: Any = None,
    work_pool: Any = None,
    worker_name: str = "kubetrain-render",
) -> dict[str, Any]:
    """The exact Job body the Kubernetes worker would submit for this flow run."""
    from prefect_kubernetes.worker import KubernetesWorkerJobConfiguration

    config = await KubernetesWorkerJobConfiguration.from_template_and_values(
        dict(template), dict(job_variables), client=_OfflineClient()
    )
    config.prepare_for_flow_run(
        flow_run=flow_run,
        deployment=deployment,
        flow=flow_obj,
        work_pool=work_pool,
        worker_name=worker_name,
        worker_id=None,
    )
    return copy.deepcopy(config.job_manifest)
