"""Strict Kubernetes schema checks (kubernetes-validate) of rendered Jobs and manifests."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from kubetrain.k8s.render import render_job_manifest, sample_flow_run_objects
from kubetrain.k8s.template import KUBERNETES_VERSION, WorkPoolError, check_job_variables


def schema_errors(document: Mapping[str, Any], version: str = KUBERNETES_VERSION) -> list[str]:
    """Strict Kubernetes schema errors of one manifest ([] when it is valid)."""
    try:
        import kubernetes_validate
        from kubernetes_validate.utils import SchemaNotFoundError, ValidationError
    except ImportError as exc:  # the flow-run image installs only the runtime requirements
        raise WorkPoolError(
            "validating manifests needs the kubernetes-validate package: run this from the "
            "development environment (`make setup`, requirements/dev.txt)"
        ) from exc

    kind = f"{document.get('apiVersion')}/{document.get('kind')}"
    try:
        kubernetes_validate.validate(dict(document), version, strict=True)
    except ValidationError as exc:
        path = ".".join(str(p) for p in exc.path) or "<root>"
        return [f"{kind} {path}: {exc.message}"]
    except SchemaNotFoundError as exc:
        return [f"{kind}: no Kubernetes {version} schema for this kind ({exc})"]
    return []


def validate_template(
    template: Mapping[str, Any], job_variables: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Render a sample Job from the template and validate it strictly; return the Job."""
    values = dict(job_variables or {})
    props = template["variables"].get("properties", {})
    # The pool's defaults must be valid too: an environment file can set them to anything.
    defaults = {k: v["default"] for k, v in props.items() if "default" in v}
    check_job_variables(template, defaults | values)
    try:
        manifest = asyncio.run(
            render_job_manifest(template, values, **sample_flow_run_objects(job_variables=values))
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise WorkPoolError(
            f"the base job template does not render a Job the worker accepts: {exc}"
        ) from exc
    errors = schema_errors(manifest)
    if errors:
        raise WorkPoolError(
            f"the rendered Job is not valid Kubernetes {KUBERNETES_VERSION} (strict):\n  "
            + "\n  ".join(errors)
            + "\nfix the field in deployments/base-job-template.json or the job variable"
        )
    return manifest
