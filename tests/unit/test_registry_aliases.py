"""kubetrain/registry/aliases.py: atomic alias moves with an append-only history (local store)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kubetrain.inference import load_version
from kubetrain.registry import aliases
from kubetrain.store import StoreError, VersionNotFoundError, open_store
from tests.registry_helpers import EXP, make_version, promote_race, version_name

V1, V2 = version_name(1), version_name(2)


def test_promote_moves_the_alias_and_records_who_when_from_to_why(tmp_path: Path) -> None:
    with open_store(str(tmp_path / "store")) as store:
        make_version(store, tmp_path, V1, {"lda": 0.8})
        make_version(store, tmp_path, V2, {"lda": 0.9})
        first = aliases.promote(store, EXP, "production", V1, "alice", "first release")
        second = aliases.promote(store, EXP, "production", "LATEST", "bob", "better")
        assert aliases.read_alias(store, EXP, "production") == V2
        assert aliases.list_aliases(store, EXP) == {"production": V2}
        history = aliases.history(store, EXP)
    assert [(e.from_version, e.to_version, e.who, e.why) for e in history] == [
        (None, V1, "alice", "first release"),
        (V1, V2, "bob", "better"),
    ]
    assert [e.id for e in history] == [first.id, second.id]
    folder = tmp_path / "store" / EXP / "aliases"
    assert json.loads((folder / "production").read_text()) == {"version": V2, "event": second.id}
    assert len(list((folder / "history").glob("*.json"))) == 2


def test_promote_refuses_incomplete_versions_and_reserved_names(tmp_path: Path) -> None:
    with open_store(str(tmp_path / "store")) as store:
        make_version(store, tmp_path, V1, {"lda": 0.8})
        (tmp_path / "store" / EXP / V2).mkdir()
        with pytest.raises(VersionNotFoundError, match="not a complete version"):
            aliases.promote(store, EXP, "production", V2, "x", "")
        for bad in ("history", "LATEST", "../x", "a/b", ""):
            with pytest.raises(StoreError):
                aliases.promote(store, EXP, bad, V1, "x", "")
        assert aliases.history(store, EXP) == []


def test_eight_concurrent_promotes_one_wins_every_move_recorded(tmp_path: Path) -> None:
    promote_race(str(tmp_path / "store"), tmp_path)


def test_predict_loads_the_version_an_alias_names(tmp_path: Path) -> None:
    store_url = str(tmp_path / "store")
    with open_store(store_url) as store:
        make_version(store, tmp_path, V1, {"lda": 0.8})
        make_version(store, tmp_path, V2, {"lda": 0.9})
        aliases.promote(store, EXP, "production", V1, "x", "")
    loaded = load_version(store_url, EXP, "@production", tmp_path / "work")
    assert loaded.version == V1
    assert loaded.models["lda"] == {"model": "lda", "version": V1}
    assert load_version(store_url, EXP, None, tmp_path / "work2").version == V2
    with pytest.raises(aliases.AliasError, match="alias 'staging' is not set"):
        load_version(store_url, EXP, "@staging", tmp_path / "work3")
