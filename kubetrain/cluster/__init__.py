"""Node steps for a kubeadm cluster over SSH: inventory, check/apply commands, plans, runner.

Every step is check-then-apply: the check is a read-only shell command that exits 0 when the
step's effect is already in place; the apply commands run only when it fails, and the check must
pass afterwards. The plan is built by pure functions (golden-tested); the runner executes it
through a `Remote` (an SSH connection from kubetrain/ssh.py in production, anything in tests).
"""

from __future__ import annotations

import ipaddress
import os
import re
import shlex
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from kubetrain.errors import KubetrainError, UserError
from kubetrain.ssh import CommandResult, KeySource, SshEndpoint, SshError

ADMIN_CONF = "/etc/kubernetes/admin.conf"
KUBECTL = f"kubectl --kubeconfig={ADMIN_CONF} --request-timeout=10s"
DEFAULT_POD_CIDR = "10.244.0.0/16"  # the original's, and flannel's manifest default
DEFAULT_PACKAGE_REPOSITORY = "https://pkgs.k8s.io/core:/stable:"
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
STDERR_TAIL_CHARS = 800
REDACTED = "<redacted>"

_NODE_NAME = re.compile(
    r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*$"
)
_HOSTNAME = re.compile(
    r"^[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?)*$"
)
_MINOR_VERSION = re.compile(r"^v?(1)\.(\d{1,3})$")
_CNI_VERSION = re.compile(r"^v\d+\.\d+\.\d+$")
# `kubeadm token create --print-join-command` prints exactly this (plus a trailing space).
_JOIN = re.compile(
    r"^kubeadm join (?P<endpoint>\S+:\d{1,5}) --token (?P<token>[a-z0-9]{6}\.[a-z0-9]{16})"
    r" --discovery-token-ca-cert-hash (?P<hash>sha256:[0-9a-f]{64})$"
)


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


# -- inventory -------------------------------------------------------------------------------


class KeyConfig(BaseModel):
    """Where the SSH private key comes from: exactly one of path, env_var, secret_block."""

    model_config = ConfigDict(extra="forbid")
    path: str | None = None
    env_var: str | None = None
    secret_block: str | None = None
    passphrase_env: str | None = None
    passphrase_file: str | None = None


class SshDefaults(BaseModel):
    """SSH settings every host inherits unless it overrides them."""

    model_config = ConfigDict(extra="forbid")
    user: str = "ubuntu"
    port: int = Field(default=22, ge=1, le=65535)
    sudo: bool = True
    key: KeyConfig = Field(default_factory=lambda: KeyConfig(path="~/.ssh/id_ed25519"))
    known_hosts: str = "~/.ssh/known_hosts"
    connect_timeout: float = Field(default=15.0, gt=0)
    command_timeout: float = Field(default=900.0, gt=0)
    check_timeout: float = Field(default=60.0, gt=0)


class HostSpec(BaseModel):
    """One machine: its Kubernetes node name, SSH address, and optional SSH overrides."""

    model_config = ConfigDict(extra="forbid")
    name: str
    address: str
    port: int | None = Field(default=None, ge=1, le=65535)
    user: str | None = None
    sudo: bool | None = None
    key: KeyConfig | None = None

    @field_validator("name")
    @classmethod
    def _node_name(cls, value: str) -> str:
        if not _NODE_NAME.fullmatch(value) or len(value) > 253:
            raise ValueError(
                f"{value!r} is not a valid Kubernetes node name: use lower-case letters, digits, "
                "'-' and '.', starting and ending with a letter or digit"
            )
        return value

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        try:
            ipaddress.ip_address(value)
        except ValueError:
            if not _HOSTNAME.fullmatch(value):
                raise ValueError(f"{value!r} is neither an IP address nor a host name") from None
        return value


class ControlPlaneSpec(HostSpec):
    """The control-plane host; advertise_address defaults to its address."""

    advertise_address: str | None = None

    @field_validator("advertise_address")
    @classmethod
    def _advertise(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                ipaddress.ip_address(value)
            except ValueError:
                raise ValueError(
                    f"{value!r} is not an IP address; kubeadm advertises the API server on an IP"
                ) from None
        return value


class CniSpec(BaseModel):
    """The pod network add-on, pinned to a release."""

    model_config = ConfigDict(extra="forbid")
    name: Literal["flannel"] = "flannel"
    version: str = "v0.26.1"
    manifest_url: str | None = None

    @field_validator("version")
    @classmethod
    def _version(cls, value: str) -> str:
        if not _CNI_VERSION.fullmatch(value):
            raise ValueError(f"{value!r} is not a release tag like v0.26.1")
        return value


class WaitSpec(BaseModel):
    """How long to wait for nodes and system pods to become Ready, and how often to look."""

    model_config = ConfigDict(extra="forbid")
    timeout: float = Field(default=600.0, gt=0)
    interval: float = Field(default=5.0, gt=0)


class InventoryModel(BaseModel):
    """The inventory file as written by the operator."""

    model_config = ConfigDict(extra="forbid")
    kubernetes_version: str
    pod_network_cidr: str = DEFAULT_POD_CIDR
    cni: CniSpec = Field(default_factory=CniSpec)
    package_repository: str = DEFAULT_PACKAGE_REPOSITORY
    kubeconfig_path: str = "kubeconfig"
    ssh: SshDefaults = Field(default_factory=SshDefaults)
    control_plane: ControlPlaneSpec
    workers: list[HostSpec] = Field(default_factory=list)
    wait: WaitSpec = Field(default_factory=WaitSpec)
    purge_packages: bool = False

    @field_validator("kubernetes_version", mode="before")
    @classmethod
    def _version(cls, value: Any) -> Any:
        if isinstance(value, float | int):
            raise ValueError(
                f"got the number {value!r}; YAML reads 1.30 as 1.3: quote the version, "
                'e.g. kubernetes_version: "1.31"'
            )
        if not isinstance(value, str):
            return value
        match = _MINOR_VERSION.fullmatch(value.strip())
        if not match or int(match.group(2)) < 24:
            raise ValueError(
                f"{value!r} is not a supported Kubernetes minor version: write it like "
                '"1.31" (1.24 or newer; the package repository has one channel per minor)'
            )
        return f"1.{int(match.group(2))}"

    @field_validator("pod_network_cidr")
    @classmethod
    def _cidr(cls, value: str) -> str:
        try:
            network = ipaddress.ip_network(value, strict=True)
        except ValueError as error:
            raise ValueError(
                f"{value!r} is not a valid network in CIDR notation ({error}); "
                f"e.g. {DEFAULT_POD_CIDR}"
            ) from None
        if network.version != 4 or network.prefixlen > 22:
            raise ValueError(
                f"{value!r} is too small or not IPv4: flannel gives each node a /24, so use an "
                f"IPv4 network of /22 or larger, e.g. {DEFAULT_POD_CIDR}"
            )
        return str(network)

    @field_validator("package_repository")
    @classmethod
    def _repository(cls, value: str) -> str:
        if not value.startswith("https://"):
            raise ValueError(f"{value!r} must be an https:// URL")
        return value.rstrip("/")


@dataclass(frozen=True)
class Host:
    """A host with every SSH setting resolved (defaults applied, paths absolute)."""

    name: str
    address: str
    port: int
    user: str
    sudo: bool
    key: KeySource
    known_hosts: Path
    connect_timeout: float
    command_timeout: float
    check_timeout: float
    role: Literal["control-plane", "worker"]

    @property
    def label(self) -> str:
        """name (address), for messages."""
        return f"{self.name} ({self.address})"

    def endpoint(self) -> SshEndpoint:
        """The kubetrain/ssh endpoint for this host."""
        return SshEndpoint(
            host=self.address,
            user=self.user,
            key=self.key,
            known_hosts=self.known_hosts,
            port=self.port,
            connect_timeout=self.connect_timeout,
        )


@dataclass(frozen=True)
class Inventory:
    """A validated inventory: hosts resolved, cluster settings checked."""

    source: Path
    kubernetes_version: str
    pod_network_cidr: str
    cni: CniSpec
    package_repository: str
    kubeconfig_path: Path
    control_plane: Host
    advertise_address: str
    workers: tuple[Host, ...]
    wait: WaitSpec
    purge_packages: bool

    @property
    def hosts(self) -> tuple[Host, ...]:
        """Control plane first, then the workers in inventory order."""
        return (self.control_plane, *self.workers)

    def host(self, name: str) -> Host:
        """The host with this node name."""
        for host in self.hosts:
            if host.name == name:
                return host
        raise KeyError(name)


def _format_validation(path: Path, error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        loc = ".".join(str(part) for part in item["loc"]) or "(top level)"
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "missing":
            message = "required but missing"
            if loc == "control_plane":
                message += " (add a control_plane host with name and address)"
        elif item["type"] == "extra_forbidden":
            message = "unknown setting (a typo?); see infra/inventory.example.yaml"
        elif item["type"] == "literal_error" and loc.endswith("cni.name"):
            message = f"unknown CNI {item.get('input')!r}: supported: flannel"
        lines.append(f"  {loc}: {message}")
    return f"inventory {path} is invalid:\n" + "\n".join(lines)


def _resolve_path(value: str, base: Path) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else (base / path)


def _key_source(key: KeyConfig, source: Path, where: str) -> KeySource:
    base = source.parent
    chosen = [n for n in ("path", "env_var", "secret_block") if getattr(key, n)]
    if len(chosen) != 1:
        raise InventoryError(
            f"inventory {source}: {where}.key: set exactly one of path, env_var or secret_block "
            f"(got {', '.join(chosen) or 'none'})"
        )
    path = _resolve_path(key.path, base) if key.path else None
    if path is not None and not (path.is_file() and os.access(path, os.R_OK)):
        raise InventoryError(
            f"inventory {source}: {where}.key.path: SSH private key {path} is missing or "
            "unreadable; point it at a readable key file (chmod 600, owned by you)"
        )
    if key.env_var and not os.environ.get(key.env_var, "").strip():
        raise InventoryError(
            f"inventory {source}: {where}.key.env_var: environment variable {key.env_var} is "
            "unset or empty; export it with the private key text"
        )
    passphrase_file = _resolve_path(key.passphrase_file, base) if key.passphrase_file else None
    if passphrase_file is not None and not os.access(passphrase_file, os.R_OK):
        raise InventoryError(
            f"inventory {source}: {where}.key.passphrase_file: {passphrase_file} is missing or "
            "unreadable"
        )
    return KeySource(
        path=path,
        env_var=key.env_var,
        secret_block=key.secret_block,
        passphrase_env=key.passphrase_env,
        passphrase_file=passphrase_file,
    )


def parse_inventory(data: Any, source: Path) -> Inventory:
    """Validate inventory data (already parsed YAML); relative paths are relative to source."""
    if not isinstance(data, dict):
        raise InventoryError(
            f"inventory {source} must be a YAML mapping with kubernetes_version, control_plane "
            "and workers; see infra/inventory.example.yaml"
        )
    try:
        model = InventoryModel.model_validate(data)
    except ValidationError as error:
        raise InventoryError(_format_validation(source, error)) from None
    base = source.parent
    known_hosts = _resolve_path(model.ssh.known_hosts, base)
    if not (known_hosts.is_file() and os.access(known_hosts, os.R_OK)):
        raise InventoryError(
            f"inventory {source}: ssh.known_hosts {known_hosts} is missing or unreadable; "
            "create it with each host's verified key (ssh-keyscan, then compare fingerprints)"
        )
    default_key = _key_source(model.ssh.key, source, "ssh")

    def resolve(spec: HostSpec, role: Literal["control-plane", "worker"], where: str) -> Host:
        return Host(
            name=spec.name,
            address=spec.address,
            port=spec.port or model.ssh.port,
            user=spec.user or model.ssh.user,
            sudo=model.ssh.sudo if spec.sudo is None else spec.sudo,
            key=_key_source(spec.key, source, where) if spec.key else default_key,
            known_hosts=known_hosts,
            connect_timeout=model.ssh.connect_timeout,
            command_timeout=model.ssh.command_timeout,
            check_timeout=model.ssh.check_timeout,
            role=role,
        )

    control_plane = resolve(model.control_plane, "control-plane", "control_plane")
    workers = tuple(
        resolve(spec, "worker", f"workers.{index}") for index, spec in enumerate(model.workers)
    )
    hosts = (control_plane, *workers)
    seen_names: dict[str, str] = {}
    seen_addresses: dict[tuple[str, int], str] = {}
    for host in hosts:
        if host.name in seen_names:
            raise InventoryError(
                f"inventory {source}: duplicate node name {host.name!r}; every host needs its "
                "own name"
            )
        seen_names[host.name] = host.address
        where = (host.address.lower(), host.port)
        if where in seen_addresses:
            raise InventoryError(
                f"inventory {source}: duplicate address {host.address}:{host.port} "
                f"(hosts {seen_addresses[where]!r} and {host.name!r}); each host must be a "
                "different machine"
            )
        seen_addresses[where] = host.name
    advertise = model.control_plane.advertise_address or model.control_plane.address
    try:
        ipaddress.ip_address(advertise)
    except ValueError:
        raise InventoryError(
            f"inventory {source}: control_plane.address {advertise!r} is a host name; set "
            "control_plane.advertise_address to the IP the API server should listen on"
        ) from None
    network = ipaddress.ip_network(model.pod_network_cidr)
    for host in hosts:
        try:
            inside = ipaddress.ip_address(host.address) in network
        except ValueError:
            inside = False
        if inside:
            raise InventoryError(
                f"inventory {source}: pod_network_cidr {network} contains host {host.label}'s "
                "address; pick a pod network that does not overlap the node network"
            )
    return Inventory(
        source=source,
        kubernetes_version=model.kubernetes_version,
        pod_network_cidr=model.pod_network_cidr,
        cni=model.cni,
        package_repository=model.package_repository,
        kubeconfig_path=_resolve_path(model.kubeconfig_path, base),
        control_plane=control_plane,
        advertise_address=advertise,
        workers=workers,
        wait=model.wait,
        purge_packages=model.purge_packages,
    )


def load_inventory(path: str | Path) -> Inventory:
    """Read and validate an inventory YAML file; every problem is an InventoryError."""
    source = Path(path).expanduser().resolve()
    try:
        text = source.read_text()
    except OSError as error:
        raise InventoryError(
            f"cannot read inventory {source}: {error.strerror}; pass --inventory FILE "
            "(see infra/inventory.example.yaml)"
        ) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise InventoryError(f"inventory {source} is not valid YAML: {error}") from None
    return parse_inventory(data, source)


# -- commands and steps ----------------------------------------------------------------------


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


StepKind = Literal["remote", "fetch", "wait"]


@dataclass(frozen=True)
class Step:
    """One idempotent step on one host: the check, and what applies it when the check fails."""

    name: str
    summary: str
    check: Command
    apply: tuple[Command, ...] = ()
    kind: StepKind = "remote"
    # For "wait": node names that must be Ready (and whether kube-system pods must be too).
    nodes: tuple[str, ...] = ()
    system_pods: bool = False
    # For "fetch": the remote path (relative to the SSH user's home) and the local target.
    remote_path: str = ""
    local_path: Path | None = None


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


# A non-comment fstab line whose third field is "swap".
_FSTAB_SWAP = r"^[[:space:]]*[^#[:space:]]+[[:space:]]+[^[:space:]]+[[:space:]]+swap[[:space:]]"


def prepare_steps(inventory: Inventory) -> tuple[Step, ...]:
    """The node preparation steps, the same on every host (control plane and workers)."""
    minor = inventory.kubernetes_version
    modules_conf = "".join(f"{name}\n" for name in MODULES)
    sysctl_conf = "".join(f"{name} = 1\n" for name in SYSCTLS)
    repo_url = f"{inventory.package_repository}/v{minor}/deb/"
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
            summary="containerd installed, systemd cgroup driver, enabled and running",
            check=Command(
                "dpkg-query -W -f='${Status}' containerd 2>/dev/null"
                " | grep -qx 'install ok installed'"
                " && grep -Eq '^[[:space:]]*SystemdCgroup = true' /etc/containerd/config.toml"
                " && systemctl is-enabled --quiet containerd"
                " && systemctl is-active --quiet containerd"
            ),
            apply=(
                Command(f"{APT} update"),
                Command(f"{APT} install -y containerd"),
                Command(
                    "mkdir -p /etc/containerd && "
                    "containerd config default > /etc/containerd/config.toml"
                ),
                Command(
                    r"sed -Ei 's/^([[:space:]]*SystemdCgroup = )false/\1true/' "
                    "/etc/containerd/config.toml"
                ),
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


def control_plane_steps(inventory: Inventory) -> tuple[Step, ...]:
    """kubeadm init, the user's kubeconfig, its copy for the operator, the CNI, and readiness."""
    host = inventory.control_plane
    sudo = _sudo_prefix(host)
    cni = inventory.cni
    manifest_url = cni.manifest_url or FLANNEL_MANIFEST_URL.format(version=cni.version)
    marker = f"{cni.name} {cni.version} {inventory.pod_network_cidr}"
    return (
        Step(
            name="kubeadm-init",
            summary="kubeadm init: the control plane is up and this node is registered",
            check=Command(f"[ -f {ADMIN_CONF} ] && {KUBECTL} get node {host.name} -o name"),
            apply=(
                Command(
                    f"kubeadm init --apiserver-advertise-address={inventory.advertise_address}"
                    f" --node-name={host.name} --pod-network-cidr={inventory.pod_network_cidr}"
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
        Step(
            name="fetch-kubeconfig",
            summary=f"kubeconfig copied over SFTP to {inventory.kubeconfig_path} (mode 0600)",
            check=Command(f"cmp ~{host.user}/.kube/config {inventory.kubeconfig_path}"),
            apply=(Command(f"sftp get .kube/config {inventory.kubeconfig_path}", sudo=False),),
            kind="fetch",
            remote_path=".kube/config",
            local_path=inventory.kubeconfig_path,
        ),
        Step(
            name="cni",
            summary=f"{cni.name} {cni.version} for pod network {inventory.pod_network_cidr}",
            check=Command(
                f'[ "$({KUBECTL} -n kube-flannel get daemonset kube-flannel-ds'
                " -o jsonpath='{.metadata.annotations.kubetrain\\.io/cni}')\" = "
                f"{shlex.quote(marker)} ]"
            ),
            apply=(
                Command(
                    f'f=$(mktemp) && curl -fsSL --retry 3 -o "$f" {manifest_url}'
                    f' && sed -i \'s@"Network": "{DEFAULT_POD_CIDR}"@"Network":'
                    f' "{inventory.pod_network_cidr}"@\' "$f"'
                    f' && {KUBECTL} apply -f "$f"; rc=$?; rm -f "$f"; exit $rc'
                ),
                Command(
                    f"{KUBECTL} -n kube-flannel annotate --overwrite daemonset kube-flannel-ds"
                    f" {shlex.quote('kubetrain.io/cni=' + marker)}"
                ),
            ),
        ),
        Step(
            name="control-plane-ready",
            summary=f"node {host.name} and every kube-system pod Ready",
            check=_ready_probe(system_pods=True),
            kind="wait",
            nodes=(host.name,),
            system_pods=True,
        ),
    )


JOIN_TOKEN_COMMAND = Command("kubeadm token create --print-join-command --ttl 30m")


@dataclass(frozen=True)
class JoinCommand:
    """A parsed `kubeadm join` command: API endpoint, bootstrap token and CA cert hash."""

    endpoint: str
    token: str = field(repr=False)
    ca_cert_hash: str

    def command(self, node_name: str) -> Command:
        """The join command for one worker, with the token redacted in its display form."""
        text = (
            f"kubeadm join {self.endpoint} --token {self.token}"
            f" --discovery-token-ca-cert-hash {self.ca_cert_hash} --node-name={node_name}"
        )
        return Command(text, display=text.replace(self.token, REDACTED))


def parse_join_command(output: str) -> JoinCommand:
    """Parse `kubeadm token create --print-join-command` output into its parts (strictly)."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    candidates = [line for line in lines if line.startswith("kubeadm join ")]
    if len(candidates) != 1:
        raise ValueError(
            "expected exactly one `kubeadm join …` line from `kubeadm token create "
            f"--print-join-command`, got {len(candidates)}"
        )
    match = _JOIN.fullmatch(candidates[0])
    if match is None:
        shown = re.sub(r"--token \S+", f"--token {REDACTED}", candidates[0])
        raise ValueError(
            "unexpected join command format (want `kubeadm join HOST:PORT --token "
            f"xxxxxx.xxxxxxxxxxxxxxxx --discovery-token-ca-cert-hash sha256:<64 hex>`): {shown}"
        )
    return JoinCommand(match["endpoint"], match["token"], match["hash"])


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


def nodes_ready_step(inventory: Inventory) -> Step:
    """Wait (on the control plane) until every inventory node is Ready."""
    names = tuple(host.name for host in inventory.hosts)
    return Step(
        name="nodes-ready",
        summary=f"nodes {', '.join(names)} Ready",
        check=_ready_probe(system_pods=False),
        kind="wait",
        nodes=names,
    )


def teardown_steps(inventory: Inventory, purge_packages: bool) -> tuple[Step, ...]:
    """kubeadm reset, CNI and kubeconfig files removed, packages purged when asked."""
    steps = [
        Step(
            name="kubeadm-reset",
            summary="kubeadm reset -f: no kubelet credentials, manifests, certificates or etcd",
            check=Command(
                " && ".join(
                    f"[ ! -e {path} ]"
                    for path in (
                        "/etc/kubernetes/kubelet.conf",
                        "/etc/kubernetes/bootstrap-kubelet.conf",
                        ADMIN_CONF,
                        "/etc/kubernetes/manifests/kube-apiserver.yaml",
                        "/etc/kubernetes/pki/ca.crt",
                    )
                )
            ),
            apply=(Command("kubeadm reset -f"),),
        ),
        Step(
            name="cni-files",
            summary="CNI configuration and state removed (kubeadm reset leaves them)",
            check=Command("[ ! -e /etc/cni/net.d ] && [ ! -e /var/lib/cni ]"),
            apply=(Command("rm -rf /etc/cni/net.d /var/lib/cni"),),
        ),
        Step(
            name="user-kubeconfig-removed",
            summary="the SSH user's ~/.kube/config removed",
            check=Command('[ ! -e "$HOME/.kube/config" ]', sudo=False),
            apply=(Command('rm -f "$HOME/.kube/config"', sudo=False),),
        ),
    ]
    if purge_packages:
        all_packages = (*KUBE_PACKAGES, "containerd")
        steps.append(
            Step(
                name="packages-purged",
                summary=f"{', '.join(all_packages)} purged, Kubernetes repository removed",
                check=Command(
                    f"! dpkg-query -W -f='${{Status}}' {' '.join(all_packages)} 2>/dev/null"
                    f" | grep -q 'ok installed' && [ ! -e {APT_LIST} ]"
                ),
                apply=(
                    # Preparatory only: a purge of a still-held package fails loudly anyway.
                    Command(f"apt-mark unhold {' '.join(KUBE_PACKAGES)} 2>/dev/null || true"),
                    Command(f"{APT} purge -y {' '.join(all_packages)}"),
                    Command(f"{APT} autoremove -y"),
                    Command(f"rm -f {APT_LIST} {KEYRING}"),
                ),
            )
        )
    return tuple(steps)


def render_plan(host: Host, steps: Sequence[Step]) -> str:
    """A readable, exact plan for one host: each step's check and apply commands.

    `[sudo]` marks a command sent as `sudo -n sh -c '<command>'` (see Command.wire).
    """
    lines = [f"# host {host.label} as {host.user}, role {host.role}"]
    for step in steps:
        lines.append(f"## {step.name}: {step.summary}")
        if step.kind == "fetch":
            lines.append(f"fetch: sftp {host.user}@{host.address}:~/{step.remote_path}")
            lines.append(f"   to: {step.local_path} (mode 0600)")
            continue
        label = "poll" if step.kind == "wait" else "check"
        lines.append(f"{label}{_sudo_mark(step.check, host)}: {step.check.shown()}")
        lines.extend(
            f"apply{_sudo_mark(command, host)}: {command.shown()}" for command in step.apply
        )
    return "\n".join(lines) + "\n"


def _sudo_mark(command: Command, host: Host) -> str:
    return " [sudo]" if command.sudo and host.sudo else ""


# -- running steps ---------------------------------------------------------------------------


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


def _tail(text: str, limit: int = STDERR_TAIL_CHARS) -> str:
    text = text.strip()
    return text if len(text) <= limit else "…" + text[-limit:]


def _run(remote: Remote, host: Host, step: Step, command: Command, timeout: float) -> CommandResult:
    try:
        return remote.run(command.wire(host), timeout)
    except SshError as error:
        raise ClusterStepError(host.label, step.name, command.shown(), None, str(error)) from None


def _check(remote: Remote, host: Host, step: Step) -> CommandResult:
    return _run(remote, host, step, step.check, host.check_timeout)


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


def _fetch_step(remote: Remote, host: Host, step: Step, dry_run: bool) -> StepResult:
    assert step.local_path is not None
    target = step.local_path
    try:
        data = remote.fetch(step.remote_path)
    except SshError as error:
        raise ClusterStepError(host.label, step.name, "sftp get", None, str(error)) from None
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


def _not_ready(step: Step, output: str) -> list[str]:
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
    step: Step,
    dry_run: bool,
    timeout: float,
    interval: float,
    sleep: Callable[[float], None],
) -> StepResult:
    probe = step.check
    result = _check(remote, host, step)
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
                detail += f"; last error: {_tail(result.stderr)}"
            raise ClusterStepError(host.label, step.name, probe.shown(), result.exit_code, detail)
        sleep(min(interval, max(0.0, deadline - time.monotonic())))
        result = _check(remote, host, step)
        waiting = _not_ready(step, result.stdout) if result.ok else ["the API server to answer"]
        if not waiting:
            return StepResult(host.name, step.name, "applied", first, [f"waited for: {first}"])


def run_steps(
    remote: Remote,
    host: Host,
    steps: Sequence[Step],
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
            if step.kind == "fetch":
                result = _fetch_step(remote, host, step, dry_run)
            elif step.kind == "wait":
                result = _wait_step(remote, host, step, dry_run, wait.timeout, wait.interval, sleep)
            else:
                result = _remote_step(remote, host, step, dry_run)
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


def _remote_step(remote: Remote, host: Host, step: Step, dry_run: bool) -> StepResult:
    check = _check(remote, host, step)
    if check.ok:
        return StepResult(host.name, step.name, "satisfied")
    reason = f"check exited {check.exit_code}: {step.check.shown()}"
    if check.stderr.strip():
        reason += f"\n{_tail(check.stderr, 300)}"
    shown = [command.shown() for command in step.apply]
    if dry_run:
        return StepResult(host.name, step.name, "would-apply", reason, shown)
    for command in step.apply:
        result = _run(remote, host, step, command, host.command_timeout)
        if not result.ok:
            raise ClusterStepError(
                host.label,
                step.name,
                command.shown(),
                result.exit_code,
                _tail(result.stderr or result.stdout),
            )
    after = _check(remote, host, step)
    if not after.ok:
        raise ClusterStepError(
            host.label,
            step.name,
            step.check.shown(),
            after.exit_code,
            "every apply command succeeded but the check still fails; "
            + (_tail(after.stderr) or "inspect the host"),
        )
    return StepResult(host.name, step.name, "applied", reason, shown)


# -- SSH-backed remote and the Prefect tasks ---------------------------------------------------


class SshRemote:
    """A Remote over one SSH connection from kubetrain/ssh.py (host key verified)."""

    def __init__(self, host: Host) -> None:
        from kubetrain.ssh import connect

        self.host = host
        self.client = connect(host.endpoint())

    def run(self, command: str, timeout: float) -> CommandResult:
        """Run a command through kubetrain.ssh.run_command."""
        from kubetrain.ssh import run_command

        return run_command(self.client, command, timeout=timeout)

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


RemoteFactory = Callable[[Host], Any]


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
    steps: Sequence[Step],
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
    step = Step("join-token", "fresh bootstrap token", JOIN_TOKEN_COMMAND)
    remote = open_remote(host)
    try:
        result = _run(remote, host, step, JOIN_TOKEN_COMMAND, host.command_timeout)
    finally:
        remote.close()
    if not result.ok:
        raise ClusterStepError(
            host.label, step.name, JOIN_TOKEN_COMMAND.text, result.exit_code, _tail(result.stderr)
        )
    try:
        return parse_join_command(result.stdout)
    except ValueError as error:
        raise ClusterStepError(
            host.label, step.name, JOIN_TOKEN_COMMAND.text, result.exit_code, str(error)
        ) from None
