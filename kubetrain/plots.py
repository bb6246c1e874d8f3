"""Plots of a training run, rendered with matplotlib's Agg backend to PNG files.

They are published with the version (so they are checksummed like every other file) and shown
in the run's version artifact (README "Training: the `train` flow").
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from kubetrain.training.engine import ModelResult

CV_PLOT = "cv_scores.png"
# Past this many classes the cell numbers would be unreadable: the colours carry the matrix.
MAX_ANNOTATED_CLASSES = 15


def confusion_file(model: str) -> str:
    """File name of a model's confusion-matrix plot."""
    return f"confusion_{model}.png"


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # no display in a pod; also the only thread-safe-ish choice here
    import matplotlib.pyplot as plt

    return plt


def plot_cv_scores(results: Mapping[str, ModelResult], path: Path) -> Path:
    """Each model's score per CV fold (one line per model and metric), with its mean."""
    plt = _pyplot()
    metrics = list(next(iter(results.values())).scores)
    fig, axes = plt.subplots(
        1, len(metrics), figsize=(4.5 * len(metrics), 3.4), squeeze=False, dpi=100
    )
    for axis, metric in zip(axes[0], metrics, strict=True):
        for name, result in results.items():
            scores = result.scores[metric]
            folds = np.arange(1, len(scores) + 1)
            (line,) = axis.plot(
                folds, scores, marker="o", label=f"{name} ({result.mean(metric):.3f})"
            )
            axis.axhline(result.mean(metric), color=line.get_color(), linestyle=":", linewidth=1)
        axis.set_title(f"{metric} per fold")
        axis.set_xlabel("fold")
        axis.set_xticks(folds)
        axis.set_ylabel(metric)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8, title="model (mean)", title_fontsize=8)
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)
    return path


def plot_confusion(result: ModelResult, y: np.ndarray, path: Path) -> Path:
    """The model's confusion matrix from its out-of-fold predictions (rows: true class)."""
    from sklearn.metrics import confusion_matrix

    if result.oof_predictions is None:
        raise ValueError(f"model {result.name!r} has no out-of-fold predictions to plot")
    plt = _pyplot()
    labels = np.unique(y)
    matrix = confusion_matrix(y, result.oof_predictions, labels=labels)
    size = min(9.0, 2.5 + 0.3 * len(labels))
    fig, axis = plt.subplots(figsize=(size, size * 0.85), dpi=100)
    image = axis.imshow(matrix, cmap="Blues")
    fig.colorbar(image, ax=axis, fraction=0.046, pad=0.04)
    ticks = np.arange(len(labels))
    axis.set_xticks(ticks, [str(label) for label in labels], rotation=90, fontsize=7)
    axis.set_yticks(ticks, [str(label) for label in labels], fontsize=7)
    axis.set_xlabel("predicted class")
    axis.set_ylabel("true class")
    accuracy = float(np.trace(matrix) / matrix.sum()) if matrix.sum() else 0.0
    axis.set_title(f"{result.name}: out-of-fold predictions (accuracy {accuracy:.3f})")
    if len(labels) <= MAX_ANNOTATED_CLASSES:
        threshold = matrix.max() / 2 if matrix.size else 0
        for (row, col), count in np.ndenumerate(matrix):
            colour = "white" if count > threshold else "black"
            axis.text(col, row, str(count), ha="center", va="center", fontsize=7, color=colour)
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)
    return path


def write_plots(
    results: Mapping[str, ModelResult], y: np.ndarray, directory: Path
) -> dict[str, Path]:
    """The CV-scores plot and one confusion matrix per model, written into directory."""
    directory.mkdir(parents=True, exist_ok=True)
    files = {CV_PLOT: plot_cv_scores(results, directory / CV_PLOT)}
    for name, result in results.items():
        files[confusion_file(name)] = plot_confusion(result, y, directory / confusion_file(name))
    return files
