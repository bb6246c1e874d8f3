"""Running steps on one host (check-then-apply, or checks only in a dry run) and the report.

The runner talks to a host through `Remote` (kubetrain/cluster/remote.py over SSH in
production, a scripted fake in unit tests).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from kubetrain.cluster.errors import ClusterStepError
from kubetrain.cluster.inventory import Host
from kubetrain.cluster.spec import WaitSpec
from kubetrain.cluster.steps import AnyStep, Command, FetchStep, Step, WaitStep
from kubetrain.ssh import CommandResult, SshError

STDERR_TAIL_CHARS = 800
_SERVER_LINE = re.compile(rb"^([ \t]*server:[ \t]*)\S+[ \t]*$", re.MULTILINE)


class Remote(Protocol):
    """What the runner needs from a host connection."""

    def run(self, command: str, timeout: float) -> CommandResult:
        """Run a shell command; exit code and output."""
        ...

    def fetch(self, remote_path: str) -> bytes | None:
        """The bytes of a file below the login directory, or None if it does not exist."""
        ...


StepStatus = Literal["satisfied", "applied", "would-apply", "failed", "skipped"]


@dataclass
class StepResult:
    """What happened to one step on one host."""

    host: str
    step: str
    status: StepStatus
    reason: str = ""
    commands: list[str] = field(default_factory=list)


@dataclass
class ClusterReport:
    """Per host and step: satisfied, applied, would-apply, failed or skipped."""

    flow: str
    dry_run: bool
    results: list[StepResult] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def extend(self, results: Iterable[StepResult]) -> None:
        """Add results."""
        self.results.extend(results)

    def add_failure(self, host: str, error: ClusterStepError) -> None:
        """Record a host's failed run: its results so far (or the failed step) and the error."""
        self.results.extend(error.results)
        if not error.results:
            self.results.append(StepResult(host, error.step, "failed", str(error), [error.command]))
        self.errors.append(str(error))

    def skip(self, hosts: Iterable[str], steps: Sequence[AnyStep], why: str) -> None:
        """Record steps that will not run on these hosts, and why."""
        self.results.extend(
            StepResult(host, step.name, "skipped", why) for host in hosts for step in steps
        )

    @property
    def changed(self) -> bool:
        """Whether anything was applied."""
        return any(result.status == "applied" for result in self.results)

    def summary(self) -> str:
        """One line: what the run did."""
        counts: dict[str, int] = {}
        for result in self.results:
            counts[result.status] = counts.get(result.status, 0) + 1
        hosts = len({result.host for result in self.results})
        parts = ", ".join(f"{count} {status}" for status, count in sorted(counts.items()))
        if self.errors:
            verdict = f"FAILED on {len(self.errors)} host(s)"
        elif self.dry_run:
            verdict = "dry run: nothing changed; " + (
                "nothing would change" if not counts.get("would-apply") else "steps to apply"
            )
        elif not self.changed:
            verdict = "nothing to do: every step was already in place, nothing applied"
        else:
            verdict = "done"
        return f"{self.flow}: {verdict} ({parts or 'no steps'} on {hosts} host(s))"

    def render(self) -> str:
        """A readable text report: one line per host and step, then commands and reasons."""
        lines = [self.summary()]
        for result in self.results:
            lines.append(f"  {result.host:<16} {result.step:<24} {result.status}")
            if result.reason:
                lines.extend(f"      {line}" for line in result.reason.splitlines())
            lines.extend(f"      $ {command}" for command in result.commands)
        lines.extend(f"ERROR {error}" for error in self.errors)
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly form (the flows' return value)."""
        return {
            "flow": self.flow,
            "dry_run": self.dry_run,
            "changed": self.changed,
            "summary": self.summary(),
            "text": self.render(),
            "errors": list(self.errors),
            "results": [vars(result).copy() for result in self.results],
        }


def tail(text: str, limit: int = STDERR_TAIL_CHARS) -> str:
    """The end of text, at most limit characters (stderr in messages)."""
    text = text.strip()
    return text if len(text) <= limit else "…" + text[-limit:]


def run_command(
    remote: Remote, host: Host, step_name: str, command: Command, timeout: float
) -> CommandResult:
    """Run one command on host; an SSH failure becomes a ClusterStepError naming the step."""
    try:
        return remote.run(command.wire(host), timeout)
    except SshError as error:
        raise ClusterStepError(host.label, step_name, command.shown(), None, str(error)) from None


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(f".{path.name}.{os.getpid()}.part")
    fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as stream:
            stream.write(data)
        os.chmod(part, 0o600)
        os.replace(part, path)
    except BaseException:
        part.unlink(missing_ok=True)
        raise


def _fetch_step(remote: Remote, host: Host, step: FetchStep, dry_run: bool) -> StepResult:
    target = step.local_path
    try:
        data = remote.fetch(step.remote_path)
    except SshError as error:
        raise ClusterStepError(host.label, step.name, "sftp get", None, str(error)) from None
    if data is not None and step.server is not None:
        data = _SERVER_LINE.sub(rb"\g<1>" + step.server.encode(), data)
    current = target.read_bytes() if target.is_file() else None
    mode_ok = target.is_file() and (target.stat().st_mode & 0o777) == 0o600
    if data is not None and current == data and mode_ok:
        return StepResult(host.name, step.name, "satisfied")
    reason = (
        f"{target} is missing"
        if current is None
        else f"{target} differs from the host's copy or is not mode 0600"
    )
    shown = [f"sftp get ~{host.user}/{step.remote_path} -> {target} (mode 0600)"]
    if dry_run:
        return StepResult(host.name, step.name, "would-apply", reason, shown)
    if data is None:
        raise ClusterStepError(
            host.label,
            step.name,
            shown[0],
            None,
            f"~{host.user}/{step.remote_path} does not exist on the control plane",
        )
    try:
        _write_private(target, data)
    except OSError as error:
        raise ClusterStepError(
            host.label,
            step.name,
            shown[0],
            None,
            f"cannot write {target}: {error.strerror}; choose a writable kubeconfig_path",
        ) from None
    return StepResult(host.name, step.name, "applied", reason, shown)


def parse_ready(output: str) -> tuple[dict[str, bool], dict[str, bool]]:
    """Parse the readiness probe output into ({node: Ready}, {kube-system pod: Ready})."""
    nodes: dict[str, bool] = {}
    pods: dict[str, bool] = {}
    target = nodes
    for raw in output.splitlines():
        line = raw.strip()
        if line == "---":
            target = pods
            continue
        if "=" in line:
            name, _, status = line.partition("=")
            target[name] = status == "True"
    return nodes, pods


def _not_ready(step: WaitStep, output: str) -> list[str]:
    nodes, pods = parse_ready(output)
    waiting = [f"node {name}" for name in step.nodes if not nodes.get(name, False)]
    if step.system_pods:
        if not pods:
            waiting.append("kube-system pods (none listed yet)")
        waiting.extend(f"pod {name}" for name, ready in sorted(pods.items()) if not ready)
    return waiting


def _wait_step(
    remote: Remote,
    host: Host,
    step: WaitStep,
    dry_run: bool,
    timeout: float,
    interval: float,
    sleep: Callable[[float], None],
) -> StepResult:
    probe = step.probe
    result = run_command(remote, host, step.name, probe, host.check_timeout)
    waiting = _not_ready(step, result.stdout) if result.ok else ["the API server to answer"]
    if not waiting:
        return StepResult(host.name, step.name, "satisfied")
    first = "not Ready yet: " + ", ".join(waiting)
    if dry_run:
        return StepResult(
            host.name,
            step.name,
            "would-apply",
            first,
            [f"poll up to {timeout:g}s: {probe.shown()}"],
        )
    deadline = time.monotonic() + timeout
    while True:
        if time.monotonic() >= deadline:
            detail = f"timed out after {timeout:g}s waiting for " + ", ".join(waiting)
            if not result.ok:
                detail += f"; last error: {tail(result.stderr)}"
            raise ClusterStepError(host.label, step.name, probe.shown(), result.exit_code, detail)
        sleep(min(interval, max(0.0, deadline - time.monotonic())))
        result = run_command(remote, host, step.name, probe, host.check_timeout)
        waiting = _not_ready(step, result.stdout) if result.ok else ["the API server to answer"]
        if not waiting:
            return StepResult(host.name, step.name, "applied", first, [f"waited for: {first}"])


def run_steps(
    remote: Remote,
    host: Host,
    steps: Sequence[AnyStep],
    *,
    dry_run: bool,
    wait: WaitSpec | None = None,
    sleep: Callable[[float], None] = time.sleep,
    log: Callable[[str], None] | None = None,
) -> list[StepResult]:
    """Check each step and apply those whose check fails; stop at the first failure.

    In dry-run only checks run (they are read-only) and failing ones are reported with the
    commands that would run. Raises ClusterStepError with the results so far in `.results`.
    """
    wait = wait or WaitSpec()
    results: list[StepResult] = []
    for step in steps:
        try:
            match step:
                case FetchStep():
                    result = _fetch_step(remote, host, step, dry_run)
                case WaitStep():
                    result = _wait_step(
                        remote, host, step, dry_run, wait.timeout, wait.interval, sleep
                    )
                case Step():
                    result = _check_then_apply(remote, host, step, dry_run)
        except ClusterStepError as error:
            results.append(StepResult(host.name, step.name, "failed", str(error), [error.command]))
            results.extend(
                StepResult(host.name, later.name, "skipped", f"after {step.name} failed")
                for later in steps[steps.index(step) + 1 :]
            )
            error.results = results
            raise
        results.append(result)
        if log is not None:
            log(f"{host.label} {step.name}: {result.status}")
    return results


def _check_then_apply(remote: Remote, host: Host, step: Step, dry_run: bool) -> StepResult:
    check = run_command(remote, host, step.name, step.check, host.check_timeout)
    if check.ok:
        return StepResult(host.name, step.name, "satisfied")
    reason = f"check exited {check.exit_code}: {step.check.shown()}"
    if check.stderr.strip():
        reason += f"\n{tail(check.stderr, 300)}"
    shown = [command.shown() for command in step.apply]
    if dry_run:
        return StepResult(host.name, step.name, "would-apply", reason, shown)
    for command in step.apply:
        result = run_command(remote, host, step.name, command, host.command_timeout)
        if not result.ok:
            raise ClusterStepError(
                host.label,
                step.name,
                command.shown(),
                result.exit_code,
                tail(result.stderr or result.stdout),
            )
    after = run_command(remote, host, step.name, step.check, host.check_timeout)
    if not after.ok:
        raise ClusterStepError(
            host.label,
            step.name,
            step.check.shown(),
            after.exit_code,
            "every apply command succeeded but the check still fails; "
            + (tail(after.stderr) or "inspect the host"),
        )
    return StepResult(host.name, step.name, "applied", reason, shown)
