"""The inventory file's schema: what an operator writes, validated by pydantic once."""

from __future__ import annotations

import ipaddress
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from kubetrain.cluster.versions import DEFAULT_FLANNEL, DEFAULT_KUBERNETES

DEFAULT_POD_CIDR = "10.244.0.0/16"  # flannel's manifest default
DEFAULT_PACKAGE_REPOSITORY = "https://pkgs.k8s.io/core:/stable:"

_NODE_NAME = re.compile(
    r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*$"
)
_HOSTNAME = re.compile(
    r"^[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?)*$"
)
_MINOR_VERSION = re.compile(r"^v?(1)\.(\d{1,3})$")
_CNI_VERSION = re.compile(r"^v\d+\.\d+\.\d+$")
_IFACE = re.compile(r"^[A-Za-z0-9_.:-]{1,39}$")  # a name (15 chars) or an IPv4/IPv6 address


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
    node_ip: str | None = None

    @field_validator("node_ip")
    @classmethod
    def _node_ip(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                ipaddress.ip_address(value)
            except ValueError:
                raise ValueError(
                    f"{value!r} is not an IP address; node_ip is the address on the cluster "
                    "network the kubelet registers (one of the host's own IPs)"
                ) from None
        return value

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
    endpoint: str | None = None

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        if value is not None:
            host, _, port = value.rpartition(":") if value.count(":") == 1 else (value, "", "")
            if not _HOSTNAME.fullmatch(host or value) or (port and not port.isdigit()):
                raise ValueError(
                    f"{value!r} is not HOST or HOST:PORT; endpoint is the stable name or load "
                    "balancer address of the API server (kubeadm --control-plane-endpoint)"
                )
        return value

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
    version: str = DEFAULT_FLANNEL
    manifest_url: str | None = None
    iface: str | None = None
    iface_regex: str | None = None

    @field_validator("iface")
    @classmethod
    def _iface(cls, value: str | None) -> str | None:
        if value is not None and not _IFACE.fullmatch(value):
            raise ValueError(
                f"{value!r} is not an interface name or IP (flannel --iface), e.g. eth1"
            )
        return value

    @field_validator("iface_regex")
    @classmethod
    def _iface_regex(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as error:
                raise ValueError(f"{value!r} is not a regular expression: {error}") from None
            if any(char in value for char in "'@\n\"\\"):
                raise ValueError(
                    f"{value!r}: use a regex without quotes, backslashes or @, e.g. ^(eth|ens)1$"
                )
        return value

    @field_validator("version")
    @classmethod
    def _version(cls, value: str) -> str:
        if not _CNI_VERSION.fullmatch(value):
            raise ValueError(f"{value!r} is not a release tag like {DEFAULT_FLANNEL}")
        return value


class WaitSpec(BaseModel):
    """How long to wait for nodes and system pods to become Ready, and how often to look."""

    model_config = ConfigDict(extra="forbid")
    timeout: float = Field(default=600.0, gt=0)
    interval: float = Field(default=5.0, gt=0)


class InventorySpec(BaseModel):
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
    single_node: bool = False

    @field_validator("kubernetes_version", mode="before")
    @classmethod
    def _version(cls, value: Any) -> Any:
        if isinstance(value, float | int):
            raise ValueError(
                f"got the number {value!r}; YAML reads 1.30 as 1.3: quote the version, "
                f'e.g. kubernetes_version: "{DEFAULT_KUBERNETES}"'
            )
        if not isinstance(value, str):
            return value
        match = _MINOR_VERSION.fullmatch(value.strip())
        if not match or int(match.group(2)) < 24:
            raise ValueError(
                f"{value!r} is not a supported Kubernetes minor version: write it like "
                f'"{DEFAULT_KUBERNETES}" (1.24 or newer; the package repository has one channel '
                "per minor)"
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
