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
    Killed,
    assert_no_visible_partial_version,
    kill_on_remove,
    make_version,
    manifest_path,
    version_name,
)

NOW = datetime(2026, 3, 1, tzinfo=UTC)  # version_name(59) is 2026-03-01
OLD = [version_name(day) for day in range(0, 10)]  # 50-59 days old
RECENT = version_name(55)  # 4 days old
NEWEST = [version_name(57), version_name(58)]
LEFTOVER_OLD, LEFTOVER_YOUNG = version_name(20), version_name(59, tag=1)


def populate(url: str, workdir: Path) -> None:
    """Ten old versions, a recent one, two newest, an alias on an old one, two leftovers."""
    with open_store(url) as store:
        for version in [*OLD, RECENT, *NEWEST]:
            make_version(store, workdir, version, {"lda": 0.8})
        aliases.promote(store, EXP, "production", OLD[2], "x", "pinned")
        # Leftovers without a manifest: an interrupted publish and one still under way.
        for name in (LEFTOVER_OLD, LEFTOVER_YOUNG):
            store.backend.makedirs(f"{EXP}/{name}")
            store.backend.write_bytes(f"{EXP}/{name}/clf_lda.joblib.part", b"half")


def plan(url: str) -> prune.PrunePlan:
    with open_store(url) as store:
        return prune.plan_prune(store, EXP, keep_last=2, keep_days=7, grace_hours=24, now=NOW)


def check_plan(plan_: prune.PrunePlan) -> None:
    assert sorted(plan_.keep) == sorted([OLD[2], RECENT, *NEWEST])
    assert plan_.keep[OLD[2]] == ["@production"]
    assert "newest 2" in plan_.keep[NEWEST[1]]
    assert "LATEST" in plan_.keep[NEWEST[1]]
    assert plan_.keep[RECENT] == ["younger than 7 days"]
    assert sorted(plan_.delete) == sorted(v for v in OLD if v != OLD[2])
    assert plan_.delete_incomplete == [LEFTOVER_OLD]
    assert list(plan_.keep_incomplete) == [LEFTOVER_YOUNG]


def run_prune_and_check(url: str, workdir: Path) -> None:
    """The plan, a dry run that changes nothing, then the deletion (shared with the SFTP test)."""
    populate(url, workdir)
    first = plan(url)
    check_plan(first)
    text = prune.plan_text(first, None)
    assert "dry run: nothing was deleted" in text
    with open_store(url) as store:
        assert len(store.list_versions(EXP)) == 13
        result = prune.execute_prune(store, first)
        assert sorted(result.deleted) == sorted(first.delete)
        assert result.deleted_incomplete == [LEFTOVER_OLD]
        assert result.skipped == {}
        assert store.list_versions(EXP) == sorted(first.keep)
        remaining = set(store.backend.listdir(EXP))
        assert not remaining & {*first.delete, LEFTOVER_OLD}  # folders gone, not just files
        assert LEFTOVER_YOUNG in remaining
        assert store.latest(EXP) == NEWEST[1]
        assert aliases.read_alias(store, EXP, "production") == OLD[2]
        assert_no_visible_partial_version(store, workdir)
    assert plan(url).delete == []


def killed_prune_never_shows_a_partial_version(url: str, workdir: Path, points: list[int]) -> None:
    """Kill a prune at its n-th remove, for each n in points (a fresh store each time): readers
    only ever see whole versions, and a later prune finishes the job."""
    for after in points:
        store_url = f"{url}/kill-{after}"
        populate(store_url, workdir / f"src-{after}")
        with open_store(store_url) as store:
            kill_on_remove(store, after)
            with pytest.raises(Killed):
                prune.execute_prune(store, plan(store_url))
        with open_store(store_url) as store:
            assert_no_visible_partial_version(store, workdir / f"check-{after}")
            prune.execute_prune(store, plan(store_url))
            assert store.list_versions(EXP) == sorted([OLD[2], RECENT, *NEWEST])
            assert plan(store_url).delete_incomplete == []


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
