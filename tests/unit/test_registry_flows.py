"""flows/versions.py through the generated `kubetrain versions …` CLI, on a real Prefect server."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from kubetrain.cli import build_app
from kubetrain.registry import aliases
from kubetrain.store import open_store
from tests.prefect_api import http
from tests.registry_helpers import EXP, make_version, version_name

V1, V2, V3 = version_name(1), version_name(2), version_name(3)


def kubetrain(*argv: str) -> Any:
    result = CliRunner().invoke(build_app(list(argv)), list(argv), terminal_width=200)
    assert result.exit_code == 0, result.output
    return result


def artifacts(server: Any, key: str) -> list[dict[str, Any]]:
    found = http.post(
        f"{server.api_url}/artifacts/filter", json={"artifacts": {"key": {"any_": [key]}}}
    ).json()
    return [
        {**a, "data": json.loads(a["data"]) if isinstance(a["data"], str) else a["data"]}
        for a in found
    ]


def test_versions_commands_list_show_diff_promote_history_prune(
    prefect_server: Any, tmp_path: Path
) -> None:
    url = str(tmp_path / "store")
    with open_store(url) as store:
        make_version(store, tmp_path, V1, {"lda": 0.80})
        make_version(store, tmp_path, V2, {"lda": 0.84}, parameters={"folds": 3})
        make_version(store, tmp_path, V3, {"lda": 0.82})
    where = ["--source", url, "--experiment", EXP]

    promoted = kubetrain("versions", "promote", "--alias", "production", "--version", V2, *where)
    assert f"@production: unset -> {V2}" in promoted.output
    listed = kubetrain("versions", "list", *where)
    lines = listed.output.splitlines()
    assert lines[0] == f"{EXP}: 3 complete version(s)"
    v2_line = next(line for line in lines if line.startswith(V2))
    assert "@production" in v2_line
    assert "0.8400 ± 0.0100" in v2_line
    table = artifacts(prefect_server, "versions")[0]["data"]
    assert [row["version"] for row in table] == [V3, V2, V1]

    shown = kubetrain("versions", "show", "--version", "@production", *where)
    assert f"version     {V2}" in shown.output
    diff = kubetrain("versions", "diff", "--old", V1, "--new", "@production", *where)
    assert "+0.0400" in diff.output
    assert "folds" in diff.output
    scores = artifacts(prefect_server, "versions-diff-scores")[0]["data"]
    assert scores == [
        {"model": "lda", "metric": "accuracy", V1: "0.8000", V2: "0.8400", "change": "+0.0400"}
    ]

    history = kubetrain("versions", "history", *where)
    assert "@production" in history.output
    assert V2 in history.output

    cached = tmp_path / "store" / EXP / ".fit-cache" / ("a" * 64)
    cached.mkdir(parents=True)
    record = {"payload": "x.joblib", "sha256": "0" * 64, "written": "2026-01-01T00:00:00+00:00"}
    (cached / "record.json").write_text(json.dumps(record))
    prune = ["versions", "prune", "--keep-last", "1", "--keep-days", "0", *where]
    dry = kubetrain(*prune, "--list-cache")
    assert "delete 1" in dry.output
    assert "dry run" in dry.output
    line = next(line for line in dry.output.splitlines() if line.startswith(".fit-cache/"))
    assert line.startswith(f".fit-cache/{'a' * 12}…")
    assert line.split()[1:] == ["DELETE", "written", "more", "than", "0", "days", "ago"]
    with open_store(url) as store:
        assert store.list_versions(EXP) == [V1, V2, V3]
    assert cached.exists()
    done = kubetrain(*prune, "--delete")
    assert "1 fit-cache entry" in done.output
    with open_store(url) as store:
        assert store.list_versions(EXP) == [V2, V3]  # V2 kept: @production names it
        assert aliases.read_alias(store, EXP, "production") == V2
    assert not cached.exists()


def test_versions_user_error_is_one_line(prefect_server: Any, tmp_path: Path) -> None:
    argv = [
        "versions",
        "show",
        "--version",
        "@nope",
        "--source",
        str(tmp_path),
        "--experiment",
        EXP,
    ]
    result = CliRunner().invoke(build_app(argv), argv)
    assert result.exit_code == 1
    assert result.output.startswith("error: alias 'nope' is not set")
