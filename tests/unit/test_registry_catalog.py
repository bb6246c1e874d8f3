"""kubetrain/registry/catalog.py: list, show and diff versions on a local store."""

from __future__ import annotations

from pathlib import Path

import pytest

from kubetrain.registry import aliases, catalog
from kubetrain.store import VersionNotFoundError, open_store
from tests.registry_helpers import EXP, make_version, version_name

V1, V2, V3 = version_name(1), version_name(2), version_name(3)


@pytest.fixture
def store(tmp_path: Path):
    with open_store(str(tmp_path / "store")) as opened:
        make_version(opened, tmp_path, V1, {"lda": 0.80, "nn": 0.70})
        make_version(
            opened,
            tmp_path,
            V2,
            {"lda": 0.85, "nn": 0.72},
            parameters={"folds": 10, "normalize": "l2"},
        )
        make_version(opened, tmp_path, V3, {"lda": 0.83}, data_sha256="e" * 64)
        yield opened


def test_list_shows_scores_pointers_and_counts_incomplete_apart(store, tmp_path: Path) -> None:
    aliases.promote(store, EXP, "production", V1, "tester", "first")
    (tmp_path / "store" / EXP / version_name(9)).mkdir()  # an interrupted publish
    listing = catalog.list_experiment(store, EXP)
    assert [r.version for r in listing.rows] == [V3, V2, V1]
    assert listing.incomplete == [version_name(9)]
    assert listing.total == 3
    by_version = {r.version: r for r in listing.rows}
    assert by_version[V1].pointers == ["@production"]
    assert by_version[V3].pointers == ["LATEST"]
    assert by_version[V2].scores == {
        "lda": {"accuracy": (0.85, 0.01)},
        "nn": {"accuracy": (0.72, 0.01)},
    }
    assert by_version[V3].data_sha256 == "e" * 64
    text = catalog.listing_text(listing)
    assert "3 complete version(s); 1 incomplete" in text
    table = catalog.listing_table(listing)
    assert table[1]["lda accuracy"] == "0.8500 ± 0.0100"
    assert table[0]["nn accuracy"] == ""  # V3 has no nn
    assert [r.version for r in catalog.list_experiment(store, EXP, limit=2).rows] == [V3, V2]


def test_list_of_an_empty_or_missing_experiment(tmp_path: Path) -> None:
    with open_store(str(tmp_path / "empty")) as store:
        listing = catalog.list_experiment(store, EXP)
    assert listing.rows == []
    assert listing.incomplete == []
    assert "(no complete version)" in catalog.listing_text(listing)


def test_show_by_name_alias_and_latest(store) -> None:
    aliases.promote(store, EXP, "staging", V2, "tester", "try it")
    shown = catalog.show_version(store, EXP, "@staging")
    assert shown.version == V2
    assert shown.manifest["parameters"]["folds"] == 10
    assert "@staging" in shown.text
    assert "unsigned" in shown.text
    assert "lda        accuracy           0.8500 ± 0.0100" in shown.text
    assert catalog.show_version(store, EXP, "LATEST").version == V3
    assert catalog.show_version(store, EXP, None).version == V3
    assert catalog.show_version(store, EXP, V1).version == V1


def test_show_unknown_version_or_alias_names_the_fix(store) -> None:
    with pytest.raises(VersionNotFoundError, match="complete versions"):
        catalog.show_version(store, EXP, version_name(30))
    with pytest.raises(aliases.AliasError, match=r"not set.*versions promote"):
        catalog.show_version(store, EXP, "@production")


def test_diff_parameters_data_and_score_changes(store) -> None:
    diff = catalog.diff_versions(store, EXP, V1, V2)
    assert diff.parameters == [("folds", 5, 10)]
    assert diff.old_data == diff.new_data
    changes = {(s.model, s.metric): s for s in diff.scores}
    assert changes[("lda", "accuracy")].change == pytest.approx(0.05)
    assert changes[("nn", "accuracy")].change == pytest.approx(0.02)
    assert "same" in diff.text
    assert "+0.0500" in diff.text

    other = catalog.diff_versions(store, EXP, V2, "LATEST")
    assert other.new == V3
    assert other.old_data != other.new_data
    assert "DIFFERENT" in other.text
    nn = next(s for s in other.scores if s.model == "nn")
    assert nn.old == pytest.approx(0.72)
    assert nn.new is None
    assert nn.change is None
