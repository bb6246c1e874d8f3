"""Batch prediction on a large CSV: kubetrain's chunked predict vs a plain pandas + joblib script.

Generates a CSV of at least --megabytes (default 1100 MB: the original's layout, 64 features),
publishes an `lda` version to a local store, then runs, each in its own process, one after the
other on the same file:
  plain      pd.read_csv(whole file) -> l2 rows -> model.predict -> DataFrame.to_csv
  kubetrain  kubetrain.inference.load_version + predict_csv (verified load, 20k-row chunks)
and prints rows per second and peak RSS of each process.

    python -m benchmarks.predict_stream [--megabytes 1100] [--features 64]

Last line: `ratio: <kubetrain peak RSS / plain peak RSS>` (below 1: bounded memory wins).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PLAIN = """
import sys, joblib, pandas as pd
from sklearn.preprocessing import normalize
model = joblib.load(sys.argv[1])
frame = pd.read_csv(sys.argv[2])
X = normalize(frame.drop(columns=["Line", "# Letter"]).to_numpy(float), norm="l2")
out = pd.DataFrame({"# Letter": frame["# Letter"], "pred_lda": model.predict(X)})
out.to_csv(sys.argv[3], index_label="row")
"""

OURS = """
import sys
from pathlib import Path
from kubetrain.inference import load_version, predict_csv
loaded = load_version(sys.argv[1], "bench", None, Path(sys.argv[4]))
run = predict_csv(loaded, Path(sys.argv[2]), "bench.csv", Path(sys.argv[3]))
print(run.rows, run.accuracy)
"""


def _write_big_csv(path: Path, megabytes: int, features: int) -> int:
    """Repeat one generated block until the file is large enough; return the row count."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    block_rows = 10_000
    frame = pd.DataFrame(
        rng.random((block_rows, features)), columns=[f" f{i}" for i in range(features)]
    )
    frame.insert(0, "# Letter", rng.integers(1, 27, block_rows))
    frame.insert(0, "Line", np.arange(block_rows))
    header, _, body = frame.to_csv(index=False, float_format="%.6f").partition("\n")
    data = body.encode()
    rows = 0
    with path.open("wb") as out:
        out.write(header.encode() + b"\n")
        while out.tell() < megabytes * 2**20:
            out.write(data)
            rows += block_rows
    return rows


def _publish_model(store: Path, features: int) -> Path:
    """Train lda on a small sample in the big file's layout; publish it; return its file."""
    import numpy as np
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
    from sklearn.preprocessing import normalize

    from kubetrain.manifest import build_manifest, new_version, write_version_files
    from kubetrain.store import open_store
    from kubetrain.training.engine import ModelResult

    rng = np.random.default_rng(1)
    X = normalize(rng.random((2600, features)), norm="l2")
    y = np.repeat(np.arange(1, 27), 100)
    result = ModelResult("lda", LinearDiscriminantAnalysis().fit(X, y), {}, {"accuracy": [0.0]})
    files = write_version_files({"lda": result}, store.parent / "build")
    version = new_version()
    columns = ["Line", "# Letter", *[f" f{i}" for i in range(features)]]
    manifest = build_manifest(
        version=version,
        flow_run_id=None,
        data={
            "source": "bench",
            "sha256": "0" * 64,
            "rows": 2600,
            "columns": columns,
            "target": "# Letter",
        },
        parameters={"drop_columns": ["Line"], "normalize": "l2"},
        results={"lda": result},
        files=files,
    )
    with open_store(str(store)) as opened:
        opened.publish("bench", version, files, manifest)
    return store / "bench" / version / "clf_lda.joblib"


def _run(code: str, *args: str) -> tuple[float, float]:
    """(seconds, peak RSS MiB) of `python -c code args` as its own process."""
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-c", code, *args], env=dict(os.environ))
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"benchmark process failed: {args}")
    return seconds, usage.ru_maxrss / 1024


def main() -> None:
    """Generate, publish, run both, print the table and the memory ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=int, default=1100)
    parser.add_argument("--features", type=int, default=64)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kubetrain-predict-bench-") as tmp:
        root = Path(tmp)
        csv_path = root / "big.csv"
        rows = _write_big_csv(csv_path, args.megabytes, args.features)
        size_mb = csv_path.stat().st_size / 2**20
        model = _publish_model(root / "store", args.features)
        print(f"{size_mb:.0f} MiB CSV, {rows} rows, {args.features} features, model lda")
        plain_s, plain_rss = _run(PLAIN, str(model), str(csv_path), str(root / "plain.csv"))
        ours_s, ours_rss = _run(
            OURS, str(root / "store"), str(csv_path), str(root / "ours.csv"), str(root / "fetch")
        )
        print(f"{'':10} {'seconds':>9} {'rows/s':>10} {'peak RSS MiB':>13}")
        print(f"{'plain':10} {plain_s:>9.1f} {rows / plain_s:>10.0f} {plain_rss:>13.0f}")
        print(f"{'kubetrain':10} {ours_s:>9.1f} {rows / ours_s:>10.0f} {ours_rss:>13.0f}")
        print(f"throughput ratio (kubetrain / plain rows per second): {plain_s / ours_s:.3f}")
        print(f"ratio: {ours_rss / plain_rss:.3f}")


if __name__ == "__main__":
    main()
