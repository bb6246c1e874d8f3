"""Plans as text: one host's steps, or every host's for a flow, without connecting anywhere."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from kubetrain.cluster.inventory import Host, Inventory
from kubetrain.cluster.plans import control_plane_steps, join_steps, nodes_ready_step, prepare_steps
from kubetrain.cluster.steps import AnyStep, Command, FetchStep, Step, WaitStep
from kubetrain.cluster.teardown import teardown_steps


def render_plan(host: Host, steps: Sequence[AnyStep]) -> str:
    """A readable, exact plan for one host: each step's check and apply commands.

    `[sudo]` marks a command sent as `sudo -n sh -c '<command>'` (see Command.wire).
    """
    lines = [f"# host {host.label} as {host.user}, role {host.role}"]
    for step in steps:
        lines.append(f"## {step.name}: {step.summary}")
        match step:
            case FetchStep():
                lines.append(f"fetch: sftp {host.user}@{host.address}:~/{step.remote_path}")
                lines.append(f"   to: {step.local_path} (mode 0600)")
                if step.server:
                    lines.append(f"   with: server: {step.server}")
            case WaitStep():
                lines.append(f"poll{_sudo_mark(step.probe, host)}: {step.probe.shown()}")
            case Step():
                lines.append(f"check{_sudo_mark(step.check, host)}: {step.check.shown()}")
                lines.extend(
                    f"apply{_sudo_mark(command, host)}: {command.shown()}" for command in step.apply
                )
    return "\n".join(lines) + "\n"


def _sudo_mark(command: Command, host: Host) -> str:
    return " [sudo]" if command.sudo and host.sudo else ""


PlanFlow = Literal["bootstrap", "join", "teardown"]


def full_plan(
    inventory: Inventory, flow: PlanFlow = "bootstrap"
) -> list[tuple[Host, tuple[AnyStep, ...]]]:
    """Every host's steps for a flow, in the order the flow runs them (no connection needed).

    Join commands show a placeholder: the real token is minted on the control plane at run time.
    """
    cp, verify = inventory.control_plane, nodes_ready_step(inventory)
    if flow == "teardown":
        steps = teardown_steps(inventory, inventory.spec.purge_packages)
        return [(host, steps) for host in inventory.hosts]
    plan: list[tuple[Host, tuple[AnyStep, ...]]] = []
    if flow == "bootstrap":
        plan.append((cp, (*prepare_steps(inventory, cp), *control_plane_steps(inventory))))
    for worker in inventory.workers:
        plan.append((worker, (*prepare_steps(inventory, worker), *join_steps(worker, None))))
    plan.append((cp, (verify,)))
    return plan


def render_full_plan(inventory: Inventory, flow: PlanFlow = "bootstrap") -> str:
    """The exact commands a flow would run on every host, readable without any machine."""
    header = f"# {flow} plan for inventory {inventory.source}\n"
    warnings = "".join(f"# WARNING: {warning}\n" for warning in inventory.warnings)
    return header + warnings + "\n".join(render_plan(h, s) for h, s in full_plan(inventory, flow))
