"""kubetrain/registry/prune.py: retention keeps what is protected and never shows half a version."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from kubetrain.registry import aliases, prune
from kubetrain.store import open_store
from tests.conftest import REPO_ROOT
from tests.registry_helpers import (
    EXP,
    NOW,
    OLD,
    RECENT,
    assert_no_visible_partial_version,
    killed_prune_never_shows_a_partial_version,
    manifest_path,
    plan,
    populate,
    run_prune_and_check,
    version_name,
)


def test_prune_plan_dry_run_and_deletion(tmp_path: Path) -> None:
    run_prune_and_check(str(tmp_path / "store"), tmp_path)


def test_killed_at_every_step_no_reader_sees_a_partial_version(tmp_path: Path) -> None:
    # 9 versions x (manifest, model) + 1 leftover file = 19 removes: every one a kill point.
    killed_prune_never_shows_a_partial_version(
        str(tmp_path / "store"), tmp_path, list(range(1, 20))
    )


def test_sigkilled_prune_process_leaves_only_whole_versions(tmp_path: Path) -> None:
    url = str(tmp_path / "store")
    populate(url, tmp_path)
    script = textwrap.dedent(
        f"""
        import time
        from datetime import datetime
        from kubetrain.registry import prune
        from kubetrain.store import open_store
        with open_store({url!r}) as store:
            real = store.backend.remove
            def slow(path):
                real(path)
                time.sleep(0.2)
            store.backend.remove = slow
            now = datetime.fromisoformat({NOW.isoformat()!r})
            plan = prune.plan_prune(store, {EXP!r}, 2, 7, 24, now)
            prune.execute_prune(store, plan)
        """
    )
    process = subprocess.Popen([sys.executable, "-c", script], cwd=REPO_ROOT)
    try:
        target = tmp_path / "store" / manifest_path(OLD[1])
        deadline = time.monotonic() + 60
        while target.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not target.exists(), "the prune never reached the second version"
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL
    with open_store(url) as store:
        assert OLD[1] not in store.list_versions(EXP)
        assert OLD[-1] in store.list_versions(EXP)  # it was killed early on
        assert_no_visible_partial_version(store, tmp_path / "check")


def test_alias_moved_onto_a_version_during_the_prune_keeps_it(tmp_path: Path) -> None:
    url = str(tmp_path / "store")
    populate(url, tmp_path)
    stale = plan(url)
    victim = stale.delete[0]
    with open_store(url) as store:
        real = store.backend.remove

        def promote_first(path: str) -> None:
            # The alias lands between the pre-check and the manifest's removal.
            if path == manifest_path(victim):
                with open_store(url) as other:
                    aliases.promote(other, EXP, "staging", victim, "y", "race")
            real(path)

        store.backend.remove = promote_first  # type: ignore[method-assign]
        result = prune.execute_prune(store, stale)
        assert "restored" in result.skipped[victim]
        assert victim in store.list_versions(EXP)
        assert_no_visible_partial_version(store, tmp_path)
        assert prune.execute_prune(store, stale).skipped[victim].startswith("a pointer")


def test_bad_retention_settings_are_refused(tmp_path: Path) -> None:
    with open_store(str(tmp_path / "store")) as store:
        with pytest.raises(prune.PruneError, match="keep_last must be at least 1"):
            prune.plan_prune(store, EXP, 0, 7, 24)
        with pytest.raises(prune.PruneError, match=">= 0"):
            prune.plan_prune(store, EXP, 1, -1, 24)


def test_version_time_from_name_or_manifest() -> None:
    assert prune.version_time(version_name(1)) == datetime(2026, 1, 2, tzinfo=UTC)
    created = {"created": "2026-02-01T10:00:00+00:00"}
    assert prune.version_time("custom-name", created) == datetime(2026, 2, 1, 10, tzinfo=UTC)
    assert prune.version_time("custom-name") is None
    assert NOW - prune.version_time(RECENT) == timedelta(days=4)  # type: ignore[operator]
