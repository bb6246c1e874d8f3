"""Fan-out vs local: what one child run per fit costs, and what N nodes would give (a model).

Workload where fits dominate: 26 classes x 80 rows x 64 features, `nn` (hidden_layer_sizes
[128], max_iter 300) and `rf` (300 trees), 3 folds: 8 fits of seconds each. A private Prefect
server on 127.0.0.1, a process pool with the project's `train-local` and `train-fit-local`
deployments (prefect.yaml, only the pool overridden) and one process worker; the store is a
local folder. Both runs go through the worker, reuse_fits off:
  local    train with fits=local: all fits in the run's own process pool (this machine's CPUs)
  fan-out  train with fits=fan-out: every fit its own child run (its own process here)
Per child run: overhead = (submission to final state) - (its fit task's run time); here all
children share 2 CPUs, which inflates it. Modelled wall time with N nodes (one fit at a time per
node): the parent's own work plus the longest-first schedule of (fit time in the local run +
mean overhead) over N nodes; the ideal is the longest fit alone.

    python -m benchmarks.fanout [--rows-per-class 80] [--folds 3]

Last line: `ratio: <fan-out wall time / local wall time on this machine>` (above 1: fan-out is
slower here, as it must be on 2 cores; the model says where it pays off).
"""

from __future__ import annotations

import argparse
import heapq
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import yaml

from benchmarks.train_speed import make_csv

REPO_ROOT = Path(__file__).resolve().parent.parent
FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
NODES = (1, 2, 4, 8, 16)


def _env(extra: dict[str, str]) -> dict[str, str]:
    env = dict(os.environ, PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1")
    env.update(extra)
    return env


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _post(api: str, path: str, body: dict[str, Any]) -> Any:
    resp = httpx.post(f"{api}{path}", json=body, timeout=60)
    resp.raise_for_status()
    return resp.json()


def _seconds(start: str, end: str) -> float:
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def _start_server(home: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    log = (home / "server.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
         "--port", str(port)],
        env=_env({"PREFECT_HOME": str(home)}), stdout=log, stderr=subprocess.STDOUT, cwd=home,
    )  # fmt: skip
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{api}/health", timeout=2).status_code == 200:
                return server, api
        except httpx.HTTPError:
            time.sleep(0.5)
    server.kill()
    raise SystemExit("the Prefect server did not start")


def _deploy(api: str, home: Path, pool: str) -> dict[str, str]:
    _post(api, "/work_pools/", {"name": pool, "type": "process"})
    project = yaml.safe_load((REPO_ROOT / "prefect.yaml").read_text())
    wanted = [d for d in project["deployments"] if d["name"] in ("train-local", "train-fit-local")]
    for spec in wanted:
        spec["work_pool"]["name"] = pool
    document = {k: v for k, v in project.items() if k != "definitions"}
    document["deployments"] = wanted
    (home / "prefect.yaml").write_text(yaml.safe_dump(document))
    subprocess.run(
        [sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--all",
         "--prefect-file", str(home / "prefect.yaml")],
        env=_env({"PREFECT_API_URL": api, "PWD": str(REPO_ROOT)}), cwd=REPO_ROOT, check=True,
        capture_output=True,
    )  # fmt: skip
    found = _post(api, "/deployments/filter", {"work_pools": {"name": {"any_": [pool]}}})
    return {d["name"]: d["id"] for d in found}


def _run(api: str, deployment: str, parameters: dict[str, Any]) -> dict[str, Any]:
    run = _post(api, f"/deployments/{deployment}/create_flow_run", {"parameters": parameters})
    while True:
        time.sleep(0.5)
        run = httpx.get(f"{api}/flow_runs/{run['id']}", timeout=60).json()
        if run["state"]["type"] in FINAL:
            break
    if run["state"]["type"] != "COMPLETED":
        raise SystemExit(f"train ended {run['state']['type']}: {run['state']['message']}")
    return dict(run)


def _tasks(api: str, run_ids: list[str]) -> list[dict[str, Any]]:
    tasks: list[dict[str, Any]] = _post(
        api, "/task_runs/filter", {"flow_runs": {"id": {"any_": run_ids}}, "limit": 200}
    )
    return tasks


def _makespan(durations: list[float], nodes: int) -> float:
    """Longest-first list scheduling over `nodes` machines (each runs one fit at a time)."""
    free = [0.0] * nodes
    for duration in sorted(durations, reverse=True):
        heapq.heappush(free, heapq.heappop(free) + duration)
    return max(free)


def main() -> None:
    """Run the workload both ways through a real worker and print the table and the model."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows-per-class", type=int, default=80)
    parser.add_argument("--folds", type=int, default=3)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="kubetrain-bench-fanout-"))
    server, api = _start_server(home)
    worker: subprocess.Popen[bytes] | None = None
    try:
        pool = f"bench-{uuid.uuid4().hex[:8]}"
        deployments = _deploy(api, home, pool)
        worker = subprocess.Popen(
            [sys.executable, "-m", "prefect", "worker", "start", "--pool", pool, "--type",
             "process"],
            env=_env({"PREFECT_API_URL": api, "PREFECT_WORKER_QUERY_SECONDS": "1"}), cwd=home,
            stdout=(home / "worker.log").open("wb"), stderr=subprocess.STDOUT,
        )  # fmt: skip
        data = make_csv(home / "data.csv", 26, args.rows_per_class, 64, separation=0.5)
        parameters: dict[str, Any] = {
            "data": str(data), "models": ["nn", "rf"], "folds": args.folds,
            "model_params": {"nn": {"hidden_layer_sizes": [128], "max_iter": 300},
                             "rf": {"n_estimators": 300}},
            "destination": str(home / "store"), "experiment": "bench", "reuse_fits": False,
        }  # fmt: skip
        train = deployments["train-local"]
        local = _run(api, train, {**parameters, "fits": "local"})
        fanned = _run(api, train, {**parameters, "fits": "fan-out"})
        local_wall = _seconds(local["start_time"], local["end_time"])
        fan_wall = _seconds(fanned["start_time"], fanned["end_time"])

        parent_tasks = _tasks(api, [fanned["id"]])
        child_ids = [t["id"] for t in parent_tasks]  # children hang off their task runs
        children = _post(
            api, "/flow_runs/filter", {"flow_runs": {"parent_task_run_id": {"any_": child_ids}}}
        )
        fits = {
            t["flow_run_id"]: t["total_run_time"]
            for t in _tasks(api, [c["id"] for c in children])
            if t["name"].startswith("fit-")
        }
        rows = []
        for child in sorted(children, key=lambda c: c["name"]):
            turnaround = _seconds(child["created"], child["end_time"])
            fit = fits[child["id"]]
            rows.append((child["name"], fit, turnaround, turnaround - fit))
        fan_task = next(t for t in parent_tasks if t["name"].startswith("fan-out"))
        parent_own = fan_wall - fan_task["total_run_time"]
        overhead = statistics.mean(r[3] for r in rows)
        # Per-fit times for the model come from the local run: there its fits ran one per CPU,
        # while the children all ran at once on this machine and each got a share of a CPU.
        local_fits = {
            t["name"]: t["total_run_time"]
            for t in _tasks(api, [local["id"]])
            if t["name"].startswith("fit-")
        }
        local_fit_sum = sum(local_fits.values())
    finally:
        if worker is not None:
            worker.terminate()
            worker.wait(timeout=30)
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(home, ignore_errors=True)

    print(f"workload: nn + rf, {args.folds} folds, {26 * args.rows_per_class} rows x 64 features")
    print(f"{'child run':<16} {'local fit s':>11} {'child fit s':>11} {'submit→done s':>14} "
          f"{'overhead s':>11}")  # fmt: skip
    for name, fit, turnaround, extra in rows:
        alone = local_fits.get(name, float("nan"))
        print(f"{name:<16} {alone:>11.2f} {fit:>11.2f} {turnaround:>14.2f} {extra:>11.2f}")
    print(f"local   wall {local_wall:7.1f} s  (fits {local_fit_sum:.1f} s of work, this machine)")
    print(f"fan-out wall {fan_wall:7.1f} s  (parent's own work {parent_own:.1f} s)")
    print(f"per-child overhead (submission to result, less the fit): mean {overhead:.2f} s")
    durations = list(local_fits.values())
    print("model (not measured): wall ≈ parent's own work + longest-first schedule of")
    print("(local fit time + mean overhead) over N nodes, one fit at a time per node")
    print(f"{'nodes':>5} {'modelled s':>11} {'ideal s (longest fit)':>22}")
    for nodes in NODES:
        modelled = parent_own + _makespan([d + overhead for d in durations], nodes)
        print(f"{nodes:>5} {modelled:>11.1f} {max(durations):>22.1f}")
    print(f"ratio: {fan_wall / local_wall:.2f} (fan-out wall time / local wall time, 2 cores)")


if __name__ == "__main__":
    main()
