"""The Kubernetes work pool on the Prefect API: create or update it (idempotent)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kubetrain.k8s.template import WorkPoolError


async def upsert_work_pool(name: str, template: Mapping[str, Any]) -> str:
    """Create or update the Kubernetes work pool; return created, updated or unchanged."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate, WorkPoolUpdate
    from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError

    async with get_client() as client:
        try:
            pool = await client.read_work_pool(name)
        except ObjectNotFound:
            pool = None
        try:
            if pool is None:
                await client.create_work_pool(
                    WorkPoolCreate(
                        name=name,
                        type="kubernetes",
                        base_job_template=dict(template),
                        description="kubetrain: every flow run a Kubernetes Job",
                    )
                )
                return "created"
            if pool.type != "kubernetes":
                raise WorkPoolError(
                    f"work pool {name!r} exists with type {pool.type!r}, not 'kubernetes': "
                    "delete it (`prefect work-pool delete`) or choose another --pool name"
                )
            if pool.base_job_template == template:
                return "unchanged"
            await client.update_work_pool(name, WorkPoolUpdate(base_job_template=dict(template)))
            return "updated"
        except PrefectHTTPStatusError as exc:
            raise WorkPoolError(
                f"the Prefect API rejected the base job template for pool {name!r}: "
                f"{exc.response.text}"
            ) from exc
