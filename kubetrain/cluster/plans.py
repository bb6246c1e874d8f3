"""The step catalogues: what prepare, control plane, join and teardown do on a host.

Pure functions of the inventory (no I/O), so a plan can be printed and reviewed without any
machine (see render_plan; tests/golden holds one per phase).
"""

from __future__ import annotations

import shlex

from kubetrain.cluster.inventory import Host, Inventory
from kubetrain.cluster.join import JoinCommand
from kubetrain.cluster.spec import DEFAULT_POD_CIDR
from kubetrain.cluster.steps import AnyStep, Command, FetchStep, Step, WaitStep

ADMIN_CONF = "/etc/kubernetes/admin.conf"
KUBECTL = f"kubectl --kubeconfig={ADMIN_CONF} --request-timeout=10s"
FLANNEL_MANIFEST_URL = (
    "https://github.com/flannel-io/flannel/releases/download/{version}/kube-flannel.yml"
)
KEYRING = "/etc/apt/keyrings/kubernetes-apt-keyring.gpg"
APT_LIST = "/etc/apt/sources.list.d/kubernetes.list"
KUBE_PACKAGES = ("kubelet", "kubeadm", "kubectl")
MODULES = ("overlay", "br_netfilter")
SYSCTLS = (
    "net.bridge.bridge-nf-call-iptables",
    "net.bridge.bridge-nf-call-ip6tables",
    "net.ipv4.ip_forward",
)
# Fresh cloud VMs run unattended-upgrades at first boot: wait for the dpkg lock, don't fail.
APT = "DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300"


def _sudo_prefix(host: Host) -> str:
    return "sudo -n " if host.sudo else ""


def _printf(content: str) -> str:
    # One line in the plan: printf expands the \n escapes (the content has no % or \).
    return f"printf {shlex.quote(content.replace(chr(10), chr(92) + 'n'))}"


def _file_is(path: str, content: str) -> str:
    return f"{_printf(content)} | cmp -s - {path}"


def _write_file(path: str, content: str) -> str:
    return f"mkdir -p {posix_dirname(path)} && {_printf(content)} > {path}"


def posix_dirname(path: str) -> str:
    """The directory part of a POSIX path."""
    return path.rsplit("/", 1)[0] or "/"


# containerd's config per version (docs/cri/config.md and docs/PLUGINS.md at
# https://github.com/containerd/containerd): 1.x writes version 2 with the CRI plugin at
# plugins."io.containerd.grpc.v1.cri"; 2.x writes version 3 with the runtime settings at
# plugins.'io.containerd.cri.v1.runtime', and its default no longer lists SystemdCgroup, so a
# sed of "SystemdCgroup = false" edits nothing there. CNI: 1.7 and 2.0 read cni.bin_dir; 2.1
# deprecated it for the list cni.bin_dirs (removal planned for 2.3; see containerd's
# RELEASES.md, "Deprecated features"). Distribution packages may default it to /usr/lib/cni,
# while flannel and kubernetes-cni install plugins into /opt/cni/bin.
CONTAINERD_CONFIG = "/etc/containerd/config.toml"
CNI_BIN_DIR = "/opt/cni/bin"
_RUNC_OPTIONS = {
    # sed regexes of each version's runc options table header ("." stands for the quote).
    version: rf"^[[:space:]]*\[plugins\..{plugin}.\.containerd\.runtimes\.runc\.options\]"
    for version, plugin in (
        (2, r"io\.containerd\.grpc\.v1\.cri"),
        (3, r"io\.containerd\.cri\.v1\.runtime"),
    )
}
# Passes when the effective config (`containerd config dump`) has SystemdCgroup = true in the
# runc options table and /opt/cni/bin as the CNI bin dir, whichever version's names it uses.
_CONTAINERD_EFFECTIVE = (
    "awk '/^[[:space:]]*\\[/ {t = $0}"
    " t ~ /runtimes\\.runc\\.options\\]/ && /^[[:space:]]*SystemdCgroup = true/ {c = 1}"
    " t ~ /\\.cni\\]/ && /^[[:space:]]*bin_dirs? = .*\\/opt\\/cni\\/bin/ {b = 1}"
    " END {exit !(c && b)}'"
)


def _containerd_edits() -> tuple[Command, ...]:
    """Edits of the freshly written default config: systemd cgroups, the CNI bin dir."""
    set_systemd = " else ".join(
        f"sed -i '/{_RUNC_OPTIONS[version]}/a SystemdCgroup = true' {CONTAINERD_CONFIG};"
        for version in (3, 2)
    )
    return (
        Command(f"sed -Ei '/^[[:space:]]*SystemdCgroup[[:space:]]*=/d' {CONTAINERD_CONFIG}"),
        Command(f"if grep -qx 'version = 3' {CONTAINERD_CONFIG}; then {set_systemd} fi"),
        # Whichever key the installed version writes: bin_dir (a path) or bin_dirs (a list).
        Command(
            "sed -Ei"
            f" -e 's@^([[:space:]]*bin_dir = ).*@\\1\"{CNI_BIN_DIR}\"@'"
            f" -e 's@^([[:space:]]*bin_dirs = ).*@\\1[\"{CNI_BIN_DIR}\"]@'"
            f" {CONTAINERD_CONFIG}"
        ),
    )


# A non-comment fstab line whose third field is "swap".
_FSTAB_SWAP = r"^[[:space:]]*[^#[:space:]]+[[:space:]]+[^[:space:]]+[[:space:]]+swap[[:space:]]"


def prepare_steps(inventory: Inventory, host: Host) -> tuple[Step, ...]:
    """The node preparation steps: the same on every host, plus the host's kubelet node IP."""
    minor = inventory.spec.kubernetes_version
    modules_conf = "".join(f"{name}\n" for name in MODULES)
    sysctl_conf = "".join(f"{name} = 1\n" for name in SYSCTLS)
    repo_url = f"{inventory.spec.package_repository}/v{minor}/deb/"
    deb_line = f"deb [signed-by={KEYRING}] {repo_url} /"
    packages = " ".join(KUBE_PACKAGES)
    version_pattern = "^install ok installed " + minor.replace(".", r"\.") + r"\."
    return (
        Step(
            name="swap-off",
            summary="swap off now and commented out in /etc/fstab (the kubelet refuses swap)",
            check=Command(
                f"! swapon --show --noheadings | grep -q . && ! grep -Eq '{_FSTAB_SWAP}' /etc/fstab"
            ),
            apply=(
                Command("swapoff -a"),
                Command(f"sed -Ei 's@({_FSTAB_SWAP}.*)$@# \\1@' /etc/fstab"),
            ),
        ),
        Step(
            name="kernel-modules",
            summary="overlay and br_netfilter loaded and listed in /etc/modules-load.d/k8s.conf",
            check=Command(
                _file_is("/etc/modules-load.d/k8s.conf", modules_conf)
                + "".join(f" && [ -d /sys/module/{name} ]" for name in MODULES)
            ),
            apply=(
                Command(_write_file("/etc/modules-load.d/k8s.conf", modules_conf)),
                *(Command(f"modprobe {name}") for name in MODULES),
            ),
        ),
        Step(
            name="sysctl",
            summary="bridge netfilter and IP forwarding on, persisted in /etc/sysctl.d/k8s.conf",
            check=Command(
                _file_is("/etc/sysctl.d/k8s.conf", sysctl_conf)
                + "".join(f' && [ "$(sysctl -n {name})" = 1 ]' for name in SYSCTLS)
            ),
            apply=(
                Command(_write_file("/etc/sysctl.d/k8s.conf", sysctl_conf)),
                # Only our file: `sysctl --system` fails on any other file's unknown keys.
                Command("sysctl -p /etc/sysctl.d/k8s.conf"),
            ),
        ),
        Step(
            name="containerd",
            summary="containerd installed, systemd cgroup driver, CNI plugins from /opt/cni/bin",
            check=Command(
                "dpkg-query -W -f='${Status}' containerd 2>/dev/null"
                " | grep -qx 'install ok installed'"
                f" && containerd config dump 2>/dev/null | {_CONTAINERD_EFFECTIVE}"
                " && systemctl is-enabled --quiet containerd"
                " && systemctl is-active --quiet containerd"
            ),
            apply=(
                Command(f"{APT} update"),
                Command(f"{APT} install -y containerd"),
                Command(
                    f"mkdir -p /etc/containerd && containerd config default > {CONTAINERD_CONFIG}"
                ),
                *_containerd_edits(),
                Command("systemctl restart containerd"),
                Command("systemctl enable containerd"),
            ),
        ),
        Step(
            name="kubernetes-apt-repo",
            summary=f"the Kubernetes v{minor} package repository and its signing key",
            check=Command(f"[ -s {KEYRING} ] && grep -qxF {shlex.quote(deb_line)} {APT_LIST}"),
            apply=(
                Command(f"{APT} update"),
                Command(f"{APT} install -y apt-transport-https ca-certificates curl gpg"),
                Command("mkdir -p -m 755 /etc/apt/keyrings"),
                Command(
                    f"curl -fsSL --retry 3 -o {KEYRING}.asc {repo_url}Release.key"
                    f" && gpg --batch --yes --dearmor -o {KEYRING} {KEYRING}.asc"
                    f" && rm -f {KEYRING}.asc"
                ),
                Command(f"echo {shlex.quote(deb_line)} > {APT_LIST}"),
                Command(f"{APT} update"),
            ),
        ),
        Step(
            name="kubernetes-packages",
            summary=f"{', '.join(KUBE_PACKAGES)} {minor}.x installed and held",
            check=Command(
                "[ \"$(dpkg-query -W -f='${Status} ${Version}\\n' "
                f"{packages} 2>/dev/null | grep -c '{version_pattern}')\" = 3 ]"
                f" && [ \"$(apt-mark showhold | grep -cxE '{'|'.join(KUBE_PACKAGES)}')\" = 3 ]"
            ),
            apply=(
                Command(f"{APT} install -y {packages}"),
                Command(f"apt-mark hold {packages}"),
            ),
        ),
        Step(
            name="kubelet-enabled",
            summary="kubelet enabled (it restarts in a loop until kubeadm configures it)",
            check=Command("systemctl is-enabled --quiet kubelet"),
            apply=(Command("systemctl enable --now kubelet"),),
        ),
        *((_kubelet_node_ip(host.node_ip),) if host.node_ip else ()),
    )


KUBELET_DEFAULTS = "/etc/default/kubelet"


def _kubelet_node_ip(node_ip: str) -> Step:
    """Several NICs: the kubelet registers node_ip, not the address of the default route."""
    # The kubeadm packages' kubelet unit reads KUBELET_EXTRA_ARGS from /etc/default/kubelet.
    content = f"KUBELET_EXTRA_ARGS=--node-ip={node_ip}\n"
    return Step(
        name="kubelet-node-ip",
        summary=f"kubelet registers node IP {node_ip} ({KUBELET_DEFAULTS})",
        check=Command(_file_is(KUBELET_DEFAULTS, content)),
        apply=(
            Command(_write_file(KUBELET_DEFAULTS, content)),
            Command("systemctl restart kubelet"),
        ),
    )


def _ready_probe(system_pods: bool) -> Command:
    jsonpath = (
        '\'{range .items[*]}{.metadata.name}{"="}'
        '{.status.conditions[?(@.type=="Ready")].status}{"\\n"}{end}\''
    )
    text = f"{KUBECTL} get nodes -o jsonpath={jsonpath}"
    if system_pods:
        text += f" && echo --- && {KUBECTL} -n kube-system get pods -o jsonpath={jsonpath}"
    return Command(text)


def control_plane_check(inventory: Inventory) -> Step:
    """Only the check of kubeadm-init: is the control plane up with this node registered?"""
    name = inventory.control_plane.name
    return Step(
        name="kubeadm-init",
        summary="kubeadm init: the control plane is up and this node is registered",
        check=Command(f"[ -f {ADMIN_CONF} ] && {KUBECTL} get node {name} -o name"),
    )


CONTROL_PLANE_TAINT = "node-role.kubernetes.io/control-plane"


def _schedulable_control_plane(node: str) -> Step:
    """One node: remove the control-plane NoSchedule taint, or no pod is ever scheduled."""
    return Step(
        name="control-plane-schedulable",
        summary=f"single node: {node} accepts pods (no {CONTROL_PLANE_TAINT} taint)",
        check=Command(
            f"t=$({KUBECTL} get node {node} -o jsonpath='{{.spec.taints[*].key}}')"
            f" && ! printf '%s\\n' $t | grep -qxF {CONTROL_PLANE_TAINT}"
        ),
        apply=(Command(f"{KUBECTL} taint nodes {node} {CONTROL_PLANE_TAINT}:NoSchedule-"),),
    )


def control_plane_steps(inventory: Inventory) -> tuple[AnyStep, ...]:
    """kubeadm init, the user's kubeconfig, its copy for the operator, the CNI, and readiness."""
    host = inventory.control_plane
    sudo = _sudo_prefix(host)
    cni = inventory.spec.cni
    manifest_url = cni.manifest_url or FLANNEL_MANIFEST_URL.format(version=cni.version)
    flannel_args = [f"--iface={cni.iface}"] if cni.iface else []
    flannel_args += [f"--iface-regex={cni.iface_regex}"] if cni.iface_regex else []
    marker = " ".join([cni.name, cni.version, inventory.spec.pod_network_cidr, *flannel_args])
    # Extra flanneld arguments go after --kube-subnet-mgr in the DaemonSet's args list.
    add_args = "".join(
        f" -e 's@^\\( *\\)- --kube-subnet-mgr$@&\\n\\1- {arg}@'" for arg in reversed(flannel_args)
    )
    # The operator's address (and a named endpoint) in the API server's certificate.
    named = (
        inventory.api_endpoint.rsplit(":", 1)[0] if inventory.spec.control_plane.endpoint else None
    )
    sans = ",".join(dict.fromkeys(name for name in (host.address, named) if name))
    return (
        Step(
            name="kubeadm-init",
            summary="kubeadm init: the control plane is up and this node is registered",
            check=control_plane_check(inventory).check,
            apply=(
                Command(
                    f"kubeadm init --apiserver-advertise-address={inventory.advertise_address}"
                    f" --control-plane-endpoint={inventory.api_endpoint}"
                    f" --apiserver-cert-extra-sans={sans}"
                    f" --node-name={host.name} --pod-network-cidr={inventory.spec.pod_network_cidr}"
                ),
            ),
        ),
        Step(
            name="user-kubeconfig",
            summary=f"admin kubeconfig at ~{host.user}/.kube/config (mode 0600)",
            check=Command(f'{sudo}cmp -s {ADMIN_CONF} "$HOME/.kube/config"', sudo=False),
            apply=(
                Command('mkdir -p "$HOME/.kube" && chmod 700 "$HOME/.kube"', sudo=False),
                Command(
                    f'{sudo}install -m 0600 -o "$(id -u)" -g "$(id -g)" {ADMIN_CONF}'
                    ' "$HOME/.kube/config"',
                    sudo=False,
                ),
            ),
        ),
        FetchStep(
            name="fetch-kubeconfig",
            summary=f"kubeconfig copied over SFTP to {inventory.kubeconfig_path} (mode 0600)",
            remote_path=".kube/config",
            local_path=inventory.kubeconfig_path,
            server=inventory.operator_server,
        ),
        Step(
            name="cni",
            summary=f"{cni.name} {cni.version} for pod network {inventory.spec.pod_network_cidr}",
            check=Command(
                f'[ "$({KUBECTL} -n kube-flannel get daemonset kube-flannel-ds'
                " -o jsonpath='{.metadata.annotations.kubetrain\\.io/cni}')\" = "
                f"{shlex.quote(marker)} ]"
            ),
            apply=(
                Command(
                    f'f=$(mktemp) && curl -fsSL --retry 3 -o "$f" {manifest_url}'
                    f' && sed -i -e \'s@"Network": "{DEFAULT_POD_CIDR}"@"Network":'
                    f' "{inventory.spec.pod_network_cidr}"@\'{add_args} "$f"'
                    f' && {KUBECTL} apply -f "$f"; rc=$?; rm -f "$f"; exit $rc'
                ),
                Command(
                    f"{KUBECTL} -n kube-flannel annotate --overwrite daemonset kube-flannel-ds"
                    f" {shlex.quote('kubetrain.io/cni=' + marker)}"
                ),
            ),
        ),
        *((_schedulable_control_plane(host.name),) if inventory.spec.single_node else ()),
        WaitStep(
            name="control-plane-ready",
            summary=f"node {host.name} and every kube-system pod Ready",
            probe=_ready_probe(system_pods=True),
            nodes=(host.name,),
            system_pods=True,
        ),
    )


def join_steps(host: Host, join: JoinCommand | None) -> tuple[Step, ...]:
    """The join step for one worker; without a join command the plan shows a placeholder."""
    join_command = (
        join.command(host.name)
        if join is not None
        else Command(
            "kubeadm join <control-plane>:6443 --token <fresh token> "
            f"--discovery-token-ca-cert-hash sha256:<ca hash> --node-name={host.name}"
        )
    )
    return (
        Step(
            name="kubeadm-join",
            summary="joined: the kubelet has its cluster credentials",
            check=Command("[ -f /etc/kubernetes/kubelet.conf ]"),
            apply=(
                # A failed join leaves files that make the next join's preflight fail; this
                # host has no kubelet.conf, so it holds no cluster state worth keeping.
                Command(
                    "if [ -e /etc/kubernetes/bootstrap-kubelet.conf ] "
                    "|| [ -e /etc/kubernetes/pki/ca.crt ]; then kubeadm reset -f; fi"
                ),
                join_command,
            ),
        ),
    )


def nodes_ready_step(inventory: Inventory) -> WaitStep:
    """Wait (on the control plane) until every inventory node is Ready."""
    names = tuple(host.name for host in inventory.hosts)
    return WaitStep(
        name="nodes-ready",
        summary=f"nodes {', '.join(names)} Ready",
        probe=_ready_probe(system_pods=False),
        nodes=names,
    )
