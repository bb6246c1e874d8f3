"""Fan-out (README "Scaling out") through a real Prefect process worker and a real OpenSSH store.

A Prefect server on 127.0.0.1, a process work pool of our own, the project's `train-local` and
`train-fit-local` deployments from prefect.yaml with only the pool overridden (and train-local's
one-at-a-time limit lifted for the ten-runs test), and `prefect worker start --type process`: a
train run and its train-fit children are real flow runs in real processes, publishing to the
session's sshd. Tiny data (300 rows, 2 folds) keeps each run to seconds.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubetrain.store import LATEST, ArtifactStore, LocalBackend
from kubetrain.training.handoff import CACHE_DIR, STAGING_DIR
from tests.kube_helpers import REPO_ROOT, _child_env, load_prefect_yaml, wait_for_state
from tests.prefect_api import api_get, api_post
from tests.sshd import Sshd
from tests.train_helpers import write_original_layout_csv

FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
RUN_TIMEOUT = 240.0
MODELS = ["lda", "knn"]
FOLDS = 2


class Worker:
    """A process pool with train-local/train-fit-local deployed on it and a worker serving it."""

    def __init__(self, api: str, deployments: dict[str, str], log: Path) -> None:
        self.api = api
        self.deployments = deployments
        self.log = log

    def start(self, parameters: dict[str, Any]) -> str:
        """Create a train-local run with these parameters; its id."""
        deployment = self.deployments["train-local"]
        run = api_post(
            self.api, f"/deployments/{deployment}/create_flow_run", {"parameters": parameters}
        )
        return str(run["id"])

    def finish(self, run_id: str, expect: str = "COMPLETED") -> dict[str, Any]:
        """Wait for the run's final state; fail with the worker's log unless it is `expect`."""
        state = wait_for_state(self.api, run_id, FINAL, timeout=RUN_TIMEOUT)
        assert state["type"] == expect, f"{state}\n{self.log.read_text()[-6000:]}"
        return state

    def children(self, run_id: str) -> list[dict[str, Any]]:
        """The subflow runs of a run (through their parent task runs)."""
        tasks = api_post(self.api, "/task_runs/filter", {"flow_runs": {"id": {"any_": [run_id]}}})
        ids = [t["id"] for t in tasks]
        if not ids:
            return []
        body = {"flow_runs": {"parent_task_run_id": {"any_": ids}}}
        runs: list[dict[str, Any]] = api_post(self.api, "/flow_runs/filter", body)
        return runs


@pytest.fixture(scope="module")
def worker(
    prefect_server: Any, sshd: Sshd, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Worker]:
    api = prefect_server.api_url
    workdir = tmp_path_factory.mktemp("fanout-worker")
    pool = f"kt-fanout-{uuid.uuid4().hex[:8]}"
    api_post(api, "/work_pools/", {"name": pool, "type": "process"})
    project = load_prefect_yaml()
    wanted = [d for d in project["deployments"] if d["name"] in ("train-local", "train-fit-local")]
    for spec in wanted:
        spec["work_pool"]["name"] = pool
        if spec["name"] == "train-local":
            spec["concurrency_limit"]["limit"] = 10  # ten runs at once in one test
    document = {k: v for k, v in project.items() if k != "definitions"}
    document["deployments"] = wanted
    prefect_file = workdir / "prefect.yaml"
    prefect_file.write_text(yaml.safe_dump(document))
    # `prefect deploy` fills in {{ $PWD }}: the checkout, where the runs' pull step moves.
    deploy = subprocess.run(
        [sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--all",
         "--prefect-file", str(prefect_file)],
        env=_child_env({"PREFECT_API_URL": api, "PWD": str(REPO_ROOT)}),
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert deploy.returncode == 0, deploy.stdout[-3000:] + deploy.stderr[-3000:]
    found = api_post(api, "/deployments/filter", {"work_pools": {"name": {"any_": [pool]}}})
    deployments = {d["name"]: d["id"] for d in found}
    assert set(deployments) == {"train-local", "train-fit-local"}, deployments

    log = workdir / "worker.log"
    env = _child_env(
        {
            "PREFECT_API_URL": api,
            "PREFECT_WORKER_QUERY_SECONDS": "1",
            "KUBETRAIN_SSH_KEY": str(sshd.client_key),
            "KUBETRAIN_KNOWN_HOSTS": str(sshd.known_hosts),
            "KUBETRAIN_TRAIN_WORKERS": "2",  # local runs fit through the pool, as on 2 CPUs
        }
    )
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "prefect", "worker", "start", "--pool", pool,
             "--type", "process", "--name", f"{pool}-worker",
             # At most 5 runs at once: ten at once on 2 cores overload the SQLite-backed server.
             "--limit", "5"],
            env=env, cwd=workdir, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        yield Worker(api, deployments, log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@pytest.fixture(scope="module")
def data_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("fanout-data") / "letters.csv"
    return write_original_layout_csv(path, classes=10, per_class=30, separation=0.8)


@pytest.fixture
def store_dir(sshd: Sshd) -> Iterator[Path]:
    """A fresh store root in the sshd user's home (read back directly from disk)."""
    path = sshd.home / f"kt-fanout-{uuid.uuid4().hex[:10]}"
    try:
        yield path
    finally:
        subprocess.run(["rm", "-rf", str(path)], check=False)


def _versions(root: Path, experiment: str) -> list[str]:
    return ArtifactStore(LocalBackend(root)).list_versions(experiment)


def _staged(root: Path, experiment: str) -> list[str]:
    staging = root / experiment / STAGING_DIR
    return sorted(os.listdir(staging)) if staging.exists() else []


def _fit_names(models: list[str], folds: int) -> list[str]:
    names = [f"fit-{m}-final" for m in models]
    return sorted(names + [f"fit-{m}-fold-{k}" for m in models for k in range(1, folds + 1)])


def _version_files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.name != "manifest.json"}


@pytest.fixture(scope="module")
def fanned_out(worker: Worker, data_csv: Path, sshd: Sshd) -> Iterator[dict[str, Any]]:
    """One fan-out train run (lda, knn; 2 folds) on the sshd store: its id and parameters."""
    root = sshd.home / f"kt-fanout-{uuid.uuid4().hex[:10]}"
    parameters = {
        "data": str(data_csv), "models": MODELS, "folds": FOLDS,
        "destination": sshd.url(root), "experiment": "fan", "fits": "fan-out",
        "fit_resources": {"knn": {"cpu_limit": "2", "memory_limit": "512Mi"}},
    }  # fmt: skip
    run_id = worker.start(parameters)
    state = wait_for_state(worker.api, run_id, FINAL, timeout=RUN_TIMEOUT)
    try:
        yield {"root": root, "run_id": run_id, "state": state, "parameters": parameters}
    finally:
        subprocess.run(["rm", "-rf", str(root)], check=False)


def test_fan_out_runs_one_child_per_fit_and_publishes_what_a_local_run_publishes(
    worker: Worker,
    fanned_out: dict[str, Any],
    data_csv: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert fanned_out["state"]["type"] == "COMPLETED", worker.log.read_text()[-6000:]
    children = worker.children(fanned_out["run_id"])
    assert sorted(c["name"] for c in children) == _fit_names(MODELS, FOLDS)
    assert {c["state"]["type"] for c in children} == {"COMPLETED"}
    for child in children:  # per-model resources became the knn children's job variables
        variables = child["job_variables"] or {}
        assert (variables.get("memory_limit") == "512Mi") == ("-knn-" in child["name"]), child
        assert child["parameters"]["model"] in child["name"]
    root = fanned_out["root"]
    (version,) = _versions(root, "fan")
    assert (root / "fan" / LATEST).read_text().strip() == version
    assert not (root / "fan" / STAGING_DIR).exists()  # cleaned, and no version either way

    # The same parameters trained here, over this process's own worker pool.
    from flows.train import train

    monkeypatch.setenv("KUBETRAIN_TRAIN_WORKERS", "2")
    local = train(
        data=str(data_csv), models=MODELS, folds=FOLDS, destination=str(tmp_path),
        experiment="fan", reuse_fits=False,
    )  # fmt: skip
    assert not (tmp_path / "fan" / CACHE_DIR).exists()  # reuse_fits=False keeps nothing
    ours = _version_files(root / "fan" / version)
    theirs = _version_files(Path(local.location.removeprefix("file://")))
    assert set(ours) == set(theirs)
    assert {"clf_lda.joblib", "clf_knn.joblib", "cv_results.csv"} <= set(ours)
    for name in sorted(theirs):
        if name.endswith((".joblib", ".csv")):
            assert ours[name] == theirs[name], name
    manifest = json.loads((root / "fan" / version / "manifest.json").read_text())
    for model in MODELS:
        assert manifest["models"][model]["cv"] == local.manifest["models"][model]["cv"]


def test_a_rerun_reuses_every_finished_fit_and_starts_no_child(
    worker: Worker, fanned_out: dict[str, Any]
) -> None:
    assert fanned_out["state"]["type"] == "COMPLETED", fanned_out["state"]
    second = worker.start(fanned_out["parameters"])
    worker.finish(second)
    assert worker.children(second) == []
    logs = api_post(worker.api, "/logs/filter", {"logs": {"flow_run_id": {"any_": [second]}}})
    reused = sorted(e["message"] for e in logs if e["message"].startswith("reused "))
    expected = [f"reused {m} final fit from the fit cache" for m in MODELS]
    expected += [f"reused {m} fold {k} from the fit cache" for m in MODELS for k in (1, 2)]
    assert reused == sorted(expected)
    root = fanned_out["root"]
    first_version, second_version = _versions(root, "fan")
    for name in ("cv_results.csv", "clf_lda.joblib", "clf_knn.joblib"):
        a = (root / "fan" / first_version / name).read_bytes()
        assert a == (root / "fan" / second_version / name).read_bytes(), name
    assert (root / "fan" / CACHE_DIR).is_dir()


def test_a_model_that_raises_fails_the_parent_and_publishes_nothing(
    worker: Worker, data_csv: Path, sshd: Sshd, store_dir: Path
) -> None:
    # Valid for scikit-learn's parameter check, impossible for 10 classes: lda's fit raises.
    run_id = worker.start(
        {
            "data": str(data_csv), "models": ["lda"], "model_params": {"lda": {"n_components": 50}},
            "folds": FOLDS, "destination": sshd.url(store_dir), "experiment": "broken",
            "fits": "fan-out",
        }
    )  # fmt: skip
    state = worker.finish(run_id, expect="FAILED")
    assert "child run fit-lda-" in state["message"], state
    assert "n_components" in state["message"], state
    assert _versions(store_dir, "broken") == []
    assert ArtifactStore(LocalBackend(store_dir)).latest("broken") is None
    assert _staged(store_dir, "broken") == []
    states = [c["state"]["type"] for c in worker.children(run_id)]
    assert "FAILED" in states
    assert set(states) <= FINAL | {"CANCELLING"}, states  # the rest cancelled


def _start_slow_fan_out(worker: Worker, data_csv: Path, destination: str, experiment: str) -> str:
    """A fan-out run of a larger nn, whose fits last long enough to be caught mid-fit."""
    return worker.start(
        {
            "data": str(data_csv), "models": ["nn"],
            "model_params": {"nn": {"hidden_layer_sizes": [256], "max_iter": 400}},
            "folds": FOLDS, "destination": destination, "experiment": experiment,
            "fits": "fan-out", "reuse_fits": False,
        }
    )  # fmt: skip


def test_a_child_killed_mid_fit_is_replaced_and_the_run_completes(
    worker: Worker, data_csv: Path, sshd: Sshd, store_dir: Path
) -> None:
    run_id = _start_slow_fan_out(worker, data_csv, sshd.url(store_dir), "kill")
    victim = _kill_a_child_mid_fit(worker, run_id)
    worker.finish(run_id)
    runs = worker.children(run_id)
    completed = sorted(c["name"] for c in runs if c["state"]["type"] == "COMPLETED")
    assert completed == _fit_names(["nn"], FOLDS)  # every fit once
    killed = next(c for c in runs if c["id"] == victim["id"])
    assert killed["state"]["type"] == "CRASHED"  # and a new run of the same fit replaced it
    assert len([c for c in runs if c["name"] == victim["name"]]) == 2
    assert len(_versions(store_dir, "kill")) == 1
    assert _staged(store_dir, "kill") == []


def _kill_a_child_mid_fit(worker: Worker, run_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + RUN_TIMEOUT
    while time.monotonic() < deadline:
        children = worker.children(run_id)
        if children:
            running = api_post(
                worker.api,
                "/task_runs/filter",
                {
                    "flow_runs": {"id": {"any_": [c["id"] for c in children]}},
                    "task_runs": {
                        "state": {"type": {"any_": ["RUNNING"]}},
                        "name": {"like_": "fit-"},
                    },
                },
            )
            for task_run in running:
                victim = api_get(worker.api, f"/flow_runs/{task_run['flow_run_id']}")
                # Task-run states reach the API through events, seconds late under load: the fit
                # may be over and the process gone (or a zombie, which ignores the signal). Only a
                # child the API still has RUNNING, whose process is alive, is killed mid-fit.
                if victim["state"]["type"] != "RUNNING" or not victim["infrastructure_pid"]:
                    continue
                pid = int(str(victim["infrastructure_pid"]).rsplit(":", 1)[-1])
                if _alive(pid):
                    os.kill(pid, signal.SIGKILL)
                    return dict(victim)
        time.sleep(0.2)
    raise AssertionError(f"no child was seen fitting\n{worker.log.read_text()[-3000:]}")


def _alive(pid: int) -> bool:
    """Whether the process runs (not gone, not a zombie waiting to be reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_ten_local_runs_at_once_publish_ten_versions_and_latest_names_the_newest(
    worker: Worker, data_csv: Path, sshd: Sshd, store_dir: Path
) -> None:
    parameters = {
        "data": str(data_csv), "models": ["lda"], "folds": FOLDS,
        "destination": sshd.url(store_dir), "experiment": "crowd",
    }  # fmt: skip
    run_ids = [worker.start(parameters) for _ in range(10)]  # all queued at once
    for run_id in run_ids:
        worker.finish(run_id)
    versions = _versions(store_dir, "crowd")
    assert len(versions) == 10
    owners = {
        json.loads((store_dir / "crowd" / v / "manifest.json").read_text())["flow_run_id"]
        for v in versions
    }
    assert owners == set(run_ids)
    assert (store_dir / "crowd" / LATEST).read_text().strip() == max(versions)


def test_local_mode_reuses_the_cache_but_refits_a_tampered_entry(
    prefect_server: Any, data_csv: Path, tmp_path: Path
) -> None:
    from flows.train import train

    options: dict[str, Any] = {
        "data": str(data_csv), "models": ["lda"], "folds": FOLDS,
        "destination": str(tmp_path), "experiment": "cached",
    }  # fmt: skip
    first = train(**options)
    entries = sorted((tmp_path / "cached" / CACHE_DIR).iterdir())
    assert len(entries) == 1 + FOLDS
    final = next(e for e in entries if json.loads((e / "record.json").read_text())["fold"] is None)
    (payload,) = final.glob("*.joblib")
    payload.write_bytes(payload.read_bytes() + b"\0")  # no longer what its record says
    second = train(**options)
    files = [_version_files(Path(o.location.removeprefix("file://"))) for o in (first, second)]
    assert files[0] == files[1]
    artifacts = api_post(
        prefect_server.api_url,
        "/artifacts/filter",
        {"artifacts": {"flow_run_id": {"any_": [second.manifest["flow_run_id"]]}}},
    )
    (progress,) = [a for a in artifacts if a["type"] == "progress"]
    # The final fit's payload failed its check: fitted again, not loaded.
    assert progress["description"].endswith("; 2 reused from the fit cache: lda fold 1, lda fold 2")


def test_cancelling_the_parent_cancels_its_children_and_publishes_nothing(
    worker: Worker, data_csv: Path, sshd: Sshd, store_dir: Path
) -> None:
    run_id = _start_slow_fan_out(worker, data_csv, sshd.url(store_dir), "stopped")
    deadline = time.monotonic() + RUN_TIMEOUT
    while not any(c["state"]["type"] == "RUNNING" for c in worker.children(run_id)):
        assert time.monotonic() < deadline, worker.log.read_text()[-3000:]
        time.sleep(0.2)
    # What the UI's Cancel button does: the parent goes to Cancelling, its worker stops it.
    api_post(
        worker.api,
        f"/flow_runs/{run_id}/set_state",
        {"state": {"type": "CANCELLING", "name": "Cancelling"}, "force": True},
    )
    worker.finish(run_id, expect="CANCELLED")
    deadline = time.monotonic() + 120
    while True:
        children = worker.children(run_id)
        states = {c["name"]: c["state"]["type"] for c in children}
        if set(states.values()) <= FINAL or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    detail = json.dumps(
        [(c["name"], c["state"]["type"], c["state"]["message"], c["start_time"]) for c in children]
    )
    assert set(states.values()) <= FINAL, f"{detail}\n{worker.log.read_text()[-6000:]}"
    assert "CANCELLED" in set(states.values()), detail
    assert _versions(store_dir, "stopped") == []
    assert ArtifactStore(LocalBackend(store_dir)).latest("stopped") is None
