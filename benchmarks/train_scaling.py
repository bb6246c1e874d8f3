"""Training scaling: wall time of our parallel training from 1k to 100k rows.

Data in the original's layout (26 classes, 160 features), models `lda` + `logreg`
(max_iter=200), 5-fold CV, l2 rows; each size runs load + fit + CV + serialize once.

    python -m benchmarks.train_scaling [--sizes 1000,3000,10000,30000,100000] [--features 160]

Last line: `ratio: <seconds per row at the largest size / seconds per row at the smallest>`
(1.0 = linear; below 1 = fixed costs amortised; above 1 = worse than linear).
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

from benchmarks.train_speed import children_peak_rss_mib, make_csv


def main() -> None:
    """Time each size and print a table, then the per-row cost ratio."""
    from kubetrain.data import load_dataset
    from kubetrain.manifest import write_version_files
    from kubetrain.training.engine import TrainingConfig, default_workers, train_models

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,3000,10000,30000,100000")
    parser.add_argument("--features", type=int, default=160)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    config = TrainingConfig(
        models=["lda", "logreg"], model_params={"logreg": {"max_iter": 200}}, normalize="l2"
    )
    print(
        f"models lda + logreg(max_iter=200), 5 folds, {args.features} features, 26 classes, "
        f"{default_workers()} workers"
    )
    print(
        f"{'rows':>8} {'seconds':>9} {'s/1k rows':>10} {'lda acc':>8} {'logreg acc':>10} "
        f"{'peak MiB (main, workers)':>26}"
    )
    timings = []
    with tempfile.TemporaryDirectory(prefix="kubetrain-scaling-") as tmp:
        for rows in sizes:
            csv_path = make_csv(Path(tmp) / f"d{rows}.csv", 26, max(5, rows // 26), args.features)
            out = Path(tmp) / f"out{rows}"
            started = time.perf_counter()
            dataset = load_dataset(str(csv_path), "# Letter", ["Line"], 5)
            results = train_models(dataset.X, dataset.y, config)
            write_version_files(results, out)
            seconds = time.perf_counter() - started
            timings.append((dataset.rows, seconds))
            main_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            workers = [round(p) for p in children_peak_rss_mib()]
            lda, logreg = results["lda"].mean("accuracy"), results["logreg"].mean("accuracy")
            print(
                f"{dataset.rows:>8} {seconds:>9.1f} {1000 * seconds / dataset.rows:>10.3f} "
                f"{lda:>8.3f} {logreg:>10.3f} {f'{main_peak:.0f}, {workers}':>26}",
                flush=True,
            )
    (small_rows, small_s), (large_rows, large_s) = timings[0], timings[-1]
    print(f"ratio: {(large_s / large_rows) / (small_s / small_rows):.3f}")


if __name__ == "__main__":
    main()
