"""The cluster flows against stand-in hosts: one real OpenSSH sshd per host on 127.0.0.2-4.

Not virtual machines and no Kubernetes: the system tools (kubeadm, kubectl, apt-get, systemctl,
swapoff, modprobe, sysctl, containerd, curl, gpg, sudo …) are stand-in scripts first on each
host's PATH (tests/standins/), logging every call and keeping per-host state in a fake root.
The flows, SSH (kubetrain/ssh.py, host keys verified), sudo wrapping, shell checks and the Prefect
server are real.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flows.cluster import bootstrap_cluster, join_workers, teardown_cluster
from kubetrain.cli import build_app
from kubetrain.cluster import ClusterRunError, InventoryError
from kubetrain.cluster.versions import DEFAULT_FLANNEL, DEFAULT_KUBERNETES
from tests.standins.hosts import StandinCluster

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not Path("/usr/sbin/sshd").exists(),
    reason="stand-in hosts need root and openssh-server (they create users and run sshd)",
)

PREPARE_TOOLS = {
    "sudo",
    "swapon",
    "swapoff",
    "modprobe",
    "sysctl",
    "apt-get",
    "apt-mark",
    "dpkg-query",
    "systemctl",
    "containerd",
    "curl",
    "gpg",
}
PREPARE_STEPS = [
    "swap-off",
    "kernel-modules",
    "sysctl",
    "containerd",
    "kubernetes-apt-repo",
    "kubernetes-packages",
    "kubelet-enabled",
]


@pytest.fixture
def hosts(tmp_path: Path, prefect_server: object) -> Iterator[StandinCluster]:
    """A fresh control plane and two workers as stand-in hosts, with their inventory."""
    with StandinCluster(tmp_path) as cluster:
        yield cluster


def statuses(result: dict, host: str) -> dict[str, str]:
    return {r["step"]: r["status"] for r in result["results"] if r["host"] == host}


def nodes_registered(cluster: StandinCluster) -> set[str]:
    nodes = cluster.cluster_state / "nodes"
    return {path.name for path in nodes.iterdir()} if nodes.exists() else set()


def test_dry_run_on_fresh_hosts_lists_every_step_and_changes_nothing(hosts: StandinCluster):
    before = {host.name: host.snapshot() for host in hosts.hosts}

    # No dry_run given: the safe default only looks.
    result = bootstrap_cluster(inventory=str(hosts.inventory_path))

    assert result["dry_run"] is True
    assert result["changed"] is False
    for host in hosts.hosts:
        assert host.snapshot() == before[host.name], f"{host.name} changed in a dry run"
        steps = statuses(result, host.name)
        assert [steps[name] for name in PREPARE_STEPS] == ["would-apply"] * len(PREPARE_STEPS)
        # Only read-only tools were called, and never kubeadm.
        assert host.tools() <= {"sudo", "swapon", "sysctl", "dpkg-query", "systemctl", "kubectl"}
        assert not host.calls_of("swapoff")
    assert statuses(result, "cp-1")["kubeadm-init"] == "would-apply"
    assert statuses(result, "worker-1")["kubeadm-join"] == "would-apply"
    assert not hosts.kubeconfig_path.exists()
    text = result["text"]
    assert "would-apply" in text
    assert "check exited 1" in text
    assert "kubeadm init --apiserver-advertise-address=127.0.0.2 --control-plane-endpoint" in text
    assert "--token <fresh token>" in text

    # The CLI: a dry-run teardown of fresh hosts has nothing to do and exits 0.
    argv = ["cluster", "teardown", "--inventory", str(hosts.inventory_path), "--dry-run"]
    cli = CliRunner().invoke(build_app(argv), argv)
    assert cli.exit_code == 0, cli.output
    assert "teardown-cluster: dry run: nothing changed; nothing would change" in cli.output
    for host in hosts.hosts:
        assert host.snapshot() == before[host.name]


def test_bootstrap_grow_rerun_applies_nothing_teardown_twice(
    hosts: StandinCluster, monkeypatch: pytest.MonkeyPatch
):
    # Bootstrap with one worker, then grow the cluster with a second one through join-workers.
    hosts.host("worker-1").install_optional("ipvsadm")  # kube-proxy in IPVS mode there
    full = hosts.inventory()
    hosts.write_inventory(workers=full["workers"][:1])
    first_result = bootstrap_cluster(inventory=str(hosts.inventory_path), dry_run=False)
    assert first_result["errors"] == []
    assert nodes_registered(hosts) == {"cp-1", "worker-1"}
    assert hosts.host("worker-2").calls() == []
    hosts.write_inventory()

    grown = join_workers(inventory=str(hosts.inventory_path), dry_run=False)

    assert grown["errors"] == []
    assert statuses(grown, "worker-1") == {"kubeadm-join": "satisfied"}
    assert statuses(grown, "cp-1") == {"nodes-ready": "applied"}
    assert statuses(grown, "worker-2")["kubeadm-join"] == "applied"
    assert nodes_registered(hosts) == {"cp-1", "worker-1", "worker-2"}
    result = {"results": first_result["results"] + grown["results"]}
    for host in hosts.hosts:
        assert host.tools() >= PREPARE_TOOLS, f"{host.name}: {PREPARE_TOOLS - host.tools()}"
        assert "kubeadm" in host.tools()
        steps = statuses(result, host.name)
        assert all(steps[name] == "applied" for name in PREPARE_STEPS), steps
        assert "# /swap.img" in (host.root / "etc/fstab").read_text()
        assert (host.root / "etc/modules-load.d/k8s.conf").read_text() == "overlay\nbr_netfilter\n"
        assert "net.ipv4.ip_forward = 1" in (host.root / "etc/sysctl.d/k8s.conf").read_text()
        assert "SystemdCgroup = true" in (host.root / "etc/containerd/config.toml").read_text()
        held = sorted(p.name for p in (host.state / "held").iterdir())
        assert held == ["kubeadm", "kubectl", "kubelet"]
        assert (host.state / "dpkg" / "kubeadm").read_text().startswith(f"{DEFAULT_KUBERNETES}.")
        assert (host.state / "systemd" / "kubelet.enabled").exists()
    cp = hosts.control_plane
    assert "kubectl" in cp.tools()
    assert cp.calls_of("kubeadm", "init") == [
        [
            "init",
            "--apiserver-advertise-address=127.0.0.2",
            "--control-plane-endpoint=127.0.0.2:6443",
            "--apiserver-cert-extra-sans=127.0.0.2",
            "--node-name=cp-1",
            "--pod-network-cidr=10.244.0.0/16",
        ]
    ]
    assert (
        hosts.cluster_state / "cni-annotation"
    ).read_text() == f"flannel {DEFAULT_FLANNEL} 10.244.0.0/16"
    # One fresh token per join phase: bootstrap (worker-1), then join-workers (worker-2).
    assert len(cp.calls_of("kubeadm", "token", "create")) == 2
    for worker in hosts.workers:
        (join,) = worker.calls_of("kubeadm", "join")
        assert join[1] == "127.0.0.2:6443"
        assert join[-1] == f"--node-name={worker.name}"
    kubeconfig = hosts.kubeconfig_path
    assert kubeconfig.stat().st_mode & 0o777 == 0o600
    assert kubeconfig.read_bytes() == (cp.root / "etc/kubernetes/admin.conf").read_bytes()
    assert (cp.sshd.home / ".kube" / "config").stat().st_mode & 0o777 == 0o600
    assert "server: https://127.0.0.2:6443" in kubeconfig.read_text()

    # A second bootstrap and a join change nothing and say so.
    snapshots = {host.name: host.snapshot() for host in hosts.hosts}
    for host in hosts.hosts:
        host.clear_calls()
    handed_over: list[dict[str, object]] = []

    def fake_ensure_work_pool(**kwargs: object) -> dict[str, object]:
        handed_over.append(kwargs)
        return {"pool": "kubetrain-k8s"}

    monkeypatch.setattr("flows.work_pool.ensure_work_pool", fake_ensure_work_pool)
    again = bootstrap_cluster(inventory=str(hosts.inventory_path), dry_run=False, work_pool=True)
    joined = join_workers(inventory=str(hosts.inventory_path), dry_run=False)
    assert handed_over == [{"kubeconfig": str(hosts.kubeconfig_path)}]

    for rerun in (again, joined):
        assert rerun["changed"] is False
        assert {r["status"] for r in rerun["results"]} == {"satisfied"}
        assert "nothing to do" in rerun["summary"]
    for host in hosts.hosts:
        assert not host.calls_of("kubeadm", "init")
        assert not host.calls_of("kubeadm", "join")
        assert not host.calls_of("apt-get")
        assert not host.calls_of("swapoff")
        after = host.snapshot()
        changed = {k for k in after if after[k] != snapshots[host.name].get(k)}
        assert changed == set(), f"{host.name} changed on a re-run: {changed}"
    assert not hosts.control_plane.calls_of("kubeadm", "token")

    # Teardown resets every host; a second teardown finds nothing to do.
    assert (hosts.workers[0].root / "etc/cni/net.d/10-flannel.conflist").exists()
    first = teardown_cluster(
        inventory=str(hosts.inventory_path), dry_run=False, purge_packages=True
    )

    assert first["errors"] == []
    assert first["changed"] is True
    for host in hosts.hosts:
        assert host.calls_of("kubeadm", "reset") == [["reset", "-f"]]
        assert not (host.root / "etc/kubernetes/kubelet.conf").exists()
        assert not (host.root / "etc/cni/net.d").exists()
        assert not (host.sshd.home / ".kube" / "config").exists()
        assert not (host.state / "dpkg" / "kubeadm").exists()
        assert not list((host.state / "held").iterdir())
    assert nodes_registered(hosts) == set()
    # kubeadm reset leaves interfaces and rules; teardown removes kube-proxy's and flannel's only.
    for host in hosts.hosts:
        assert not list((host.state / "net" / "links").iterdir()), host.name
        for family in ("v4", "v6"):
            rules = host.iptables(family)
            assert "KUBE-" not in rules
            assert "FLANNEL-" not in rules
            assert "-A OPERATOR-SSH -s 192.0.2.0/24" in rules
            assert "-A POSTROUTING -o eth0 -j MASQUERADE" in rules
        assert (host.state / "net" / "nft").read_text() == "table inet operator\n"
    assert hosts.host("worker-1").calls_of("ipvsadm", "--clear") == [["--clear"]]
    assert not (hosts.host("worker-1").state / "net" / "ipvs").exists()
    assert not hosts.host("worker-2").calls_of("ipvsadm")

    for host in hosts.hosts:
        host.clear_calls()
    second = teardown_cluster(
        inventory=str(hosts.inventory_path), dry_run=False, purge_packages=True
    )

    assert second["errors"] == []
    assert second["changed"] is False
    assert "nothing to do" in second["summary"]
    for host in hosts.hosts:
        assert not host.calls_of("kubeadm")
        assert not host.calls_of("apt-get")
        assert not host.calls_of("ip", "link", "delete")
        assert not host.calls_of("iptables-restore")


def test_worker_failing_mid_join_is_reported_others_join_and_rerun_finishes(
    hosts: StandinCluster,
):
    for host in hosts.hosts:
        host.seed_prepared()  # this test is about joining; preparing is covered above
    hosts.host("worker-2").fail_once("kubeadm-join")

    with pytest.raises(ClusterRunError) as failure:
        bootstrap_cluster(inventory=str(hosts.inventory_path), dry_run=False)

    message = str(failure.value)
    assert "host worker-2 (127.0.0.4), step kubeadm-join" in message
    assert "exit code 1" in message
    assert "error execution phase kubelet-start: timed out waiting for the condition" in message
    assert "--token <redacted>" in message
    report = failure.value.report.as_dict()
    assert statuses(report, "worker-1")["kubeadm-join"] == "applied"
    assert statuses(report, "worker-2")["kubeadm-join"] == "failed"
    assert statuses(report, "cp-1")["nodes-ready"] == "skipped"
    assert nodes_registered(hosts) == {"cp-1", "worker-1"}
    # The token never reaches a message or the report.
    token = hosts.workers[0].calls_of("kubeadm", "join")[0][3]
    assert token not in message
    assert token not in report["text"]

    for host in hosts.hosts:
        host.clear_calls()
    result = bootstrap_cluster(inventory=str(hosts.inventory_path), dry_run=False)

    assert result["errors"] == []
    assert nodes_registered(hosts) == {"cp-1", "worker-1", "worker-2"}
    assert statuses(result, "worker-1")["kubeadm-join"] == "satisfied"
    assert statuses(result, "worker-2")["kubeadm-join"] == "applied"
    assert not hosts.host("worker-1").calls_of("kubeadm")
    assert not hosts.control_plane.calls_of("kubeadm", "init")
    # The failed join left files behind: they were reset before joining again.
    assert hosts.host("worker-2").calls_of("kubeadm", "reset") == [["reset", "-f"]]


def test_init_failing_stops_before_any_worker_joins(hosts: StandinCluster):
    for host in hosts.hosts:
        host.seed_prepared()
    hosts.control_plane.fail_once("kubeadm-init")

    with pytest.raises(ClusterRunError) as failure:
        bootstrap_cluster(inventory=str(hosts.inventory_path), dry_run=False)

    message = str(failure.value)
    assert "host cp-1 (127.0.0.2), step kubeadm-init" in message
    assert "could not initialize a Kubernetes cluster" in message
    report = failure.value.report.as_dict()
    for worker in hosts.workers:
        assert not worker.calls_of("kubeadm"), f"{worker.name} was touched by kubeadm"
        assert statuses(report, worker.name)["kubeadm-join"] == "skipped"
        assert statuses(report, worker.name)["kubelet-enabled"] == "satisfied"
    assert statuses(report, "cp-1")["cni"] == "skipped"
    assert not hosts.kubeconfig_path.exists()


# containerd 1.7 writes config version 2, 2.0 version 3 with cni.bin_dir, 2.1+ version 3 with
# the list cni.bin_dirs (see tests/standins/standin.py for each default).
CONTAINERD_RELEASES = {
    "1.7": ("1.7.24-0ubuntu1~24.04.1", "io.containerd.grpc.v1.cri", "bin_dir"),
    "2.0": ("2.0.5-0ubuntu1", "io.containerd.cri.v1.runtime", "bin_dir"),
    "2.1": ("2.1.4-0ubuntu1", "io.containerd.cri.v1.runtime", "bin_dirs"),
}


@pytest.mark.parametrize("release", sorted(CONTAINERD_RELEASES))
def test_containerd_gets_systemd_cgroup_and_cni_bin_dir_in_its_own_config_version(
    tmp_path: Path, release: str
):
    import tomllib

    from kubetrain.cluster import execute_host, load_inventory, prepare_steps

    version, cri, bin_key = CONTAINERD_RELEASES[release]
    with StandinCluster(tmp_path, workers=0) as hosts:
        host = hosts.control_plane
        host.offer("containerd", version)
        inventory = load_inventory(hosts.write_inventory(single_node=True))
        results = execute_host(
            inventory.control_plane,
            prepare_steps(inventory, inventory.control_plane),
            False,
            lambda _: None,
        )
        assert {r.step: r.status for r in results}["containerd"] == "applied"
        config = tomllib.loads((host.root / "etc/containerd/config.toml").read_text())
        assert config["version"] == (2 if release == "1.7" else 3)
        plugin = config["plugins"][cri]
        assert plugin["containerd"]["runtimes"]["runc"]["options"]["SystemdCgroup"] is True
        # The sudo stand-in maps /opt/cni into the host's fake root.
        bin_dir = str(host.root / "opt/cni/bin")
        assert plugin["cni"][bin_key] == ([bin_dir] if bin_key == "bin_dirs" else bin_dir)
        assert host.calls_of("containerd", "config", "dump")

        again = execute_host(
            inventory.control_plane,
            prepare_steps(inventory, inventory.control_plane),
            False,
            lambda _: None,
        )
        assert {r.status for r in again} == {"satisfied"}


def test_single_node_cluster_untaints_its_control_plane_once(
    tmp_path: Path, prefect_server: object
):
    with StandinCluster(tmp_path, workers=0) as hosts:
        cp = hosts.control_plane
        cp.seed_prepared()
        hosts.write_inventory()
        with pytest.raises(InventoryError, match="single_node: true"):
            bootstrap_cluster(inventory=str(hosts.inventory_path), dry_run=False)
        assert not cp.calls_of("kubeadm")

        hosts.write_inventory(single_node=True)
        result = bootstrap_cluster(inventory=str(hosts.inventory_path), dry_run=False)

        assert statuses(result, "cp-1")["control-plane-schedulable"] == "applied"
        assert hosts.node("cp-1")["taints"] == []
        again = bootstrap_cluster(inventory=str(hosts.inventory_path), dry_run=False)
        assert statuses(again, "cp-1")["control-plane-schedulable"] == "satisfied"
        untaints = [call for call in cp.calls_of("kubectl") if "taint" in call]
        assert len(untaints) == 1


def test_several_nics_and_nat_node_ip_iface_sans_and_a_reachable_kubeconfig(
    hosts: StandinCluster,
):
    # The operator reaches the control plane at its SSH address (127.0.0.2); inside the cluster
    # network it is 127.0.0.12, and every node has a node IP on that network.
    for host in hosts.hosts:
        host.seed_prepared()
    data = hosts.inventory()
    data["control_plane"] |= {"advertise_address": "127.0.0.12", "node_ip": "127.0.0.12"}
    data["workers"][0]["node_ip"] = "127.0.0.13"
    data["cni"] |= {"iface": "eth1"}
    hosts.write_inventory(**data)

    result = bootstrap_cluster(inventory=str(hosts.inventory_path), dry_run=False)

    assert result["errors"] == []
    cp = hosts.control_plane
    (init,) = cp.calls_of("kubeadm", "init")
    assert "--apiserver-advertise-address=127.0.0.12" in init
    assert "--control-plane-endpoint=127.0.0.12:6443" in init
    assert "--apiserver-cert-extra-sans=127.0.0.2" in init
    kubelet_args = "KUBELET_EXTRA_ARGS=--node-ip={}\n"
    assert (cp.root / "etc/default/kubelet").read_text() == kubelet_args.format("127.0.0.12")
    worker = hosts.workers[0]
    assert (worker.root / "etc/default/kubelet").read_text() == kubelet_args.format("127.0.0.13")
    assert not (hosts.workers[1].root / "etc/default/kubelet").exists()
    assert (hosts.cluster_state / "flannel-args").read_text().split() == [
        "--ip-masq",
        "--kube-subnet-mgr",
        "--iface=eth1",
    ]
    # The cluster's kubeconfig names the internal address; the operator's the reachable one.
    assert "server: https://127.0.0.12:6443" in (cp.root / "etc/kubernetes/admin.conf").read_text()
    fetched = hosts.kubeconfig_path.read_text()
    assert "server: https://127.0.0.2:6443" in fetched
    assert "127.0.0.12" not in fetched

    again = bootstrap_cluster(inventory=str(hosts.inventory_path), dry_run=False)
    assert {r["status"] for r in again["results"]} == {"satisfied"}
