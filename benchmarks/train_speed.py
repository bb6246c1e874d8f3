"""Training speed: the original sequential procedure vs our parallel training, side by side.

Workload of the original's shape: 1300 rows x 160 float features, 26 classes of 50 rows sorted by
class, `lda` + full-size `nn`, 5-fold CV, l2 rows. Both run in this process, one after the other:
  reference  benchmarks/reference.py: read CSV, normalize, fit + dump both, cross_val_score both
  ours       kubetrain.data.load_dataset + training.engine.train_models + write_version_files
             (a fresh worker pool: its start-up is included)
Then, unless --no-process, the whole processes: `python -m benchmarks.reference` vs
`python -m flows.train` (Prefect's ephemeral server start included).

    python -m benchmarks.train_speed [--no-process] [--rows-per-class 50] [--features 160]

Last line: `ratio: <ours / reference training wall time>` (target <= 0.65).
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO_ROOT = Path(__file__).resolve().parent.parent


def make_csv(
    path: Path,
    classes: int,
    per_class: int,
    features: int,
    seed: int = 0,
    separation: float = 0.3,
    offset: float = 0.0,
) -> Path:
    """Data in the original's layout (Line, # Letter, ' feature' columns), sorted by class.

    separation 0.3 gives about 0.83 CV accuracy for lda at 1300 x 160: hard enough that fold
    scores differ, so "identical scores" means something. A positive offset shared by every
    feature (like band-power features) makes L2-scaled rows alike, so the MLP needs many more
    epochs: offset 5 gives ~850 epochs per fit, about the original's ~3 minutes sequentially.
    """
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(classes, features))
    labels = np.repeat(np.arange(1, classes + 1), per_class)
    values = centers[labels - 1] * separation + rng.normal(size=(len(labels), features)) + offset
    frame = pd.DataFrame(values, columns=[f" c{i}/theta" for i in range(features)])
    frame.insert(0, "# Letter", labels)
    frame.insert(0, "Line", np.arange(1, len(labels) + 1))
    frame.to_csv(path, index=False)
    return path


def children_peak_rss_mib() -> list[float]:
    """Peak RSS (VmHWM) of each live child process (the worker pool), MiB."""
    peaks = []
    for status_file in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(
                line.split(":", 1) for line in status_file.read_text().splitlines() if ":" in line
            )
        except OSError:
            continue
        if int(fields.get("PPid", "0")) == os.getpid() and "VmHWM" in fields:
            peaks.append(int(fields["VmHWM"].split()[0]) / 1024)
    return sorted(peaks, reverse=True)


def self_peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_reference(
    csv_path: Path, out: Path, blas_threads: int | None
) -> tuple[float, dict[str, list[float]]]:
    from threadpoolctl import threadpool_limits

    from benchmarks import reference

    started = time.perf_counter()
    with threadpool_limits(limits=blas_threads):
        result = reference.train(csv_path, out)
    seconds = time.perf_counter() - started
    return seconds, {name: [float(s) for s in scores] for name, scores in result["folds"].items()}


def run_ours(csv_path: Path, out: Path) -> tuple[float, dict[str, list[float]], int]:
    from kubetrain.data import load_dataset
    from kubetrain.manifest import write_version_files
    from kubetrain.training.engine import TrainingConfig, default_workers, train_models

    started = time.perf_counter()
    dataset = load_dataset(str(csv_path), "# Letter", ["Line"], 5)
    config = TrainingConfig(models=["lda", "nn"], normalize="l2", folds=5, seed=0)
    results = train_models(dataset.X, dataset.y, config)
    write_version_files(results, out)
    seconds = time.perf_counter() - started
    return seconds, {n: r.scores["accuracy"] for n, r in results.items()}, default_workers()


def run_processes(csv_path: Path, work: Path) -> tuple[float, float]:
    """Whole-process wall times: (reference script, python -m flows.train)."""
    env = dict(
        os.environ,
        PYTHONPATH=str(REPO_ROOT),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        DO_NOT_TRACK="1",
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="180",
    )
    ref_dir = work / "ref-process"
    ref_dir.mkdir()
    ref_env = dict(
        env,
        DATA_PATH=str(csv_path),
        MODEL_DIR=str(ref_dir),
        MODEL_FILE_LDA="clf_lda.joblib",
        MODEL_FILE_NN="clf_nn.joblib",
        METADATA_FILE="metadata.json",
    )
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "benchmarks.reference"],
        env=ref_env,
        cwd=REPO_ROOT,
        check=True,
        capture_output=True,
    )
    reference_seconds = time.perf_counter() - started
    started = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "flows.train",
            "--data",
            str(csv_path),
            "--destination",
            str(work / "flow-process"),
        ],
        env=env,
        cwd=REPO_ROOT,
        check=True,
        capture_output=True,
    )
    return reference_seconds, time.perf_counter() - started


def main() -> None:
    """Run both, print times, identical-scores check, peak memory and the ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows-per-class", type=int, default=50)
    parser.add_argument("--features", type=int, default=160)
    parser.add_argument(
        "--offset",
        type=float,
        default=5.0,
        help="positive offset shared by all features (5: ~3 min sequential, like the original)",
    )
    parser.add_argument(
        "--reference-threads",
        type=int,
        default=None,
        help="cap the reference's BLAS threads (default: uncapped, as the original ran)",
    )
    parser.add_argument("--no-process", action="store_true", help="skip whole-process timing")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="kubetrain-bench-") as tmp:
        work = Path(tmp)
        csv_path = make_csv(
            work / "train.csv", 26, args.rows_per_class, args.features, offset=args.offset
        )
        (work / "ref").mkdir()
        (work / "ours").mkdir()
        print(
            f"workload: {26 * args.rows_per_class} rows x {args.features} features, 26 classes,"
            " lda + nn(500), 5 folds, l2",
            flush=True,
        )

        ref_seconds, ref_scores = run_reference(csv_path, work / "ref", args.reference_threads)
        ref_peak = self_peak_rss_mib()
        threads = args.reference_threads or "uncapped"
        print(f"reference (sequential, BLAS threads {threads}): {ref_seconds:8.1f} s", flush=True)
        our_seconds, our_scores, workers = run_ours(csv_path, work / "ours")
        print(f"ours ({workers} worker processes, 1 BLAS thread each): {our_seconds:8.1f} s")
        identical = all(ref_scores[m] == our_scores[m] for m in ("lda", "nn"))
        print(f"fold scores identical: {identical}")
        for model in ("lda", "nn"):
            print(f"  {model} reference: {ref_scores[model]}")
            print(f"  {model} ours:      {our_scores[model]}")
        print(
            f"peak RSS: this process {self_peak_rss_mib():.0f} MiB (after the reference alone: "
            f"{ref_peak:.0f} MiB); workers {[round(p) for p in children_peak_rss_mib()]} MiB"
        )

        if not args.no_process:
            ref_process, flow_process = run_processes(csv_path, work)
            print(
                f"whole process: reference script {ref_process:.1f} s, "
                f"python -m flows.train {flow_process:.1f} s"
            )
            print(f"process ratio: {flow_process / ref_process:.3f}")
        if not identical:
            print("ERROR: scores differ", file=sys.stderr)
        print(f"ratio: {our_seconds / ref_seconds:.3f}")
        if not identical:
            sys.exit(1)


if __name__ == "__main__":
    main()
