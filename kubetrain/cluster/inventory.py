"""The inventory: the YAML file an operator writes, validated once before any SSH connection.

`InventorySpec` (pydantic, spec.py) is the file as written. `Inventory` adds what the file
alone does not say: each `Host` with its effective SSH settings (its own overrides over the
`ssh:` defaults, key and known_hosts resolved against the file's folder and checked readable),
because the SSH layer and the runner need one complete connection record per host while the
file keeps overrides optional.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import ValidationError

from kubetrain.cluster.errors import InventoryError
from kubetrain.cluster.spec import HostSpec, InventorySpec, KeyConfig
from kubetrain.cluster.versions import kubernetes_warning
from kubetrain.ssh import KeySource, SshEndpoint


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
    node_ip: str | None = None

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
    """A validated inventory: the file's settings (spec) and its hosts, resolved."""

    source: Path
    spec: InventorySpec
    control_plane: Host
    workers: tuple[Host, ...]
    advertise_address: str
    kubeconfig_path: Path
    api_endpoint: str
    warnings: tuple[str, ...] = ()

    @property
    def operator_server(self) -> str:
        """The API server URL for the operator: the control plane's SSH address, port 6443.

        The operator reaches the control plane at the address it connects to over SSH, which
        may differ from the address the cluster advertises (NAT, several NICs).
        """
        address = self.control_plane.address
        return f"https://[{address}]:6443" if ":" in address else f"https://{address}:6443"

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
        model = InventorySpec.model_validate(data)
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
            node_ip=spec.node_ip,
        )

    if not model.workers and not model.single_node:
        raise InventoryError(
            f"inventory {source} has no workers: the control plane keeps its "
            "node-role.kubernetes.io/control-plane:NoSchedule taint, so every pod would stay "
            "Pending (Unschedulable). Add workers, or set single_node: true to run pods on the "
            "control plane (the taint is then removed)"
        )
    if model.workers and model.single_node:
        raise InventoryError(
            f"inventory {source} sets single_node: true but lists workers; remove the workers "
            "or the single_node setting"
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
        spec=model,
        control_plane=control_plane,
        workers=workers,
        advertise_address=advertise,
        api_endpoint=_with_port(model.control_plane.endpoint or advertise),
        kubeconfig_path=_resolve_path(model.kubeconfig_path, base),
        warnings=tuple(w for w in (kubernetes_warning(model.kubernetes_version),) if w),
    )


def _with_port(host: str) -> str:
    if host.count(":") == 1:
        return host
    return f"[{host}]:6443" if ":" in host else f"{host}:6443"


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
