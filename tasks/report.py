"""Tasks: the run's Prefect artifacts (CV table, version description, link, plots, progress)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from uuid import UUID

from prefect import task
from prefect.artifacts import (
    create_link_artifact,
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.cache_policies import NO_CACHE

from kubetrain.data import Dataset
from kubetrain.plots import write_plots
from kubetrain.report import artifact_key, cv_rows, version_markdown
from kubetrain.training.engine import ModelResult


@task(name="plot", cache_policy=NO_CACHE)
def plot(results: Mapping[str, ModelResult], dataset: Dataset, directory: Path) -> dict[str, Path]:
    """Render the CV-scores plot and each model's out-of-fold confusion matrix to PNG."""
    return write_plots(results, dataset.y, directory)


@task(name="report", cache_policy=NO_CACHE)
def report(
    experiment: str,
    location: str,
    manifest: Mapping[str, Any],
    results: Mapping[str, ModelResult],
    plots: Mapping[str, Path],
) -> None:
    """Publish the CV table, the version description and a link to the version."""
    version = manifest["version"]
    create_table_artifact(
        key=artifact_key(experiment, "cv-results"),
        table=cv_rows(results),
        description=f"Cross-validation of `{experiment}` version `{version}` (mean ± std)",
    )
    create_link_artifact(
        key=artifact_key(experiment, "version-link"),
        link=location,
        link_text=f"{experiment}/{version}",
        description=f"Where `{experiment}` version `{version}` was published",
    )
    create_markdown_artifact(
        key=artifact_key(experiment, "model-version"),
        markdown=version_markdown(location, manifest, results, plots),
        description=f"Published version `{version}` of `{experiment}`, with plots",
    )


def start_progress(experiment: str, total: int, reused: Sequence[str] = ()) -> UUID:
    """A progress artifact (the reused fits already done), moved by `advance_progress`."""
    description = f"Fits finished of {total} (each model's final fit and every CV fold)"
    if reused:
        shown = ", ".join(reused[:20]) + (", …" if len(reused) > 20 else "")
        description += f"; {len(reused)} reused from the fit cache: {shown}"
    artifact_id = create_progress_artifact(
        progress=100.0 * len(reused) / total,
        key=artifact_key(experiment, "training-progress"),
        description=description,
    )
    assert isinstance(artifact_id, UUID)  # called from a sync flow: the sync variant ran
    return artifact_id


def advance_progress(artifact_id: UUID, done: int, total: int) -> None:
    """Set the progress artifact to done/total."""
    update_progress_artifact(artifact_id, progress=100.0 * done / total)
