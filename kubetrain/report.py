"""Prefect artifacts for a training run: the CV table and a description of the version."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kubetrain.training.engine import ModelResult


def cv_rows(results: Mapping[str, ModelResult]) -> list[dict[str, Any]]:
    """One row per model and metric: folds, mean and std."""
    return [
        {
            "model": name,
            "metric": metric,
            "mean": round(result.mean(metric), 6),
            "std": round(result.std(metric), 6),
            "folds": len(scores),
            "mean ± std": f"{result.mean(metric):.4f} ± {result.std(metric):.4f}",
        }
        for name, result in results.items()
        for metric, scores in result.scores.items()
    ]


def format_cv_table(results: Mapping[str, ModelResult]) -> str:
    """A plain-text CV table for the terminal."""
    rows = cv_rows(results)
    header = ("model", "metric", "mean ± std", "folds")
    cells = [header, *((r["model"], r["metric"], r["mean ± std"], str(r["folds"])) for r in rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def version_markdown(
    location: str, manifest: Mapping[str, Any], results: Mapping[str, ModelResult]
) -> str:
    """Markdown describing a published version: where, which data, which parameters, scores."""
    data = manifest["data"]
    params = "\n".join(f"| `{k}` | `{v!r}` |" for k, v in manifest["parameters"].items())
    scores = "\n".join(
        f"| {r['model']} | {r['metric']} | {r['mean ± std']} |" for r in cv_rows(results)
    )
    files = "\n".join(
        f"| `{name}` | {entry['bytes']} | `{entry['sha256'][:16]}…` |"
        for name, entry in manifest["files"].items()
    )
    return f"""# Model version `{manifest["version"]}`

**Published to:** `{location}`

## Data
- source: `{data["source"]}`
- sha256: `{data["sha256"]}`
- rows: {data["rows"]}, columns: {len(data["columns"])}, target: `{data["target"]}`

## Cross-validation
| model | metric | mean ± std |
|---|---|---|
{scores}

## Parameters
| parameter | value |
|---|---|
{params}

## Files
| file | bytes | sha256 |
|---|---|---|
{files}
"""
