"""Errors of the cluster flows: a bad inventory (the user's to fix) and failed steps on hosts."""

from __future__ import annotations

from typing import TYPE_CHECKING

from kubetrain.errors import KubetrainError, UserError

if TYPE_CHECKING:
    from kubetrain.cluster.runner import ClusterReport, StepResult


class InventoryError(UserError, ValueError):
    """The inventory file is missing, malformed or inconsistent; raised before any SSH."""


class ClusterStepError(KubetrainError):
    """A step failed on a host: names host, step, command, exit code and the stderr tail."""

    def __init__(
        self,
        host: str,
        step: str,
        command: str,
        exit_code: int | None,
        detail: str,
    ) -> None:
        self.host = host
        self.step = step
        self.command = command
        self.exit_code = exit_code
        self.detail = detail
        self.results: list[StepResult] = []
        code = "no exit code" if exit_code is None else f"exit code {exit_code}"
        super().__init__(
            f"host {host}, step {step}: `{command}` failed ({code})"
            + (f": {detail}" if detail else "")
        )


class ClusterRunError(KubetrainError):
    """One or more hosts failed; carries the report of everything that did and did not run."""

    def __init__(self, message: str, report: ClusterReport) -> None:
        super().__init__(message)
        self.report = report
