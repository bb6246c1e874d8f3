"""tests/require_all.py: with KUBETRAIN_REQUIRE_ALL=1 a skipped system test fails (issue #17)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

INNER = """
import pytest

def test_needs_root():
    pytest.skip("the test sshd needs root")

def test_impossible_here():
    pytest.skip("sshd cannot be installed in this sandbox")

@pytest.mark.xfail(reason="known")
def test_expected_failure():
    assert False
"""


def _run(tmp_path: Path, env: dict[str, str]) -> str:
    """pytest's output for INNER in an integration/ and a unit/ folder, plugin loaded."""
    for folder in ("integration", "unit"):
        (tmp_path / folder).mkdir(exist_ok=True)
        (tmp_path / folder / f"test_{folder}_inner.py").write_text(INNER)
    child_env = {k: v for k, v in os.environ.items() if k not in ("CI", "KUBETRAIN_REQUIRE_ALL")}
    child_env["PYTHONPATH"] = str(REPO_ROOT)
    plugin = ["-p", "tests.require_all", "-p", "no:cacheprovider", "-c", os.devnull]
    result = subprocess.run(
        [sys.executable, "-m", "pytest", *plugin, "--rootdir", str(tmp_path), "-q", "-rA", "."],
        capture_output=True,
        text=True,
        env=child_env | env,
        cwd=tmp_path,
        timeout=120,
    )
    return result.stdout


def _summary(stdout: str) -> str:
    return stdout.strip().splitlines()[-1]


@pytest.mark.parametrize(
    "env", [{"KUBETRAIN_REQUIRE_ALL": "1"}, {"CI": "true"}], ids=["require-all", "ci"]
)
def test_a_skipped_system_test_fails_when_everything_is_required(
    tmp_path: Path, env: dict[str, str]
) -> None:
    stdout = _run(tmp_path, env)
    failed = re.findall(r"^FAILED (\S+)", stdout, re.MULTILINE)
    # Only the system test whose prerequisite could be installed; not the one that cannot be
    # installed, not the unit test with the same skip, not an expected failure.
    assert failed == ["integration/test_integration_inner.py::test_needs_root"], stdout
    assert "requires every system test" in stdout
    assert "the test sshd needs root" in stdout  # the original reason is kept
    assert re.match(r"^=* ?1 failed, 3 skipped, 2 xfailed", _summary(stdout)), stdout


@pytest.mark.parametrize(
    "env", [{}, {"CI": "true", "KUBETRAIN_REQUIRE_ALL": "0"}], ids=["default", "opt-out"]
)
def test_skips_stay_skips_otherwise(tmp_path: Path, env: dict[str, str]) -> None:
    stdout = _run(tmp_path, env)
    assert re.match(r"^=* ?4 skipped, 2 xfailed", _summary(stdout)), stdout
    assert len(re.findall(r"^SKIPPED \[1\] .*: .*", stdout, re.MULTILINE)) == 4  # reasons shown
