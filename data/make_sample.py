"""Regenerate data/sample_letters.csv from scikit-learn's bundled digits (no download).

The digits dataset (1797 8x8 images, 10 classes) is reshaped into the original tutorial's
layout: an integer row id `Line`, the integer target `# Letter`, rows sorted by class, and
feature columns whose names start with a space (" px_<row>_<col>", pixel intensity 0-16).

    .venv/bin/python data/make_sample.py    # rewrites data/sample_letters.csv byte for byte
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.datasets import load_digits

OUTPUT = Path(__file__).resolve().parent / "sample_letters.csv"


def build() -> pd.DataFrame:
    """The digits in the original's column layout, rows sorted by class (stable)."""
    digits = load_digits()
    order = np.argsort(digits.target, kind="stable")
    features = pd.DataFrame(
        digits.data[order].astype(np.int64),
        columns=[f" px_{i // 8}_{i % 8}" for i in range(digits.data.shape[1])],
    )
    frame = pd.concat(
        [
            pd.DataFrame({"Line": np.arange(1, len(order) + 1), "# Letter": digits.target[order]}),
            features,
        ],
        axis=1,
    )
    return frame


if __name__ == "__main__":
    build().to_csv(OUTPUT, index=False)
    print(f"wrote {OUTPUT} ({OUTPUT.stat().st_size} bytes)")
