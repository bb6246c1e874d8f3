"""Prefect automations shipped as files (deployments/automations/*.yaml), upserted by name.

The files use the layout `prefect automation create --from-file` reads (a top-level
`automations` list); two kubetrain placeholders are replaced before validation:
"{{ kubetrain.pool }}" (the work pool's name) and "{{ kubetrain.notify_block }}" (the id of the
notification block). A file that needs a notification block is skipped when none is given.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from uuid import UUID

import yaml

from kubetrain.k8s.template import ENVIRONMENTS_DIR, WorkPoolError

AUTOMATIONS_DIR = ENVIRONMENTS_DIR / "automations"
POOL_PLACEHOLDER = "{{ kubetrain.pool }}"
NOTIFY_PLACEHOLDER = "{{ kubetrain.notify_block }}"


def _replace(value: Any, replacements: dict[str, str]) -> Any:
    if isinstance(value, dict):
        return {k: _replace(v, replacements) for k, v in value.items()}
    if isinstance(value, list):
        return [_replace(v, replacements) for v in value]
    if isinstance(value, str):
        for placeholder, text in replacements.items():
            value = value.replace(placeholder, text)
    return value


def load_automations(
    pool: str, notify_block_id: UUID | None = None, directory: Path = AUTOMATIONS_DIR
) -> list[Any]:
    """The automations of every file in directory, validated (prefect AutomationCore)."""
    from prefect.events.schemas.automations import AutomationCore
    from pydantic import ValidationError

    result: list[Any] = []
    for path in sorted(directory.glob("*.yaml")):
        text = path.read_text()
        if NOTIFY_PLACEHOLDER in text and notify_block_id is None:
            continue
        data = yaml.safe_load(text) or {}
        replacements = {POOL_PLACEHOLDER: pool, NOTIFY_PLACEHOLDER: str(notify_block_id)}
        for item in _replace(data.get("automations") or [], replacements):
            try:
                result.append(AutomationCore.model_validate(item))
            except ValidationError as exc:
                raise WorkPoolError(
                    f"{path.name}: automation {str(item.get('name'))[:80]!r} is invalid: {exc}; "
                    "fix the file (the layout of `prefect automation create --from-file`)"
                ) from exc
    return result


async def resolve_notify_block(slug_and_name: str) -> UUID:
    """The id of a notification block given as BLOCK_TYPE/NAME (e.g. slack-webhook/alerts)."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    block_type, _, name = slug_and_name.partition("/")
    if not block_type or not name:
        raise WorkPoolError(
            f"notify_block {slug_and_name[:80]!r} is not BLOCK_TYPE/NAME: pass e.g. "
            "slack-webhook/kubetrain-alerts"
        )
    async with get_client() as client:
        try:
            block = await client.read_block_document_by_name(name, block_type)
        except ObjectNotFound as exc:
            raise WorkPoolError(
                f"no {block_type} block named {name!r}: create it (UI: Blocks) or pass "
                "another notify_block"
            ) from exc
    return block.id


async def upsert_automations(automations: list[Any]) -> dict[str, str]:
    """Create or update each automation by name; {name: created|updated|unchanged}."""
    from prefect.client.orchestration import get_client
    from prefect.events.schemas.automations import AutomationCore

    fields = set(AutomationCore.model_fields)
    results: dict[str, str] = {}
    async with get_client() as client:
        for automation in automations:
            existing = await client.read_automations_by_name(automation.name)
            if len(existing) > 1:
                raise WorkPoolError(
                    f"{len(existing)} automations are named {automation.name!r}: delete the "
                    "extra ones (`prefect automation delete --id ...`) so the name is unique"
                )
            if not existing:
                await client.create_automation(automation)
                results[automation.name] = "created"
                continue
            current = AutomationCore.model_validate(existing[0].model_dump(include=fields))
            if _comparable(current) == _comparable(automation):
                results[automation.name] = "unchanged"
                continue
            await client.update_automation(existing[0].id, automation)
            results[automation.name] = "updated"
    return results


def _comparable(automation: Any) -> Any:
    """The automation without trigger ids (generated per object, not configuration); python
    mode keeps `expect`/`after` as sets, which JSON would list in arbitrary order."""

    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k != "id"}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    data = automation.model_dump()
    data["trigger"] = strip(data["trigger"])
    return data
