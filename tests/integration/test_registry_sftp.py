"""The registry over SFTP against a real OpenSSH sshd: the same scenarios as on a local folder."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from kubetrain.inference import load_version
from kubetrain.registry import aliases, catalog
from kubetrain.registry.gate import GateConfig, run_gate
from kubetrain.registry.signing import SignatureError
from kubetrain.store import open_store
from tests.conftest import REPO_ROOT
from tests.registry_helpers import (
    EXP,
    NOW,
    OLD,
    assert_no_visible_partial_version,
    killed_prune_never_shows_a_partial_version,
    make_version,
    manifest_path,
    populate,
    private_pem,
    promote_race,
    rewrite_model_and_manifest,
    run_cache_prune_and_check,
    run_prune_and_check,
    version_name,
)
from tests.sshd import Sshd

pytestmark = pytest.mark.usefixtures("ssh_env")

V1, V2, V3 = version_name(1), version_name(2), version_name(3)


def test_list_show_diff(sshd: Sshd, remote_dir: Path, tmp_path: Path) -> None:
    url = sshd.url(remote_dir / "store")
    with open_store(url) as store:
        make_version(store, tmp_path, V1, {"lda": 0.80, "nn": 0.7})
        make_version(store, tmp_path, V2, {"lda": 0.85, "nn": 0.7}, parameters={"folds": 3})
        make_version(store, tmp_path, V3, {"lda": 0.83})
        store.backend.makedirs(f"{EXP}/{version_name(9)}")
        aliases.promote(store, EXP, "staging", V2, "x", "")
        listing = catalog.list_experiment(store, EXP)
        assert [r.version for r in listing.rows] == [V3, V2, V1]
        assert listing.incomplete == [version_name(9)]
        assert listing.rows[1].pointers == ["@staging"]
        assert catalog.show_version(store, EXP, "@staging").manifest["parameters"] == {"folds": 3}
        diff = catalog.diff_versions(store, EXP, V1, "@staging")
        assert [(s.model, s.change) for s in diff.scores] == [
            ("lda", pytest.approx(0.05)),
            ("nn", pytest.approx(0.0)),
        ]
        assert diff.parameters == [("folds", 5, 3), ("normalize", "l2", None)]


def test_eight_concurrent_promotes(sshd: Sshd, remote_dir: Path, tmp_path: Path) -> None:
    promote_race(sshd.url(remote_dir / "store"), tmp_path)


def test_gate_refuses_worse_accepts_better(sshd: Sshd, remote_dir: Path, tmp_path: Path) -> None:
    gate = GateConfig("production", "lda", "accuracy", 0.0)
    with open_store(sshd.url(remote_dir / "store")) as store:
        make_version(store, tmp_path, V1, {"lda": 0.80})
        assert run_gate(store, EXP, V1, gate, "nightly")[0].promoted
        make_version(store, tmp_path, V2, {"lda": 0.75})
        worse = run_gate(store, EXP, V2, gate, "nightly")[0]
        assert not worse.promoted
        assert (worse.candidate_score, worse.current_score) == (0.75, 0.80)
        make_version(store, tmp_path, V3, {"lda": 0.90})
        assert run_gate(store, EXP, V3, gate, "nightly")[0].promoted
        assert aliases.read_alias(store, EXP, "production") == V3


def test_prune_plan_and_deletion(sshd: Sshd, remote_dir: Path, tmp_path: Path) -> None:
    run_prune_and_check(sshd.url(remote_dir / "store"), tmp_path)


def test_prune_of_fit_cache_and_staging(sshd: Sshd, remote_dir: Path) -> None:
    # The server's folder is on this machine: the scenario is written there, pruned over SFTP.
    run_cache_prune_and_check(sshd.url(remote_dir / "store"), remote_dir / "store")


def test_prune_killed_mid_way(sshd: Sshd, remote_dir: Path, tmp_path: Path) -> None:
    # First manifest, first model file, second manifest: the three kinds of stopping point.
    killed_prune_never_shows_a_partial_version(sshd.url(remote_dir / "s"), tmp_path, [1, 2, 3])


def test_prune_process_sigkilled(sshd: Sshd, remote_dir: Path, tmp_path: Path) -> None:
    url = sshd.url(remote_dir / "store")
    populate(url, tmp_path)
    script = textwrap.dedent(
        f"""
        from datetime import datetime
        from kubetrain.registry import prune
        from kubetrain.store import open_store
        with open_store({url!r}) as store:
            now = datetime.fromisoformat({NOW.isoformat()!r})
            prune.execute_prune(store, prune.plan_prune(store, {EXP!r}, 2, 7, 24, now))
        """
    )
    process = subprocess.Popen([sys.executable, "-c", script], cwd=REPO_ROOT, env=os.environ)
    try:
        target = remote_dir / "store" / manifest_path(OLD[0])
        deadline = time.monotonic() + 60
        while target.exists() and time.monotonic() < deadline:
            time.sleep(0.002)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL  # killed mid-prune, not finished
    assert not target.exists()
    with open_store(url) as store:
        assert OLD[0] not in store.list_versions(EXP)
        assert_no_visible_partial_version(store, tmp_path / "check")


def test_signing_refuses_rewritten_model_and_tampered_signature(
    sshd: Sshd, remote_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = Ed25519PrivateKey.generate()
    monkeypatch.setenv("KUBETRAIN_SIGNING_KEY_DATA", private_pem(key))
    url = sshd.url(remote_dir / "store")
    with open_store(url) as store:
        make_version(store, tmp_path, V1, {"lda": 0.8}, key=key)
        make_version(store, tmp_path, V2, {"lda": 0.8}, key=key)
    assert load_version(url, EXP, V1, tmp_path / "ok").version == V1
    marker = tmp_path / "code-ran"
    rewrite_model_and_manifest(remote_dir / "store", V1, marker)
    with pytest.raises(SignatureError, match="does not verify"):
        load_version(url, EXP, V1, tmp_path / "w1")
    assert not marker.exists()
    manifest = remote_dir / "store" / manifest_path(V2)
    manifest.write_text(manifest.read_text().replace('"value": "', '"value": "AAAA', 1))
    with pytest.raises(SignatureError, match="does not verify"):
        load_version(url, EXP, V2, tmp_path / "w2")
