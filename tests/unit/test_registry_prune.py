"""kubetrain/registry/prune.py: retention keeps what is protected and never shows half a version."""

from __future__ import annotations

import dataclasses
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
from kubetrain.training.engine import FitOutcome
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
    EXP,
    NOW,
    OLD,
    RECENT,
    Killed,
    assert_no_visible_partial_version,
    kill_on_remove,
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


# -- the fit cache and fan-out staging left in the experiment folder -----------------------

T0 = datetime.now(UTC).replace(microsecond=0) + timedelta(
    days=2
)  # files written now are 2 days old
CACHE_OLD, CACHE_YOUNG, CACHE_LEGACY = "a" * 64, "b" * 64, "c" * 64
CACHE_BROKEN, CACHE_ORPHAN, CACHE_WRITING = "d" * 64, "e" * 64, "f" * 64
STAGED_OLD = f"{T0 - timedelta(days=3):%Y%m%dT%H%M%SZ}-0000dead"
STAGED_YOUNG = f"{T0 - timedelta(hours=1):%Y%m%dT%H%M%SZ}-00000001"
OUTCOME = FitOutcome("lda", 0, 0.5, scores={"accuracy": 0.9})


def _cache(name: str) -> str:
    return f".fit-cache/{name[:12]}…"


def populate_cache_and_staging(root: Path) -> None:
    """Cache entries of every kind, an abandoned staging area and a running parent's."""
    store = ArtifactStore(LocalBackend(root))
    stamp = {
        CACHE_OLD: (T0 - timedelta(days=40)).isoformat(),
        CACHE_YOUNG: (T0 - timedelta(days=1)).isoformat(),
    }
    for key, written in stamp.items():
        write_outcome(store, Entry.cached(EXP, key), OUTCOME, key=key, written=written)
    write_outcome(store, Entry.cached(EXP, CACHE_LEGACY), OUTCOME, key=CACHE_LEGACY)
    write_outcome(store, Entry.cached(EXP, CACHE_BROKEN), OUTCOME, key=CACHE_BROKEN)
    (root / EXP / CACHE_DIR / CACHE_BROKEN / RECORD).write_text("{")
    # A write killed before its record, and one under way right now (files touched an hour ago).
    for key in (CACHE_ORPHAN, CACHE_WRITING):
        folder = root / EXP / CACHE_DIR / key
        folder.mkdir(parents=True)
        (folder / f"{'0' * 64}.joblib.1a2b3c4d.part").write_bytes(b"half")
    writing = root / EXP / CACHE_DIR / CACHE_WRITING
    recent = (T0 - timedelta(hours=1)).timestamp()
    for path in (writing, *writing.iterdir()):
        os.utime(path, (recent, recent))
    for version in (STAGED_OLD, STAGED_YOUNG):
        for fold in (0, 1):
            staged = dataclasses.replace(OUTCOME, fold=fold)
            write_outcome(store, Entry.staged(EXP, version, "lda", fold), staged)


def plan_at_t0(root: Path) -> prune.PrunePlan:
    store = ArtifactStore(LocalBackend(root))
    return prune.plan_prune(store, EXP, keep_last=1, keep_days=30, grace_hours=24, now=T0)


def test_prune_deletes_old_cache_entries_and_abandoned_staging_and_says_why(
    tmp_path: Path,
) -> None:
    populate_cache_and_staging(tmp_path)
    planned = plan_at_t0(tmp_path)
    rows = {row["version"]: row for row in planned.rows(list_cache=True)}
    assert rows[_cache(CACHE_OLD)]["action"] == "DELETE"
    assert "written more than 30 days ago" in rows[_cache(CACHE_OLD)]["why"]
    assert rows[_cache(CACHE_YOUNG)]["action"] == "keep"
    assert "written within 30 days" in rows[_cache(CACHE_YOUNG)]["why"]
    assert rows[_cache(CACHE_LEGACY)]["action"] == "keep"
    assert "age unknown" in rows[_cache(CACHE_LEGACY)]["why"]
    assert rows[_cache(CACHE_BROKEN)]["action"] == "DELETE"
    assert "not a fit record" in rows[_cache(CACHE_BROKEN)]["why"]
    assert rows[_cache(CACHE_ORPHAN)]["action"] == "DELETE"
    assert "no record.json" in rows[_cache(CACHE_ORPHAN)]["why"]
    assert rows[_cache(CACHE_WRITING)]["action"] == "keep"
    assert "grace period" in rows[_cache(CACHE_WRITING)]["why"]
    assert rows[f".staging/{STAGED_OLD}"]["action"] == "DELETE"
    assert rows[f".staging/{STAGED_YOUNG}"]["action"] == "keep"
    assert "grace period" in rows[f".staging/{STAGED_YOUNG}"]["why"]

    before = sorted(str(p) for p in tmp_path.rglob("*"))
    text = prune.plan_text(planned, None)
    assert "fit cache: delete 3 entries, keep 3" in text
    assert "staging: delete 1 folder(s), keep 1" in text
    assert "dry run: nothing was deleted" in text
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before

    store = ArtifactStore(LocalBackend(tmp_path))
    # A run reusing the old entry does not keep it alive: its age is since it was cached.
    assert read_outcome(store, Entry.cached(EXP, CACHE_OLD), "lda", 0) is not None
    result = prune.execute_prune(store, planned)
    assert result.skipped == {}
    cache = tmp_path / EXP / CACHE_DIR
    assert sorted(p.name for p in cache.iterdir()) == sorted(
        [CACHE_YOUNG, CACHE_LEGACY, CACHE_WRITING]
    )
    staging = tmp_path / EXP / STAGING_DIR
    assert [p.name for p in staging.iterdir()] == [STAGED_YOUNG]
    for key in (CACHE_YOUNG, CACHE_LEGACY):
        assert read_outcome(store, Entry.cached(EXP, key), "lda", 0) is not None
    assert read_outcome(store, Entry.staged(EXP, STAGED_YOUNG, "lda", 1), "lda", 1) is not None
    assert "deleted 0 version(s) and 0 leftover(s), 3 fit-cache entries, 1 staging folder(s)" in (
        prune.plan_text(planned, result)
    )
    # Once the last staging area is abandoned too, `.staging` itself goes.
    later = prune.plan_prune(store, EXP, 1, 30, 24, now=T0 + timedelta(days=1))
    prune.execute_prune(store, later)
    assert not staging.exists()
    assert (cache / CACHE_WRITING).exists() is False  # its write never finished: a leftover now


def test_a_huge_cache_prints_one_line_per_reason_unless_listed(tmp_path: Path) -> None:
    store = ArtifactStore(LocalBackend(tmp_path))
    for number in range(300):
        key = hashlib.sha256(str(number).encode()).hexdigest()
        written = (T0 - timedelta(days=40 if number % 3 else 1)).isoformat()
        write_outcome(store, Entry.cached(EXP, key), OUTCOME, key=key, written=written)
    planned = plan_at_t0(tmp_path)
    text = prune.plan_text(planned, None)
    assert len(text.splitlines()) < 20
    assert "fit cache: delete 200 entries, keep 100" in text
    summary = {row["action"]: row for row in planned.rows() if row["version"].startswith(".fit")}
    assert summary["DELETE"]["version"] == ".fit-cache (200 entries)"
    assert summary["keep"]["version"] == ".fit-cache (100 entries)"
    assert "list_cache" in text  # says how to see them all
    listed = prune.plan_text(planned, None, list_cache=True)
    assert all(_cache(hashlib.sha256(str(n).encode()).hexdigest()) in listed for n in range(300))


def test_killed_at_every_step_no_cache_or_staging_entry_is_half_there(tmp_path: Path) -> None:
    # 3 cache entries and 2 staged fits, record (even a missing one) then payload: 10 removes.
    for after in range(1, 11):
        root = tmp_path / f"kill-{after}"
        populate_cache_and_staging(root)
        store = ArtifactStore(LocalBackend(root))
        kill_on_remove(store, after)
        with pytest.raises(Killed):
            prune.execute_prune(store, plan_at_t0(root))
        store = ArtifactStore(LocalBackend(root))
        for record in root.rglob(RECORD):
            key_or_fit = record.parent.name
            fold = int(key_or_fit[-1]) - 1 if key_or_fit.startswith("fit-") else 0
            # Every entry still holding a record is whole (read_outcome checks the sha256).
            if record.parent.name != CACHE_BROKEN:
                entry = Entry(str(record.parent.relative_to(root)))
                assert read_outcome(store, entry, "lda", fold) is not None, (after, record)
        prune.execute_prune(store, plan_at_t0(root))
        cache = root / EXP / CACHE_DIR
        assert sorted(p.name for p in cache.iterdir()) == sorted(
            [CACHE_YOUNG, CACHE_LEGACY, CACHE_WRITING]
        ), after
        assert [p.name for p in (root / EXP / STAGING_DIR).iterdir()] == [STAGED_YOUNG], after


def test_a_cache_entry_written_again_after_the_plan_is_kept(tmp_path: Path) -> None:
    populate_cache_and_staging(tmp_path)
    planned = plan_at_t0(tmp_path)
    store = ArtifactStore(LocalBackend(tmp_path))
    # A run fitted it again meanwhile (its old copy had been unreadable, say).
    write_outcome(store, Entry.cached(EXP, CACHE_OLD), OUTCOME, written=T0.isoformat())
    result = prune.execute_prune(store, planned)
    assert "written within 30 days" in result.skipped[f".fit-cache/{CACHE_OLD}"]
    assert read_outcome(store, Entry.cached(EXP, CACHE_OLD), "lda", 0) is not None
