"""What a run shows in the Prefect UI: artifact keys, the CV table, the version description
(parameters as JSON, plots inline) and the predict preview. Markdown-safe throughout: every
value is in a code span or a fenced block, so angle brackets and underscores survive."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kubetrain.training.engine import ModelResult

PREVIEW_ROWS = 20


def artifact_key(experiment: str, what: str) -> str:
    """A Prefect artifact key (lowercase letters, digits, dashes) for one experiment's `what`.

    Experiment names allow capitals, '.' and '_'; when the key has to change the name, a short
    hash of the name keeps 'My_exp' and 'my-exp' apart.
    """
    slug = re.sub(r"[^a-z0-9]+", "-", experiment.lower()).strip("-") or "experiment"
    if slug != experiment:
        slug = f"{slug}-{hashlib.sha256(experiment.encode()).hexdigest()[:6]}"
    return f"{slug}-{what}"


def code(value: Any) -> str:
    """An inline markdown code span that holds any text (backticks included)."""
    text = str(value).replace("\n", " ")
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def fenced(text: str, language: str = "") -> str:
    """A fenced markdown code block that holds any text."""
    longest = max((len(run) for run in re.findall(r"`{3,}", text)), default=2)
    fence = "`" * (longest + 1)
    return f"{fence}{language}\n{text}\n{fence}"


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


def plot_title(file: str) -> str:
    """Alt text of a plot file, in words: 'confusion matrix of lda', 'CV scores per fold'."""
    from kubetrain.plots import CV_PLOT

    if file == CV_PLOT:
        return "CV scores per fold"
    return "confusion matrix of " + file.removeprefix("confusion").removesuffix(".png").strip("_")


def png_markdown(title: str, path: Path) -> str:
    """A PNG inline in markdown as a data: URI (the Prefect UI fetches nothing else)."""
    encoded = base64.b64encode(path.read_bytes()).decode("ascii")
    return f"![{title}](data:image/png;base64,{encoded})"


def version_markdown(
    location: str,
    manifest: Mapping[str, Any],
    results: Mapping[str, ModelResult],
    plots: Mapping[str, Path] | None = None,
) -> str:
    """Markdown describing a published version: where, which data, scores, plots, parameters."""
    data = manifest["data"]
    scores = "\n".join(
        f"| {code(r['model'])} | {code(r['metric'])} | {r['mean ± std']} |"
        for r in cv_rows(results)
    )
    files = "\n".join(
        f"| {code(name)} | {entry['bytes']} | {code(entry['sha256'][:16] + '…')} |"
        for name, entry in manifest["files"].items()
    )
    images = "\n\n".join(
        png_markdown(plot_title(name), path) for name, path in (plots or {}).items()
    )
    parameters = json.dumps(manifest["parameters"], indent=2, sort_keys=False, default=str)
    return f"""# Model version {code(manifest["version"])}

**Published to:** {code(location)}

## Data
- source: {code(data["source"])}
- sha256: {code(data["sha256"])}
- rows: {data["rows"]}, columns: {len(data["columns"])}, target: {code(data["target"])}

## Cross-validation
| model | metric | mean ± std |
|---|---|---|
{scores}

{images}

## Parameters
{fenced(parameters, "json")}

## Files
| file | bytes | sha256 |
|---|---|---|
{files}
"""


def preview_rows(predictions: Any, rows: int = PREVIEW_ROWS) -> list[dict[str, Any]]:
    """The first rows of a predictions frame as JSON-friendly table rows (row number first)."""
    head = predictions.head(rows)
    return [
        {"row": int(index), **{str(k): _plain(v) for k, v in record.items()}}
        for index, record in zip(head.index, head.to_dict("records"), strict=True)
    ]


def _plain(value: Any) -> Any:
    item = getattr(value, "item", None)  # numpy scalars → Python values
    return item() if callable(item) else value


def predict_markdown(
    *,
    experiment: str,
    version: str,
    data: str,
    data_sha256: str,
    manifest: Mapping[str, Any],
    written: str,
    rows: int,
    accuracy: Mapping[str, float] | None,
    on_store: bool = False,
) -> str:
    """Markdown for a predict run: what was scored with what, where the predictions went."""
    trained_on = manifest.get("data", {})
    lines = [f"# Predictions of {code(experiment)} version {code(version)}", ""]
    if data_sha256 == trained_on.get("sha256"):
        lines += [
            "> **Note: this is the training data.** Its sha256 equals the one the version was "
            "trained on, so the accuracy below measures fit, not how the models do on new "
            "data; the cross-validation scores of the train run are the honest estimate.",
            "",
        ]
    lines += [
        f"- scored: {code(data)} (sha256 {code(data_sha256)}), {rows} rows",
        f"- trained on: {code(trained_on.get('source', '?'))}",
        f"- predictions written to: {code(written)}"
        + (" (uploaded to the store)" if on_store else " on the machine that ran the flow"),
    ]
    if accuracy is not None:
        lines += ["", "| model | accuracy |", "|---|---|"]
        lines += [f"| {code(model)} | {value:.4f} |" for model, value in accuracy.items()]
    else:
        lines += ["", "The data has no target column, so no accuracy is reported."]
    return "\n".join(lines) + "\n"
