"""kubetrain/registry/prune.py: retention keeps what is protected and never shows half a version."""

from __future__ import annotations

import hashlib
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
from kubetrain.store import ArtifactStore, LocalBackend, open_store
from kubetrain.training.handoff import (
    CACHE_DIR,
    RECORD,
    STAGING_DIR,
    Entry,
    read_outcome,
    write_outcome,
)
from tests.conftest import REPO_ROOT
from tests.registry_helpers import (
    CACHE_BROKEN,
    CACHE_LEGACY,
    CACHE_OLD,
    CACHE_WRITING,
    CACHE_YOUNG,
    EXP,
    NOW,
    OLD,
    OUTCOME,
    RECENT,
    STAGED_YOUNG,
    T0,
    Killed,
    assert_no_visible_partial_version,
    cache_row,
    kill_on_remove,
    killed_prune_never_shows_a_partial_version,
    manifest_path,
    plan,
    plan_at_t0,
    populate,
    populate_cache_and_staging,
    run_cache_prune_and_check,
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


# -- the fit cache and fan-out staging left in the experiment folder -----------------------


def test_prune_deletes_old_cache_entries_and_abandoned_staging_and_says_why(
    tmp_path: Path,
) -> None:
    run_cache_prune_and_check(str(tmp_path), tmp_path)


def test_a_huge_cache_prints_one_line_per_reason_unless_listed(tmp_path: Path) -> None:
    store = ArtifactStore(LocalBackend(tmp_path))
    for number in range(300):
        key = hashlib.sha256(str(number).encode()).hexdigest()
        written = (T0 - timedelta(days=40 if number % 3 else 1)).isoformat()
        write_outcome(store, Entry.cached(EXP, key), OUTCOME, key=key, written=written)
    planned = plan_at_t0(str(tmp_path))
    text = prune.plan_text(planned, None)
    assert len(text.splitlines()) < 20
    assert "fit cache: delete 200 entries, keep 100" in text
    summary = {row["action"]: row for row in planned.rows() if row["version"].startswith(".fit")}
    assert summary["DELETE"]["version"] == ".fit-cache (200 entries)"
    assert summary["keep"]["version"] == ".fit-cache (100 entries)"
    assert "list_cache" in text  # says how to see them all
    listed = prune.plan_text(planned, None, list_cache=True)
    assert all(cache_row(hashlib.sha256(str(n).encode()).hexdigest()) in listed for n in range(300))


def test_killed_at_every_step_no_cache_or_staging_entry_is_half_there(tmp_path: Path) -> None:
    # 3 cache entries and 2 staged fits, record (even a missing one) then payload, and a stray
    # staged file: 11 removes.
    for after in range(1, 12):
        root = tmp_path / f"kill-{after}"
        populate_cache_and_staging(str(root), root)
        store = ArtifactStore(LocalBackend(root))
        kill_on_remove(store, after)
        with pytest.raises(Killed):
            prune.execute_prune(store, plan_at_t0(str(root)))
        store = ArtifactStore(LocalBackend(root))
        for record in root.rglob(RECORD):
            key_or_fit = record.parent.name
            fold = int(key_or_fit[-1]) - 1 if key_or_fit.startswith("fit-") else 0
            # Every entry still holding a record is whole (read_outcome checks the sha256).
            if record.parent.name != CACHE_BROKEN:
                entry = Entry(str(record.parent.relative_to(root)))
                assert read_outcome(store, entry, "lda", fold) is not None, (after, record)
        prune.execute_prune(store, plan_at_t0(str(root)))
        cache = root / EXP / CACHE_DIR
        assert sorted(p.name for p in cache.iterdir()) == sorted(
            [CACHE_YOUNG, CACHE_LEGACY, CACHE_WRITING]
        ), after
        assert [p.name for p in (root / EXP / STAGING_DIR).iterdir()] == [STAGED_YOUNG], after


def test_a_cache_entry_written_again_after_the_plan_is_kept(tmp_path: Path) -> None:
    populate_cache_and_staging(str(tmp_path), tmp_path)
    planned = plan_at_t0(str(tmp_path))
    store = ArtifactStore(LocalBackend(tmp_path))
    # A run fitted it again meanwhile (its old copy had been unreadable, say).
    write_outcome(store, Entry.cached(EXP, CACHE_OLD), OUTCOME, written=T0.isoformat())
    result = prune.execute_prune(store, planned)
    assert "written within 30 days" in result.skipped[f".fit-cache/{CACHE_OLD}"]
    assert read_outcome(store, Entry.cached(EXP, CACHE_OLD), "lda", 0) is not None
