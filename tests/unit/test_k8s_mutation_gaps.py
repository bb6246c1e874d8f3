"""Job-template loading behaviour that mutation testing found unasserted (issue #17)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from kubetrain.k8s import template as template_module
from kubetrain.k8s.template import (
    WorkPoolError,
    load_base_job_template,
    load_environment,
    template_for_environment,
)


def test_a_missing_template_message_says_how_to_generate_it(tmp_path: Path) -> None:
    missing = tmp_path / "base-job-template.json"
    with pytest.raises(WorkPoolError) as raised:
        load_base_job_template(missing)
    assert str(raised.value) == (
        f"base job template {missing} not found: run `kubetrain work-pool write-template` "
        "to generate it"
    )


@pytest.mark.parametrize(
    "content",
    [
        {"job_configuration": {}},  # no variables
        {"variables": {"properties": {}}},  # no job_configuration
        [{"job_configuration": {}, "variables": {}}],  # not an object
    ],
)
def test_a_template_without_both_top_level_sections_is_refused(
    tmp_path: Path, content: object
) -> None:
    path = tmp_path / "base-job-template.json"
    path.write_text(json.dumps(content))
    with pytest.raises(WorkPoolError) as raised:
        load_base_job_template(path)
    message = str(raised.value)
    assert str(path) in message
    assert "'job_configuration' and 'variables'" in message


def test_an_environment_file_that_is_not_a_mapping_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "edge.yaml").write_text("- cpu_limit: 1\n- memory_limit: 1Gi\n")
    monkeypatch.setattr(template_module, "ENVIRONMENTS_DIR", tmp_path)
    with pytest.raises(WorkPoolError) as raised:
        load_environment("edge")
    message = str(raised.value)
    assert str(tmp_path / "edge.yaml") in message
    assert "mapping of job variable name to value" in message


def test_deriving_an_environment_leaves_the_shared_template_untouched() -> None:
    """One loaded template serves every environment: prod's defaults must not leak into dev."""
    base = load_base_job_template()
    before = copy.deepcopy(base)
    prod = template_for_environment(base, {"cpu_limit": "8", "memory_limit": "32Gi"})
    assert base == before
    dev = template_for_environment(base, {"memory_limit": "2Gi"})
    dev_props = dev["variables"]["properties"]
    assert dev_props["memory_limit"]["default"] == "2Gi"
    assert dev_props["cpu_limit"].get("default") == before["variables"]["properties"][
        "cpu_limit"
    ].get("default")
    assert prod["variables"]["properties"]["cpu_limit"]["default"] == "8"
