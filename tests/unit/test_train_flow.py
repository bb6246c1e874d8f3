"""flows/train.py: the parameter form, the CLI, and a small end-to-end run on a real server."""

from __future__ import annotations

import csv
import inspect
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from flows.train import DEFAULT_DATA, train
from kubetrain.cli import build_app
from tests.conftest import REPO_ROOT
from tests.prefect_api import http
from tests.train_helpers import write_original_layout_csv

PARAMETERS = [
    "data",
    "target",
    "drop_columns",
    "normalize",
    "models",
    "model_params",
    "folds",
    "shuffle",
    "seed",
    "metrics",
    "destination",
    "experiment",
    "promote_to",
    "gate_model",
    "gate_metric",
    "gate_max_drop",
    "fits",
    "fit_resources",
    "reuse_fits",
]
SMALL_NN = {"nn": {"hidden_layer_sizes": [16], "max_iter": 80}}


def test_every_parameter_has_a_description_in_the_deployment_schema() -> None:
    from prefect.utilities.callables import parameter_schema, parameter_schema_from_entrypoint

    for schema in (
        parameter_schema(train.fn),
        parameter_schema_from_entrypoint("flows/train.py:train"),  # what `prefect deploy` uses
    ):
        properties = schema.model_dump()["properties"]
        assert list(properties) == PARAMETERS
        for name, prop in properties.items():
            assert len(prop.get("description", "")) > 20, name
    props = parameter_schema(train.fn).model_dump()["properties"]
    assert props["models"]["items"]["enum"] == ["lda", "nn", "logreg", "rf", "hgb", "svc", "knn"]
    assert props["normalize"]["enum"] == ["none", "l2", "standard"]
    assert props["folds"]["default"] == 5
    assert props["shuffle"]["default"] is False
    assert props["metrics"]["default"] == ["accuracy"]
    assert props["destination"]["default"] == "./artifacts"


def test_cli_options_match_flow_parameters_and_are_documented() -> None:
    from prefect.utilities.callables import parameter_schema

    command = _app(["train"]).registered_commands[0].callback
    assert command is not None
    assert list(inspect.signature(command).parameters) == PARAMETERS
    result = _invoke(["train", "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "--no-shuffle" in result.output
    # Each option's help starts with the UI form's description, word for word.
    click_group = typer.main.get_command(_app(["train"]))
    click_train = click_group.commands["train"]  # type: ignore[attr-defined]
    helps = {param.name: " ".join((param.help or "").split()) for param in click_train.params}
    for name, prop in parameter_schema(train.fn).model_dump()["properties"].items():
        assert helps[name].startswith(" ".join(prop["description"].split())), name


def _app(argv: list[str]) -> typer.Typer:
    return build_app(argv)


def _invoke(argv: list[str], **kwargs: Any) -> Any:
    return CliRunner().invoke(_app(argv), argv, **kwargs)


def test_cli_lists_every_command() -> None:
    result = _invoke(["--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    for command in ("train", "predict", "cluster", "work-pool"):
        assert command in result.output
    cluster = _invoke(["cluster", "--help"], terminal_width=200)
    for command in ("bootstrap", "join", "teardown"):
        assert command in cluster.output


def test_cli_rejects_bad_model_params_json() -> None:
    result = _invoke(["train", "--model-params", "{nn"])
    assert result.exit_code == 2
    assert "not valid JSON" in result.output


def _small_csv(tmp_path: Path) -> Path:
    return write_original_layout_csv(tmp_path / "letters.csv", classes=5, per_class=8, features=4)


def test_flow_publishes_a_complete_version_and_reports(prefect_server, tmp_path: Path) -> None:
    destination = tmp_path / "store"
    outcome = train(
        data=str(_small_csv(tmp_path)),
        models=["lda", "nn", "knn"],
        model_params=SMALL_NN,
        normalize="standard",
        metrics=["f1_macro", "accuracy"],
        destination=str(destination),
        experiment="letters",
    )
    version_dir = destination / "letters" / outcome.version
    assert outcome.location == version_dir.as_uri()
    assert (destination / "letters" / "LATEST").read_text().strip() == outcome.version
    assert sorted(p.name for p in version_dir.iterdir()) == [
        "clf_knn.joblib",
        "clf_lda.joblib",
        "clf_nn.joblib",
        "confusion_knn.png",
        "confusion_lda.png",
        "confusion_nn.png",
        "cv_results.csv",
        "cv_scores.png",
        "manifest.json",
        "metadata.json",
    ]
    assert (version_dir / "cv_scores.png").read_bytes().startswith(b"\x89PNG")
    manifest = json.loads((version_dir / "manifest.json").read_text())
    assert manifest["parameters"]["models"] == ["lda", "nn", "knn"]
    assert manifest["parameters"]["model_params"] == SMALL_NN
    assert manifest["data"]["rows"] == 40
    assert manifest["data"]["target"] == "# Letter"
    assert manifest["models"]["nn"]["params"]["model"]["hidden_layer_sizes"] == [16]
    with (version_dir / "cv_results.csv").open() as stream:
        rows = list(csv.DictReader(stream))
    assert len(rows) == 3 * 5 * 2
    metadata = json.loads((version_dir / "metadata.json").read_text())
    for name in ("lda", "nn", "knn"):
        folds = manifest["models"][name]["cv"]["accuracy"]["folds"]
        assert [
            float(r["score"]) for r in rows if r["model"] == name and r["metric"] == "accuracy"
        ] == folds
        # The mean of the written fold scores, computed here (not another output of the code).
        expected = pytest.approx(sum(folds) / len(folds), rel=1e-12)
        assert metadata[f"train_accuracy_{name}"] == expected
        assert manifest["models"][name]["cv"]["accuracy"]["mean"] == expected

    run_id = manifest["flow_run_id"]
    api = prefect_server.api_url
    run = http.get(f"{api}/flow_runs/{run_id}").json()
    assert run["state_type"] == "COMPLETED"
    assert run["name"] == "letters: lda+nn+knn, 5 folds"
    artifacts = http.post(
        f"{api}/artifacts/filter", json={"artifacts": {"flow_run_id": {"any_": [run_id]}}}
    ).json()
    by_key = {a["key"]: a for a in artifacts}
    assert {a["type"] for a in artifacts} == {"table", "markdown", "progress"}  # a link is markdown
    table = by_key["letters-cv-results"]["data"]
    table = json.loads(table) if isinstance(table, str) else table
    assert {(r["model"], r["metric"]) for r in table} == {
        (m, k) for m in ("lda", "nn", "knn") for k in ("accuracy", "f1_macro")
    }
    assert (
        by_key["letters-version-link"]["data"] == f"[letters/{outcome.version}]({outcome.location})"
    )
    assert by_key["letters-training-progress"]["data"] == 100.0
    markdown = by_key["letters-model-version"]["data"]
    assert outcome.version in markdown
    assert manifest["data"]["sha256"] in markdown
    assert markdown.count("](data:image/png;base64,") == 4  # cv scores + a matrix per model
    assert '"model_params": {' in markdown  # parameters as JSON, not Python reprs

    task_runs = http.post(
        f"{api}/task_runs/filter", json={"flow_runs": {"id": {"any_": [run_id]}}}
    ).json()
    by_name = {t["name"]: t for t in task_runs}
    fits = {n for n in by_name if n.startswith("fit-")}
    assert fits == {
        f"fit-{m}-{part}"
        for m in ("lda", "nn", "knn")
        for part in ["final", *(f"fold-{f}" for f in range(1, 6))]
    }
    assert all(by_name[n]["state_type"] == "COMPLETED" for n in fits)
    # The graph reads as the pipeline: load-data feeds each fit, the fits feed serialize.
    load_id = next(t["id"] for n, t in by_name.items() if n.startswith("load-data"))
    upstream = {
        n: {i["id"] for inputs in t["task_inputs"].values() for i in inputs if "id" in i}
        for n, t in by_name.items()
    }
    assert all(load_id in upstream[n] for n in fits)
    serialize_name = next(n for n in by_name if n.startswith("serialize"))
    assert {by_name[n]["id"] for n in fits} <= upstream[serialize_name]
    publish_name = next(n for n in by_name if n.startswith("publish"))
    assert by_name[serialize_name]["id"] in upstream[publish_name]


def test_cli_prints_location_and_table_and_versions_do_not_collide(
    prefect_server, tmp_path: Path
) -> None:
    destination = tmp_path / "store"
    args = [
        "train",
        "--data",
        str(_small_csv(tmp_path)),
        "--models",
        "lda,knn",
        "--folds",
        "4",
        "--shuffle",
        "--seed",
        "3",
        "--metrics",
        "accuracy,balanced_accuracy",
        "--destination",
        destination.as_uri(),
    ]
    outputs = [_invoke(args) for _ in range(2)]
    locations = []
    for result in outputs:
        assert result.exit_code == 0, result.output
        match = re.search(r"^published (file://\S+)$", result.output, re.MULTILINE)
        assert match, result.output
        locations.append(match.group(1))
        assert re.search(
            r"^knn\s+balanced_accuracy\s+\d\.\d{4} ± \d\.\d{4}\s+4", result.output, re.M
        )
    assert locations[0] != locations[1]
    versions = sorted(
        p.name
        for p in (destination / "default").iterdir()
        if p.is_dir() and not p.name.startswith(".")  # .fit-cache: README "Scaling out"
    )
    assert len(versions) == 2
    assert (destination / "default" / "LATEST").read_text().strip() == versions[-1]
    manifest = json.loads((destination / "default" / versions[0] / "manifest.json").read_text())
    assert manifest["parameters"]["shuffle"] is True
    assert manifest["parameters"]["seed"] == 3


@pytest.mark.slow
def test_make_run_defaults_from_another_directory(prefect_server, tmp_path: Path) -> None:
    """`python -m flows.train` with no options: bundled sample, full-size nn, ./artifacts."""
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    result = subprocess.run(
        [sys.executable, "-m", "flows.train"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"published {(tmp_path / 'artifacts' / 'default').as_uri()}/" in result.stdout
    manifest = json.loads(
        next((tmp_path / "artifacts" / "default").glob("*/manifest.json")).read_text()
    )
    assert manifest["data"]["source"].endswith(DEFAULT_DATA)
    assert manifest["models"]["nn"]["params"]["hidden_layer_sizes"] == [500]
    assert manifest["models"]["nn"]["cv"]["accuracy"]["mean"] > 0.85


def test_cli_error_line_is_never_empty(monkeypatch: pytest.MonkeyPatch) -> None:
    """An error with no message still says what failed, not a bare 'error: '."""
    from kubetrain.store import StoreError

    def predict() -> None:
        """Stands in for a flow: no parameters, raises an error without a message."""

    class MessagelessFlow:
        fn = staticmethod(predict)

        def __call__(self, **_: Any) -> None:
            raise StoreError()

    monkeypatch.setattr("kubetrain.cli.load_flow", lambda _entrypoint: MessagelessFlow())
    result = CliRunner().invoke(build_app(["predict"]), ["predict"])
    assert result.exit_code == 1, result.output
    assert "error: StoreError" in result.output


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"folds": 1}, r"folds"),
        ({"models": []}, r"models"),
        ({"models": ["lda", "lda"]}, r"lda"),
        ({"experiment": "../up"}, r"experiment"),
        (
            {"models": ["nn"], "model_params": {"nn": {"hidden_layer_sizes": [-5]}}},
            r"model_params for 'nn': hidden_layer_sizes .*-5",
        ),
        (
            {"models": ["rf"], "model_params": {"rf": {"bootstrap": False, "oob_score": True}}},
            r"model_params for 'rf': oob_score",
        ),
    ],
)
def test_configuration_is_checked_before_the_data_or_the_destination_is_touched(
    prefect_server, tmp_path: Path, overrides: dict[str, Any], message: str
) -> None:
    from tests.train_helpers import LocalHttpServer

    destination = tmp_path / "store"
    body = _small_csv(tmp_path).read_bytes()
    with LocalHttpServer({"/d.csv": body}) as server:
        parameters: dict[str, Any] = {
            "data": server.url("/d.csv"),
            "models": ["lda"],
            "destination": str(destination),
        }
        with pytest.raises(Exception, match=message):
            train(**(parameters | overrides))
    assert server.requests == []
    assert not destination.exists()
