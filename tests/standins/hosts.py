"""Stand-in hosts for the cluster flows: one real sshd per host on 127.0.0.x, stand-in tools.

Each host logs in as its own non-root user (so a command that misses its stand-in fails instead
of changing this machine), has the stand-ins first on PATH, and keeps its state (calls.log, a
fake root for /etc, /var/lib, …) in a directory of its own. These are NOT virtual machines and
no Kubernetes runs: kubeadm/kubectl are scripts that model what the flows rely on.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml

from kubetrain.cluster.versions import DEFAULT_FLANNEL, DEFAULT_KUBERNETES
from tests.sshd import Sshd
from tests.standins.standin import network_seed

STANDINS_DIR = Path(__file__).resolve().parent
FSTAB = (
    "# /etc/fstab: static file system information.\n"
    "UUID=0b1c2d3e-stand-in / ext4 errors=remount-ro 0 1\n"
    "/swap.img\tnone\tswap\tsw\t0\t0\n"
)


@dataclass
class StandinHost:
    """One stand-in host: its sshd, its node name and its state directory."""

    name: str
    address: str
    user: str
    state: Path
    sshd: Sshd

    @property
    def root(self) -> Path:
        """The fake root that sudo maps /etc, /var/lib, /opt/cni and /sys/module into."""
        return self.state / "root"

    def calls(self) -> list[dict[str, Any]]:
        """Every stand-in call on this host, in order: {"tool", "argv"}."""
        log = self.state / "calls.log"
        if not log.exists():
            return []
        return [json.loads(line) for line in log.read_text().splitlines() if line]

    def tools(self) -> set[str]:
        """Names of the stand-ins called on this host."""
        return {call["tool"] for call in self.calls()}

    def calls_of(self, tool: str, *prefix: str) -> list[list[str]]:
        """argv of each call of tool whose arguments start with prefix."""
        return [
            call["argv"]
            for call in self.calls()
            if call["tool"] == tool and call["argv"][: len(prefix)] == list(prefix)
        ]

    def clear_calls(self) -> None:
        """Forget the calls so far."""
        (self.state / "calls.log").unlink(missing_ok=True)

    def fail_once(self, what: str) -> None:
        """Make the next `what` call (e.g. "kubeadm-join") fail once."""
        marker = self.state / "fail-once" / what
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text("")
        # Shared by the root test process and the host's non-root user.
        os.chmod(marker.parent, 0o777)  # noqa: S103
        os.chmod(marker, 0o666)  # noqa: S103

    def install_optional(self, tool: str) -> None:
        """Put an optional tool's stand-in (tests/standins/optional/) on this host's PATH."""
        (self.state / "bin" / tool).symlink_to(STANDINS_DIR / "optional" / tool)

    def iptables(self, family: str = "v4") -> str:
        """This host's iptables rules in iptables-save form."""
        return (self.state / "net" / f"iptables.{family}").read_text()

    def offer(self, package: str, version: str) -> None:
        """Make this host's distribution offer another version of package (e.g. containerd 2.x)."""
        path = self.state / "offer" / package
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(version + "\n")
        for item in (path.parent, path):
            item.chmod(0o777 if item.is_dir() else 0o666)

    def seed_prepared(self, minor: str = DEFAULT_KUBERNETES) -> None:
        """Put the host in the state the prepare steps leave (as if prepared by hand earlier).

        For tests about later phases: the flow's prepare checks then find nothing to do.
        """
        from kubetrain.cluster import DEFAULT_PACKAGE_REPOSITORY, KEYRING

        root = self.root
        files = {
            "etc/fstab": FSTAB.replace("/swap.img", "# /swap.img"),
            "etc/modules-load.d/k8s.conf": "overlay\nbr_netfilter\n",
            "etc/sysctl.d/k8s.conf": "".join(
                f"{key} = 1\n"
                for key in (
                    "net.bridge.bridge-nf-call-iptables",
                    "net.bridge.bridge-nf-call-ip6tables",
                    "net.ipv4.ip_forward",
                )
            ),
            "etc/containerd/config.toml": (
                'version = 2\n[plugins."io.containerd.grpc.v1.cri".cni]\n'
                f'  bin_dir = "{root}/opt/cni/bin"\n'
                '[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]\n'
                "  SystemdCgroup = true\n"
            ),
            KEYRING.lstrip("/"): "stand-in keyring",
            "etc/apt/sources.list.d/kubernetes.list": (
                f"deb [signed-by={root}{KEYRING}] {DEFAULT_PACKAGE_REPOSITORY}/v{minor}/deb/ /\n"
            ),
        }
        for relative, text in files.items():
            (root / relative).parent.mkdir(parents=True, exist_ok=True)
            (root / relative).write_text(text)
        for module in ("overlay", "br_netfilter"):
            (root / "sys" / "module" / module).mkdir(parents=True, exist_ok=True)
        state = {
            "swap": "off\n",
            "apt-updated": "",
            "dpkg/containerd": "1.7.24-0ubuntu1~24.04.1\n",
            "systemd/containerd.enabled": "",
            "systemd/containerd.active": "",
            "systemd/kubelet.enabled": "",
        }
        for key in ("net.bridge.bridge-nf-call-iptables", "net.bridge.bridge-nf-call-ip6tables"):
            state[f"sysctl/{key}"] = "1\n"
        state["sysctl/net.ipv4.ip_forward"] = "1\n"
        for package in ("kubelet", "kubeadm", "kubectl"):
            state[f"dpkg/{package}"] = f"{minor}.4-1.1\n"
            state[f"held/{package}"] = ""
        for package in ("kubernetes-cni", "cri-tools"):
            state[f"dpkg/{package}"] = "1.5.1-1.1\n"
        for relative, text in state.items():
            (self.state / relative).parent.mkdir(parents=True, exist_ok=True)
            (self.state / relative).write_text(text)
        for path in [self.state, *self.state.rglob("*")]:
            path.chmod(0o777 if path.is_dir() else 0o666)

    def snapshot(self) -> dict[str, bytes]:
        """Every state file except the call log (to prove a run changed nothing)."""
        files = {}
        for path in sorted(self.state.rglob("*")):
            if path.is_file() and path.name != "calls.log":
                files[str(path.relative_to(self.state))] = path.read_bytes()
            elif path.is_dir():
                files[str(path.relative_to(self.state)) + "/"] = b""
        return files


class StandinCluster:
    """A control plane and workers as stand-in hosts, plus an inventory file pointing at them."""

    def __init__(self, workdir: Path, workers: int = 2, wait_timeout: float = 10.0) -> None:
        self.workdir = workdir
        self.base = Path(tempfile.mkdtemp(prefix="kt-standin-hosts-"))
        self.base.chmod(0o755)
        self.cluster_state = self.base / "cluster"
        self.wait_timeout = wait_timeout
        names = ["cp-1"] + [f"worker-{index}" for index in range(1, workers + 1)]
        users = ["kt-cp"] + [f"kt-w{index}" for index in range(1, workers + 1)]
        self.hosts: list[StandinHost] = []
        for index, (name, user) in enumerate(zip(names, users, strict=True)):
            address = f"127.0.0.{index + 2}"
            state = self.base / name
            self.hosts.append(
                StandinHost(
                    name=name,
                    address=address,
                    user=user,
                    state=state,
                    sshd=Sshd(
                        workdir / f"sshd-{name}",
                        address=address,
                        user=user,
                        extra_config=[
                            f"SetEnv PATH={STANDINS_DIR}:{state}/bin:/usr/bin:/bin "
                            f"KUBETRAIN_STANDIN_STATE={state} "
                            f"KUBETRAIN_STANDIN_CLUSTER={self.cluster_state}"
                        ],
                    ),
                )
            )
        self.inventory_path = workdir / "inventory.yaml"
        self.kubeconfig_path = workdir / "operator" / "kubeconfig"

    @property
    def control_plane(self) -> StandinHost:
        """The control-plane host."""
        return self.hosts[0]

    @property
    def workers(self) -> list[StandinHost]:
        """The worker hosts."""
        return self.hosts[1:]

    def node(self, name: str) -> dict[str, Any]:
        """The stand-in API server's record of a registered node (taints, …)."""
        record: dict[str, Any] = json.loads((self.cluster_state / "nodes" / name).read_text())
        return record

    def host(self, name: str) -> StandinHost:
        """The host with this node name."""
        return next(host for host in self.hosts if host.name == name)

    def __enter__(self) -> StandinCluster:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Seed each host's state (swap on, a swap line in fstab), start sshds, write inventory."""
        # The test users cannot write __pycache__ here: compile once, or every call recompiles.
        subprocess.run(
            ["/usr/bin/python3", "-m", "compileall", "-q", str(STANDINS_DIR)], check=True
        )
        self.cluster_state.mkdir()
        self.cluster_state.chmod(0o777)
        for host in self.hosts:
            host.state.mkdir()
            # What a fresh Ubuntu host already has.
            (host.root / "etc" / "apt" / "sources.list.d").mkdir(parents=True)
            (host.root / "etc" / "fstab").write_text(FSTAB)
            (host.state / "swap").write_text("on\n")
            (host.state / "bin").mkdir()
            network_seed(host.state)
            for path in [host.state, *host.state.rglob("*")]:
                path.chmod(0o777 if path.is_dir() else 0o666)
        try:
            for host in self.hosts:
                host.sshd.start()
                shutil.rmtree(host.sshd.home / ".kube", ignore_errors=True)
        except BaseException:
            self.stop()
            raise
        known_hosts = self.workdir / "known_hosts"
        known_hosts.write_text("".join(h.sshd.known_hosts.read_text() for h in self.hosts))
        self.write_inventory()

    def inventory(self) -> dict[str, Any]:
        """The inventory data for these hosts (each with its own user and key)."""

        def entry(host: StandinHost) -> dict[str, Any]:
            return {
                "name": host.name,
                "address": host.address,
                "port": host.sshd.port,
                "user": host.user,
                "key": {"path": str(host.sshd.client_key)},
            }

        return {
            "kubernetes_version": DEFAULT_KUBERNETES,
            "pod_network_cidr": "10.244.0.0/16",
            "cni": {"name": "flannel", "version": DEFAULT_FLANNEL},
            "kubeconfig_path": str(self.kubeconfig_path),
            "ssh": {
                "sudo": True,
                "known_hosts": str(self.workdir / "known_hosts"),
                "key": {"path": str(self.control_plane.sshd.client_key)},
                "command_timeout": 30,
                "check_timeout": 15,
                "connect_timeout": 5,
            },
            "control_plane": entry(self.control_plane),
            "workers": [entry(host) for host in self.workers],
            "wait": {"timeout": self.wait_timeout, "interval": 0.05},
        }

    def write_inventory(self, **overrides: Any) -> Path:
        """Write the inventory file (with top-level overrides) and return its path."""
        data = self.inventory() | overrides
        self.inventory_path.write_text(yaml.safe_dump(data, sort_keys=False))
        return self.inventory_path

    def stop(self) -> None:
        """Stop every sshd, remove the users' ~/.kube and the state directories."""
        for host in self.hosts:
            host.sshd.stop()
            if host.sshd.home != Path():
                shutil.rmtree(host.sshd.home / ".kube", ignore_errors=True)
        shutil.rmtree(self.base, ignore_errors=True)
