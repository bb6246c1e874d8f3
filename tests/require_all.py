"""pytest plugin: in a run that must test everything, a skipped system test is a failure.

Integration and container tests (real sshd, root, Docker) skip when their prerequisite is
missing. On a developer machine that is convenient; in `make test` and in CI it hides that half
the suite did not run. With KUBETRAIN_REQUIRE_ALL=1 (set by `make test`; default on when
CI=true) such a skip fails the test instead, unless its reason says the prerequisite "cannot
be installed" here. Every skip reason is printed at the end of the run either way (-ra).
"""

from __future__ import annotations

import os
from typing import Any

import pytest

SYSTEM_TEST_DIRS = frozenset({"integration", "container"})
SYSTEM_FIXTURES = frozenset({"sshd", "docker_engine"})
ALLOWED_REASON = "cannot be installed"


def require_all() -> bool:
    """KUBETRAIN_REQUIRE_ALL=1/0 decides; unset, CI=true turns it on."""
    default = "1" if os.environ.get("CI", "").lower() == "true" else "0"
    return os.environ.get("KUBETRAIN_REQUIRE_ALL", default).strip() == "1"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "needs_system: needs root, sshd, Docker or a browser; with KUBETRAIN_REQUIRE_ALL=1 a "
        f"skip fails unless its reason says the prerequisite {ALLOWED_REASON!r}",
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if SYSTEM_TEST_DIRS & set(item.path.parent.parts) or SYSTEM_FIXTURES & fixtures:
            item.add_marker(pytest.mark.needs_system)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Any:
    report = yield
    if (
        report.skipped
        and not hasattr(report, "wasxfail")
        and item.get_closest_marker("needs_system") is not None
        and require_all()
    ):
        longrepr = report.longrepr
        reason = str(longrepr[2] if isinstance(longrepr, tuple) else longrepr)
        if ALLOWED_REASON not in reason:
            report.outcome = "failed"
            report.longrepr = (
                f"skipped, but this run requires every system test (KUBETRAIN_REQUIRE_ALL=1 or "
                f"CI=true): {reason}\nInstall the prerequisite (scripts/setup.sh), or run with "
                "KUBETRAIN_REQUIRE_ALL=0 to allow the skip"
            )
    return report
