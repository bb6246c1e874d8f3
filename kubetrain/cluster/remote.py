"""The SSH side of the runner: a `Remote` over kubetrain.ssh, and the join-token round trip."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from kubetrain.cluster.errors import ClusterStepError
from kubetrain.cluster.inventory import Host, Inventory
from kubetrain.cluster.join import JOIN_TOKEN_COMMAND, JoinCommand, parse_join_command
from kubetrain.cluster.runner import StepResult, run_command, run_steps, tail
from kubetrain.cluster.spec import WaitSpec
from kubetrain.cluster.steps import AnyStep
from kubetrain.ssh import CommandResult, SshError, connect
from kubetrain.ssh import run_command as ssh_run_command


class SshRemote:
    """A Remote over one SSH connection from kubetrain/ssh.py (host key verified)."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self.client = connect(host.endpoint())

    def run(self, command: str, timeout: float) -> CommandResult:
        """Run a command through kubetrain.ssh.run_command."""
        return ssh_run_command(self.client, command, timeout=timeout)

    def fetch(self, remote_path: str) -> bytes | None:
        """Read a file below the login directory over SFTP."""
        try:
            sftp = self.client.open_sftp()
        except Exception as error:
            raise SshError(f"cannot open SFTP on {self.host.label}: {error}") from None
        try:
            with sftp.open(remote_path, "rb") as stream:
                return bytes(stream.read())
        except FileNotFoundError:
            return None
        except OSError as error:
            raise SshError(f"cannot read ~/{remote_path} on {self.host.label}: {error}") from None
        finally:
            sftp.close()

    def close(self) -> None:
        """Close the connection."""
        self.client.close()


def open_remote(host: Host) -> SshRemote:
    """Connect to a host; connection problems become a ClusterStepError naming the host."""
    try:
        return SshRemote(host)
    except SshError as error:
        raise ClusterStepError(
            host.label,
            "connect",
            f"ssh {host.user}@{host.address} -p {host.port}",
            None,
            str(error),
        ) from None


def execute_host(
    host: Host,
    steps: Sequence[AnyStep],
    dry_run: bool,
    log: Callable[[str], None],
    wait: WaitSpec | None = None,
) -> list[StepResult]:
    """Connect to host, run steps (check-then-apply, or checks only in dry-run), disconnect."""
    remote = open_remote(host)
    try:
        results = run_steps(remote, host, steps, dry_run=dry_run, wait=wait, log=log)
    finally:
        remote.close()
    return results


def create_join_command(inventory: Inventory) -> JoinCommand:
    """A fresh, short-lived join command from the control plane (the token is never logged)."""
    host = inventory.control_plane
    step = "join-token"
    remote = open_remote(host)
    try:
        result = run_command(remote, host, step, JOIN_TOKEN_COMMAND, host.command_timeout)
    finally:
        remote.close()
    if not result.ok:
        raise ClusterStepError(
            host.label, step, JOIN_TOKEN_COMMAND.text, result.exit_code, tail(result.stderr)
        )
    try:
        return parse_join_command(result.stdout)
    except ValueError as error:
        raise ClusterStepError(
            host.label, step, JOIN_TOKEN_COMMAND.text, result.exit_code, str(error)
        ) from None
