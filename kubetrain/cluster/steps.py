"""Step records: what one host must end up with, and how to check and apply it.

Three kinds, one frozen record each, so a step carries only the fields its kind uses:
- `Step`: check-then-apply. The check is a read-only shell command that exits 0 when the
  effect is in place; the apply commands run only when it fails, and the check must pass after.
- `FetchStep`: copy a file from the host to the operator's machine over SFTP.
- `WaitStep`: poll a read-only probe until the named nodes (and kube-system pods) are Ready.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

from kubetrain.cluster.inventory import Host

REDACTED = "<redacted>"


@dataclass(frozen=True)
class Command:
    """A shell command for a host; sudo wraps it as `sudo -n sh -c '…'` on sudo hosts.

    display is what messages and plans show (secrets such as join tokens redacted).
    """

    text: str
    sudo: bool = True
    display: str | None = None

    def wire(self, host: Host) -> str:
        """The exact string sent over SSH for this host."""
        if self.sudo and host.sudo:
            return f"sudo -n sh -c {shlex.quote(self.text)}"
        return self.text

    def shown(self) -> str:
        """The command as plans and messages show it."""
        return self.display if self.display is not None else self.text


@dataclass(frozen=True)
class Step:
    """Check-then-apply: the check, and what applies the effect when the check fails."""

    name: str
    summary: str
    check: Command
    apply: tuple[Command, ...] = ()


@dataclass(frozen=True)
class FetchStep:
    """Copy remote_path (relative to the SSH user's home) to local_path, mode 0600.

    With server set, the copy's kubeconfig `server:` lines point there: the address the
    operator reaches the API server at, which may differ from the one the cluster advertises.
    """

    name: str
    summary: str
    remote_path: str
    local_path: Path
    server: str | None = None


@dataclass(frozen=True)
class WaitStep:
    """Poll probe until every node in nodes (and, if asked, every kube-system pod) is Ready."""

    name: str
    summary: str
    probe: Command
    nodes: tuple[str, ...]
    system_pods: bool = False


AnyStep = Step | FetchStep | WaitStep
