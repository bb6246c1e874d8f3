"""Task: the run's Prefect artifacts (CV table, version description)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from kubetrain.report import cv_rows, version_markdown
from kubetrain.training.engine import ModelResult


@task(name="report", cache_policy=NO_CACHE)
def report(location: str, manifest: Mapping[str, Any], results: Mapping[str, ModelResult]) -> None:
    """Publish the CV table and the version description as Prefect artifacts."""
    create_table_artifact(
        key="cv-results",
        table=cv_rows(results),
        description=f"Cross-validation of version {manifest['version']} (mean ± std over folds)",
    )
    create_markdown_artifact(
        key="model-version",
        markdown=version_markdown(location, manifest, results),
        description=f"Published version {manifest['version']}",
    )
