"""The original tutorial's train.py, written faithfully from docs/design.md §1: the reference.

Sequential, one process: read the CSV, drop `Line` and `# Letter`, L2-normalize each row,
fit LinearDiscriminantAnalysis() and the MLPClassifier on all rows and joblib-dump them,
`cross_val_score(model, X, y, cv=5)` each, and write metadata.json with the mean accuracies.
Only two liberties: the nn's size can be reduced (for fast tests), and the fold scores are
returned (the original only keeps their means).

As a script it reads the original's environment variables (no defaults: a missing one is a
KeyError, as in the original) plus DATA_PATH (the original's URL, here any pandas source):
    DATA_PATH=… MODEL_DIR=… MODEL_FILE_LDA=clf_lda.joblib MODEL_FILE_NN=clf_nn.joblib \\
    METADATA_FILE=metadata.json python -m benchmarks.reference
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pandas as pd
from joblib import dump
from sklearn import preprocessing
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.model_selection import cross_val_score
from sklearn.neural_network import MLPClassifier


def train(
    data: str | Path,
    model_dir: Path,
    *,
    model_file_lda: str = "clf_lda.joblib",
    model_file_nn: str = "clf_nn.joblib",
    metadata_file: str = "metadata.json",
    hidden_layer_sizes: tuple[int, ...] = (500,),
    max_iter: int = 1000,
) -> dict[str, Any]:
    """Run the original procedure; return its metadata and the fold scores."""
    data_train = pd.read_csv(data)
    y_train = data_train["# Letter"].values
    X_train = data_train.drop(data_train.loc[:, "Line":"# Letter"].columns, axis=1)

    # Data normalization (L2)
    X_train = preprocessing.normalize(X_train, norm="l2")

    # Linear Discriminant Analysis (default parameters)
    clf_lda = LinearDiscriminantAnalysis()
    clf_lda.fit(X_train, y_train)
    dump(clf_lda, model_dir / model_file_lda)

    # Neural network: multi-layer perceptron
    clf_nn = MLPClassifier(
        solver="adam",
        activation="relu",
        alpha=0.0001,
        hidden_layer_sizes=hidden_layer_sizes,
        random_state=0,
        max_iter=max_iter,
    )
    clf_nn.fit(X_train, y_train)
    dump(clf_nn, model_dir / model_file_nn)

    # Cross-validation
    acc_lda = cross_val_score(clf_lda, X_train, y_train, cv=5)
    acc_nn = cross_val_score(clf_nn, X_train, y_train, cv=5)
    metadata = {"train_accuracy_lda": acc_lda.mean(), "train_accuracy_nn": acc_nn.mean()}
    print(metadata)
    with (model_dir / metadata_file).open("w") as outfile:
        json.dump(metadata, outfile)
    return {"metadata": metadata, "folds": {"lda": list(acc_lda), "nn": list(acc_nn)}}


def main() -> None:
    """The original's entry point: configuration from environment variables only."""
    model_dir = Path(os.environ["MODEL_DIR"])
    train(
        os.environ["DATA_PATH"],
        model_dir,
        model_file_lda=os.environ["MODEL_FILE_LDA"],
        model_file_nn=os.environ["MODEL_FILE_NN"],
        metadata_file=os.environ["METADATA_FILE"],
    )


if __name__ == "__main__":
    main()
