"""Infra flows: bootstrap, grow and tear down a kubeadm cluster over SSH, idempotently.

    python -m flows.cluster bootstrap --inventory infra/inventory.yaml --dry-run
    python -m flows.cluster bootstrap --inventory infra/inventory.yaml
    python -m flows.cluster join      --inventory infra/inventory.yaml
    python -m flows.cluster teardown  --inventory infra/inventory.yaml [--purge-packages]

Every step is check-then-apply (kubetrain/cluster): a second run changes nothing and says so;
a dry run runs only the read-only checks and lists, per host and step, what would run and why.
A failed host stops only what depends on it; the others' finished work is kept; re-run resumes.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any, Literal

from prefect import get_run_logger

from flows._flow import kubetrain_flow
from kubetrain.cluster import (
    AnyStep,
    ClusterReport,
    ClusterRunError,
    ClusterStepError,
    Host,
    Inventory,
    control_plane_check,
    control_plane_steps,
    join_steps,
    load_inventory,
    nodes_ready_step,
    prepare_steps,
    render_full_plan,
    teardown_steps,
)
from tasks.cluster import (
    create_join_command,
    publish_cluster_plan,
    publish_cluster_report,
    run_host_steps,
)


def _load(inventory: str) -> Inventory:
    """Load and validate the inventory; log its warnings (e.g. an unsupported version)."""
    loaded = load_inventory(inventory)
    for warning in loaded.warnings:
        get_run_logger().warning("%s", warning)
    return loaded


def _run_on(
    report: ClusterReport,
    work: Sequence[tuple[Host, Sequence[AnyStep]]],
    dry_run: bool,
    label: str,
    inventory: Inventory,
) -> set[str]:
    """Run each host's steps in parallel (one task per host); return the failed host names."""
    futures = [
        (host, run_host_steps.submit(host, list(steps), dry_run, label, inventory.spec.wait))
        for host, steps in work
        if steps
    ]
    failed: set[str] = set()
    for host, future in futures:
        try:
            report.extend(future.result())
        except ClusterStepError as error:
            report.add_failure(host.name, error)
            failed.add(host.name)
    return failed


def _join(
    inventory: Inventory,
    report: ClusterReport,
    workers: Sequence[Host],
    dry_run: bool,
    prepare: bool,
) -> set[str]:
    """Join the given workers that are not joined yet (prepared first when asked)."""
    # A read-only look first, so a finished cluster gets no new token and no join.
    probe = ClusterReport(report.flow, dry_run=True)
    failed = _run_on(
        probe, [(host, join_steps(host, None)) for host in workers], True, "join-check", inventory
    )
    report.errors.extend(probe.errors)
    satisfied = {r.host for r in probe.results if r.status == "satisfied"}
    report.extend(r for r in probe.results if r.host in failed | satisfied)
    pending = [host for host in workers if host.name not in failed | satisfied]
    if not pending:
        return failed
    join = None
    if not dry_run:
        try:
            join = create_join_command(inventory)
        except ClusterStepError as error:
            report.errors.append(str(error))
            report.skip([h.name for h in pending], join_steps(pending[0], None), "no join command")
            return failed | {host.name for host in pending}
    work = [
        (host, (*(prepare_steps(inventory, host) if prepare else ()), *join_steps(host, join)))
        for host in pending
    ]
    return failed | _run_on(report, work, dry_run, "join", inventory)


def _finish(report: ClusterReport) -> dict[str, Any]:
    """Publish the report; raise if any host failed."""
    publish_cluster_report(report)
    if report.errors:
        raise ClusterRunError(
            report.summary() + "\n" + "\n".join(report.errors) + "\nFix the cause and re-run: "
            "finished steps are kept and skipped.",
            report,
        )
    return report.as_dict()


@kubetrain_flow(name="bootstrap-cluster", log_prints=False)
def bootstrap_cluster(
    inventory: str, dry_run: bool = True, work_pool: bool = False
) -> dict[str, Any]:
    """Prepare every node, init the control plane, join the workers, verify all Ready.

    Args:
        inventory: Path of the inventory YAML file on the machine running the flow (see
            infra/inventory.example.yaml).
        dry_run: Only run the read-only checks and list, per host and step, what would run.
            Set to false to change the machines.
        work_pool: After a successful bootstrap, run the ensure-work-pool flow with the
            fetched kubeconfig.
    """
    inv = _load(inventory)
    report = ClusterReport("bootstrap-cluster", dry_run)
    cp, workers = inv.control_plane, inv.workers
    control, verify = control_plane_steps(inv), (nodes_ready_step(inv),)
    failed = _run_on(
        report, [(h, prepare_steps(inv, h)) for h in inv.hosts], dry_run, "prepare", inv
    )
    if cp.name in failed:
        why = f"control plane {cp.name} failed to prepare"
        report.skip([cp.name], (*control, *verify), why)
    else:
        failed |= _run_on(report, [(cp, control)], dry_run, "init", inv)
        why = "the control plane is not initialized"
        report.skip([cp.name] if cp.name in failed else [], verify, why)
    if cp.name in failed:
        report.skip([w.name for w in workers if w.name not in failed], join_steps(cp, None), why)
        return _finish(report)
    failed |= _join(inv, report, [w for w in workers if w.name not in failed], dry_run, False)
    if failed:
        report.skip([cp.name], verify, "some hosts failed")
        return _finish(report)
    _run_on(report, [(cp, verify)], dry_run, "verify", inv)
    result = _finish(report)
    if work_pool and not dry_run:
        # Imported here: the work-pool flow pulls in prefect-kubernetes, which only it needs.
        from flows.work_pool import ensure_work_pool

        result["work_pool"] = ensure_work_pool(kubeconfig=str(inv.kubeconfig_path))
    return result


@kubetrain_flow(name="join-workers", log_prints=False)
def join_workers(inventory: str, dry_run: bool = True) -> dict[str, Any]:
    """Prepare and join every worker that is not joined yet, then wait until all are Ready.

    Args:
        inventory: Path of the inventory YAML file on the machine running the flow; workers
            listed there and not in the cluster yet are joined.
        dry_run: Only run the read-only checks and list what would run. Set to false to
            change the machines.
    """
    inv = _load(inventory)
    report = ClusterReport("join-workers", dry_run)
    # Only a check, even when not a dry run: joining never initializes a control plane.
    looked = ClusterReport("join-workers", dry_run=True)
    failed = _run_on(
        looked, [(inv.control_plane, (control_plane_check(inv),))], True, "control-plane-check", inv
    )
    if failed or looked.results[-1].status != "satisfied":
        report.extend(looked.results)
        report.errors.extend(looked.errors)
        report.errors.append(
            f"control plane {inv.control_plane.label} is not initialized (or not reachable): "
            "run `kubetrain cluster bootstrap --inventory … --no-dry-run` first"
        )
        return _finish(report)
    failed = _join(inv, report, list(inv.workers), dry_run, prepare=True)
    if not failed:
        _run_on(report, [(inv.control_plane, (nodes_ready_step(inv),))], dry_run, "verify", inv)
    return _finish(report)


@kubetrain_flow(name="teardown-cluster", log_prints=False)
def teardown_cluster(
    inventory: str, dry_run: bool = True, purge_packages: bool | None = None
) -> dict[str, Any]:
    """kubeadm reset on every host, CNI and kubeconfig files removed, packages purged if asked.

    Args:
        inventory: Path of the inventory YAML file on the machine running the flow.
        dry_run: Only run the read-only checks and list what would run. Set to false to
            change the machines (teardown is destructive).
        purge_packages: Also purge kubelet, kubeadm, kubectl and containerd and remove the
            Kubernetes package repository. Empty means the inventory's purge_packages setting.
    """
    inv = _load(inventory)
    purge = inv.spec.purge_packages if purge_packages is None else purge_packages
    report = ClusterReport("teardown-cluster", dry_run)
    steps = teardown_steps(inv, purge)
    _run_on(report, [(host, steps) for host in inv.hosts], dry_run, "teardown", inv)
    if not dry_run and inv.kubeconfig_path.exists():
        get_run_logger().info(
            "%s still holds the old cluster's credentials; delete it if you no longer need it",
            inv.kubeconfig_path,
        )
    return _finish(report)


@kubetrain_flow(name="plan-cluster", log_prints=False)
def plan_cluster(
    inventory: str, flow_name: Literal["bootstrap", "join", "teardown"] = "bootstrap"
) -> str:
    """Show the exact commands a cluster flow would run on every host, without connecting.

    Args:
        inventory: Path of the inventory YAML file on the machine running the flow.
        flow_name: Which flow to plan: bootstrap, join or teardown.
    """
    text = render_full_plan(_load(inventory), flow_name)
    publish_cluster_plan(text, flow_name)
    return text


if __name__ == "__main__":  # `python -m flows.cluster X …` is `kubetrain cluster X …`
    import sys

    from kubetrain.cli import main

    main(["cluster", *sys.argv[1:]])
