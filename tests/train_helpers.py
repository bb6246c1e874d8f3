"""Data in the original tutorial's layout, generated at test time (no download)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


def original_layout_frame(
    classes: int = 26, per_class: int = 10, features: int = 8, seed: int = 0
) -> pd.DataFrame:
    """`Line` id, integer `# Letter` sorted by class, float features named with a leading space.

    Each class has its own mean, so models learn something but folds still disagree a little.
    """
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(classes, features)) * 1.5
    labels = np.repeat(np.arange(1, classes + 1), per_class)
    values = centers[labels - 1] + rng.normal(size=(len(labels), features))
    frame = pd.DataFrame(values, columns=[f" f{i}/theta" for i in range(features)])
    frame.insert(0, "# Letter", labels)
    frame.insert(0, "Line", np.arange(1, len(labels) + 1))
    return frame


def write_original_layout_csv(path: Path, **kwargs: int) -> Path:
    """Write original-layout data to path (as a CSV with a header) and return the path."""
    original_layout_frame(**kwargs).to_csv(path, index=False)
    return path


def published_versions(destination: Path) -> list[Path]:
    """Every version folder under destination (complete or not) and any stray .part file."""
    if not destination.exists():
        return []
    return sorted(
        p
        for p in destination.rglob("*")
        if (p.is_dir() and p.parent.parent == destination) or p.name.endswith(".part")
    )
