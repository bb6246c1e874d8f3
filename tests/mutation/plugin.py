"""pytest plugin for mutation runs only (loaded by [tool.mutmut] pytest_add_cli_args).

mutmut runs, for every mutant, the tests that executed the mutated function; a surviving mutant
costs the sum of their run times and a killed one the time until the first failure (`-x`). So:

- Tests that start a Prefect API server (`prefect_server` fixture) are left out: each forked
  mutant run would start its own server (10-20 s). The flows they drive are not in the mutation
  scope; the store, data and training code they pass through is covered by the fast unit tests.
- A few slow tests are left out (SLOW, each with the reason); faster tests cover their code.
- Modules the code under test imports lazily (scikit-learn estimators, pandas, the Prefect
  Kubernetes worker...) are imported once here, in mutmut's fork server, instead of in every
  forked mutant run (scikit-learn's estimators alone take several seconds to import).
- Order: first the tests of the mutated module's own test files (RELATED; they assert its
  behaviour most directly), then the others, tests known from mutmut's stats to be slow last; a
  killed mutant then usually dies in its first, fast test.

- loky's worker processes are stopped when each mutant's test session ends: mutmut's forked runs
  end without interpreter exit handlers, so loky's own shutdown never ran and every mutant of
  the training code left two idle workers (170 MB each, idling for 5 minutes): hundreds of them,
  the machine's memory and minutes of the run.

Nothing here changes what a test asserts; the normal suite (`make test`) runs all of them.
"""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path

import pytest

SLOW_SECONDS = 0.5

PRELOAD = (
    "sklearn.base",
    "sklearn.discriminant_analysis",
    "sklearn.ensemble",
    "sklearn.exceptions",
    "sklearn.linear_model",
    "sklearn.metrics",
    "sklearn.model_selection",
    "sklearn.neighbors",
    "sklearn.neural_network",
    "sklearn.pipeline",
    "sklearn.preprocessing",
    "sklearn.svm",
    "joblib",
    "joblib.externals.loky",
    "pandas",
    "httpx",
    "paramiko",
    "prefect.logging",
    "prefect.blocks.system",
    "prefect_kubernetes.worker",
    "kubetrain.store.sftp",
    "kubetrain.registry.signing",
)

_PRUNE = "tests/unit/test_registry_prune.py::"
# node id -> why it is left out of mutation runs (the normal suite still runs it).
SLOW = {
    "tests/unit/test_data_limits.py::test_duplicate_column_check_is_linear": (
        "a timing test (seconds per run; its verdict depends on the machine's load, not on a "
        "mutant); the duplicate-column messages are asserted by test_data.py"
    ),
    _PRUNE + "test_killed_at_every_step_no_reader_sees_a_partial_version": (
        "kills a prune subprocess at every step (about 10 s); the registry is not in the scope "
        "and the store's reading rules have their own tests in test_store_*.py"
    ),
    "tests/unit/test_cluster_inventory.py::"
    "test_cli_rejects_bad_inventories_before_any_ssh_connection": (
        "the cluster CLI (not in the scope) through Prefect's ephemeral server: 20-45 s of the "
        "stats run, it reaches no mutated function, and its server outlived the run"
    ),
    _PRUNE + "test_sigkilled_prune_process_leaves_only_whole_versions": (
        "a subprocess SIGKILL test of the registry, not of the scoped modules"
    ),
    "tests/unit/test_training.py::test_parallel_scores_equal_sequential_cross_val_score": (
        "three seconds of loky fits; test_one_worker_and_two_workers_agree and "
        "test_out_of_fold_predictions_equal_cross_val_predict check the same engine paths"
    ),
}


# mutated module (prefix of mutmut's MUTANT_UNDER_TEST) -> its own test files' name prefixes.
RELATED = {
    "kubetrain.store.": ("tests/unit/test_store",),
    "kubetrain.data.": ("tests/unit/test_data",),
    "kubetrain.inference.": ("tests/unit/test_inference",),
    "kubetrain.ssh.": ("tests/unit/test_ssh", "tests/integration/test_ssh"),
    "kubetrain.training.engine.": ("tests/unit/test_training", "tests/unit/test_engine"),
    "kubetrain.k8s.": ("tests/unit/test_job_", "tests/unit/test_k8s"),
}


def _related(mutant: str) -> tuple[str, ...]:
    return next((files for module, files in RELATED.items() if mutant.startswith(module)), ())


def _durations(rootdir: Path) -> dict[str, float]:
    try:
        stats = json.loads((rootdir / "mutmut-stats.json").read_text())
    except (OSError, ValueError):
        return {}  # the stats run itself, or no mutmut run yet
    return {str(k): float(v) for k, v in stats.get("duration_by_test", {}).items()}


def pytest_configure(config: pytest.Config) -> None:
    for name in PRELOAD:
        importlib.import_module(name)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    left_out = [
        i for i in items if "prefect_server" in getattr(i, "fixturenames", ()) or i.nodeid in SLOW
    ]
    if left_out:
        config.hook.pytest_deselected(items=left_out)
        items[:] = [i for i in items if i not in left_out]
    durations = _durations(Path(config.rootpath))
    related = _related(os.environ.get("MUTANT_UNDER_TEST", ""))
    # A stable sort keeps each file's tests together otherwise (module-scoped fixtures).
    items.sort(
        key=lambda item: (
            durations.get(item.nodeid, 0.0) >= SLOW_SECONDS,
            not item.nodeid.startswith(related) if related else False,
        )
    )


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    from joblib.externals.loky import reusable_executor

    executor = reusable_executor._executor  # None unless this run started workers
    if executor is not None:
        executor.shutdown(wait=True, kill_workers=True)
