"""Infra flows: bootstrap, grow and tear down a kubeadm cluster over SSH, idempotently.

    python -m flows.cluster bootstrap --inventory infra/inventory.yaml --dry-run
    python -m flows.cluster bootstrap --inventory infra/inventory.yaml
    python -m flows.cluster join      --inventory infra/inventory.yaml
    python -m flows.cluster teardown  --inventory infra/inventory.yaml [--purge-packages]

Every step is check-then-apply (kubetrain/cluster): a second run changes nothing and says so;
--dry-run runs only the read-only checks and lists, per host and step, what would run and why.
A failed host stops only what depends on it; the others' finished work is kept; re-run resumes.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from prefect import flow, get_run_logger
from prefect.futures import PrefectFuture

from kubetrain.cluster import (
    ClusterReport,
    ClusterRunError,
    ClusterStepError,
    Host,
    Inventory,
    InventoryError,
    Step,
    StepResult,
    control_plane_steps,
    join_steps,
    load_inventory,
    nodes_ready_step,
    prepare_steps,
    teardown_steps,
)
from tasks.cluster import create_join_command, run_host_steps


def _gather(
    report: ClusterReport, futures: Sequence[tuple[Host, PrefectFuture[list[StepResult]]]]
) -> set[str]:
    """Wait for every host's task; record results and errors; return the failed host names."""
    failed: set[str] = set()
    for host, future in futures:
        try:
            report.extend(future.result())
        except ClusterStepError as error:
            report.extend(error.results)
            if not error.results:
                report.results.append(
                    StepResult(host.name, error.step, "failed", str(error), [error.command])
                )
            report.errors.append(str(error))
            failed.add(host.name)
    return failed


def _run_on(
    report: ClusterReport,
    work: Sequence[tuple[Host, Sequence[Step]]],
    dry_run: bool,
    label: str,
    inventory: Inventory,
) -> set[str]:
    """Run each host's steps in parallel (one task per host); return the failed host names."""
    futures = [
        (host, run_host_steps.submit(host, list(steps), dry_run, label, inventory.wait))
        for host, steps in work
        if steps
    ]
    return _gather(report, futures)


def _skip(report: ClusterReport, hosts: Sequence[Host], steps: Sequence[Step], why: str) -> None:
    report.extend(
        StepResult(host.name, step.name, "skipped", why) for host in hosts for step in steps
    )


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
    pending = []
    for host in workers:
        looked = [result for result in probe.results if result.host == host.name]
        if host.name in failed or looked[0].status == "satisfied":
            report.extend(looked)
        else:
            pending.append(host)
    if not pending:
        return failed
    join = None
    if not dry_run:
        try:
            join = create_join_command(inventory)
        except ClusterStepError as error:
            report.errors.append(str(error))
            _skip(report, pending, join_steps(pending[0], None), "no join command")
            return failed | {host.name for host in pending}
    work = [
        (host, (*(prepare_steps(inventory) if prepare else ()), *join_steps(host, join)))
        for host in pending
    ]
    return failed | _run_on(report, work, dry_run, "join", inventory)


def _finish(report: ClusterReport) -> dict[str, Any]:
    """Log and publish the report; raise if any host failed."""
    logger = get_run_logger()
    text = report.render()
    logger.info("%s", text)
    try:
        from prefect.artifacts import create_markdown_artifact

        create_markdown_artifact(
            markdown=f"# {report.summary()}\n\n```\n{text}\n```\n",
            key=report.flow,
            description=report.summary(),
        )
    except Exception as error:  # the report is also in the logs and the return value
        logger.warning("could not create the report artifact: %s", error)
    if report.errors:
        raise ClusterRunError(
            report.summary() + "\n" + "\n".join(report.errors) + "\nFix the cause and re-run: "
            "finished steps are kept and skipped.",
            report,
        )
    return report.as_dict()


@flow(name="bootstrap-cluster", log_prints=False)
def bootstrap_cluster(
    inventory: str, dry_run: bool = False, work_pool: bool = False
) -> dict[str, Any]:
    """Prepare every node, init the control plane, join the workers, verify all Ready.

    With work_pool, hand the fetched kubeconfig to the ensure-work-pool flow afterwards.
    """
    inv = load_inventory(inventory)
    report = ClusterReport("bootstrap-cluster", dry_run)
    prepare = prepare_steps(inv)
    failed = _run_on(report, [(host, prepare) for host in inv.hosts], dry_run, "prepare", inv)
    control = control_plane_steps(inv)
    verify = (nodes_ready_step(inv),)
    if inv.control_plane.name in failed:
        why = f"control plane {inv.control_plane.name} failed to prepare"
        _skip(report, [inv.control_plane], (*control, *verify), why)
        _skip(
            report,
            [w for w in inv.workers if w.name not in failed],
            join_steps(inv.control_plane, None),
            why,
        )
        return _finish(report)
    failed |= _run_on(report, [(inv.control_plane, control)], dry_run, "init", inv)
    ready_workers = [w for w in inv.workers if w.name not in failed]
    if inv.control_plane.name in failed:
        why = "the control plane is not initialized"
        _skip(report, ready_workers, join_steps(inv.control_plane, None), why)
        _skip(report, [inv.control_plane], verify, why)
        return _finish(report)
    failed |= _join(inv, report, ready_workers, dry_run, prepare=False)
    if failed:
        _skip(report, [inv.control_plane], verify, "some hosts failed")
        return _finish(report)
    _run_on(report, [(inv.control_plane, verify)], dry_run, "verify", inv)
    result = _finish(report)
    if work_pool and not dry_run:
        # Imported here: the work-pool flow pulls in prefect-kubernetes, which only it needs.
        from flows.work_pool import ensure_work_pool

        result["work_pool"] = ensure_work_pool(kubeconfig=str(inv.kubeconfig_path))
    return result


@flow(name="join-workers", log_prints=False)
def join_workers(inventory: str, dry_run: bool = False) -> dict[str, Any]:
    """Prepare and join every worker that is not joined yet, then wait until all are Ready."""
    inv = load_inventory(inventory)
    report = ClusterReport("join-workers", dry_run)
    init_check = control_plane_steps(inv)[0]
    failed = _run_on(
        report,
        [(inv.control_plane, (Step(init_check.name, init_check.summary, init_check.check),))],
        True,  # only check: joining never initializes a control plane
        "control-plane-check",
        inv,
    )
    if failed or report.results[-1].status != "satisfied":
        report.errors.append(
            f"control plane {inv.control_plane.label} is not initialized (or not reachable): "
            "run `python -m flows.cluster bootstrap --inventory …` first"
        )
        return _finish(report)
    report.results.pop()  # a satisfied precondition, not a step of this flow
    failed = _join(inv, report, list(inv.workers), dry_run, prepare=True)
    if not failed:
        _run_on(report, [(inv.control_plane, (nodes_ready_step(inv),))], dry_run, "verify", inv)
    return _finish(report)


@flow(name="teardown-cluster", log_prints=False)
def teardown_cluster(
    inventory: str, dry_run: bool = False, purge_packages: bool | None = None
) -> dict[str, Any]:
    """kubeadm reset on every host, CNI and kubeconfig files removed, packages purged if asked."""
    inv = load_inventory(inventory)
    purge = inv.purge_packages if purge_packages is None else purge_packages
    report = ClusterReport("teardown-cluster", dry_run)
    steps = teardown_steps(inv, purge)
    _run_on(report, [(host, steps) for host in inv.hosts], dry_run, "teardown", inv)
    if not dry_run and inv.kubeconfig_path.exists():
        get_run_logger().info(
            "%s still holds the old cluster's credentials; delete it if you no longer need it",
            inv.kubeconfig_path,
        )
    return _finish(report)


# -- CLI -------------------------------------------------------------------------------------

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Bootstrap, grow and tear down a kubeadm cluster over SSH (infra/inventory.example.yaml).",
)
InventoryOption = Annotated[
    Path, typer.Option("--inventory", "-i", help="Inventory YAML (infra/inventory.example.yaml).")
]
DryRunOption = Annotated[
    bool, typer.Option("--dry-run", help="Only run the read-only checks; list what would run.")
]


def _validate(inventory: Path) -> None:
    try:
        load_inventory(inventory)
    except InventoryError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None


def _report(result: dict[str, Any]) -> None:
    typer.echo(result["text"])


def _invoke(flow_fn: Any, **kwargs: Any) -> None:
    try:
        result = flow_fn(**kwargs)
    except ClusterRunError as error:
        typer.echo(error.report.render(), err=True)
        raise typer.Exit(1) from None
    _report(result)


@app.command()
def bootstrap(
    inventory: InventoryOption,
    dry_run: DryRunOption = False,
    work_pool: Annotated[
        bool,
        typer.Option(
            "--work-pool",
            help="Then run ensure-work-pool with the fetched kubeconfig (flows/work_pool.py).",
        ),
    ] = False,
) -> None:
    """Prepare all nodes, init the control plane, join the workers, wait until all are Ready."""
    _validate(inventory)
    _invoke(bootstrap_cluster, inventory=str(inventory), dry_run=dry_run, work_pool=work_pool)


@app.command()
def join(inventory: InventoryOption, dry_run: DryRunOption = False) -> None:
    """Prepare and join workers that are not in the cluster yet."""
    _validate(inventory)
    _invoke(join_workers, inventory=str(inventory), dry_run=dry_run)


@app.command()
def teardown(
    inventory: InventoryOption,
    dry_run: DryRunOption = False,
    purge_packages: Annotated[
        bool | None,
        typer.Option(
            "--purge-packages/--keep-packages",
            help="Also purge kubelet, kubeadm, kubectl, containerd (default: the inventory's).",
        ),
    ] = None,
) -> None:
    """kubeadm reset -f on every host, remove CNI and kubeconfig files; safe to run twice."""
    _validate(inventory)
    _invoke(
        teardown_cluster, inventory=str(inventory), dry_run=dry_run, purge_packages=purge_packages
    )


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point for `python -m flows.cluster`."""
    app(args=list(argv) if argv is not None else sys.argv[1:], prog_name="python -m flows.cluster")


if __name__ == "__main__":
    main()
