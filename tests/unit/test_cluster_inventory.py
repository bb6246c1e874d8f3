"""Inventory validation: every bad inventory is a clear error before any SSH connection."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubetrain.cluster import InventoryError, load_inventory, parse_inventory

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = REPO_ROOT / "infra" / "inventory.example.yaml"


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    key = tmp_path / "id_ed25519"
    key.write_text("not parsed before connecting\n")
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("")
    return {"key": key, "known_hosts": known_hosts, "source": tmp_path / "inventory.yaml"}


@pytest.fixture
def data(files: dict[str, Path]) -> dict[str, Any]:
    """The example inventory with key and known_hosts pointing at files that exist."""
    loaded = yaml.safe_load(EXAMPLE.read_text())
    loaded["ssh"]["key"] = {"path": str(files["key"])}
    loaded["ssh"]["known_hosts"] = str(files["known_hosts"])
    return loaded


def error_of(data: Any, source: Path) -> str:
    with pytest.raises(InventoryError) as caught:
        parse_inventory(data, source)
    return str(caught.value)


def test_example_inventory_is_valid_and_resolves_defaults(data, files):
    inventory = parse_inventory(data, files["source"])

    assert inventory.spec.pod_network_cidr == "10.244.0.0/16"
    assert inventory.spec.cni.name == "flannel"
    assert [host.name for host in inventory.hosts] == ["cp-1", "worker-1", "worker-2"]
    assert inventory.advertise_address == "192.0.2.10"
    worker = inventory.workers[0]
    assert (worker.user, worker.port, worker.sudo, worker.role) == ("ubuntu", 22, True, "worker")
    assert worker.key.path == files["key"]
    assert inventory.kubeconfig_path == files["source"].parent / "kubeconfig"
    assert inventory.control_plane.endpoint().host == "192.0.2.10"


def test_example_file_loads_or_names_the_ssh_file_to_provide(monkeypatch, tmp_path):
    # As shipped it points at ~/.ssh files; with an empty home the error says which one.
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(InventoryError, match=r"ssh\.known_hosts .*known_hosts is missing"):
        load_inventory(EXAMPLE)


def test_per_host_overrides(data, files, tmp_path):
    other_key = tmp_path / "other_key"
    other_key.write_text("x")
    data["workers"][1].update(user="admin", port=2222, sudo=False, key={"path": str(other_key)})
    worker = parse_inventory(data, files["source"]).workers[1]
    assert (worker.user, worker.port, worker.sudo, worker.key.path) == (
        "admin",
        2222,
        False,
        other_key,
    )


def test_missing_control_plane(data, files):
    del data["control_plane"]
    message = error_of(data, files["source"])
    assert "control_plane: required but missing" in message
    assert str(files["source"]) in message


def test_worker_missing_address(data, files):
    del data["workers"][1]["address"]
    assert "workers.1.address: required but missing" in error_of(data, files["source"])


def test_duplicate_address(data, files):
    data["workers"][1]["address"] = data["workers"][0]["address"]
    message = error_of(data, files["source"])
    assert "duplicate address 192.0.2.11:22" in message
    assert "'worker-1' and 'worker-2'" in message


def test_same_address_on_other_ports_is_allowed(data, files):
    data["workers"][1]["address"] = data["workers"][0]["address"]
    data["workers"][1]["port"] = 2201
    assert len(parse_inventory(data, files["source"]).workers) == 2


def test_duplicate_node_name(data, files):
    data["workers"][1]["name"] = "worker-1"
    assert "duplicate node name 'worker-1'" in error_of(data, files["source"])


def test_invalid_node_name(data, files):
    data["workers"][0]["name"] = "Worker_1"
    assert "not a valid Kubernetes node name" in error_of(data, files["source"])


@pytest.mark.parametrize(
    ("cidr", "expected"),
    [
        ("10.244.0.0/33", "not a valid network in CIDR notation"),
        ("10.244.1.0/16", "has host bits set"),
        ("banana", "not a valid network"),
        ("10.244.0.0/24", "flannel gives each node a /24"),
        ("fd00::/48", "not IPv4"),
    ],
)
def test_bad_pod_cidr(data, files, cidr, expected):
    data["pod_network_cidr"] = cidr
    message = error_of(data, files["source"])
    assert "pod_network_cidr" in message
    assert expected in message


def test_pod_cidr_overlapping_a_node(data, files):
    data["pod_network_cidr"] = "192.0.0.0/16"
    assert "contains host cp-1 (192.0.2.10)'s address" in error_of(data, files["source"])


def test_unknown_cni(data, files):
    data["cni"]["name"] = "calico"
    assert "cni.name: unknown CNI 'calico': supported: flannel" in error_of(data, files["source"])


def test_unpinned_cni_version(data, files):
    data["cni"]["version"] = "latest"
    assert "cni.version: 'latest' is not a release tag like v0." in error_of(data, files["source"])


def test_unreadable_key(data, files, tmp_path):
    data["ssh"]["key"] = {"path": str(tmp_path / "missing_key")}
    message = error_of(data, files["source"])
    assert f"SSH private key {tmp_path / 'missing_key'} is missing or unreadable" in message


def test_key_that_is_a_directory(data, files, tmp_path):
    data["workers"][0]["key"] = {"path": str(tmp_path)}
    assert "workers.0.key.path" in error_of(data, files["source"])


def test_key_env_var_unset(data, files, monkeypatch):
    monkeypatch.delenv("KT_TEST_NO_SUCH_KEY", raising=False)
    data["ssh"]["key"] = {"env_var": "KT_TEST_NO_SUCH_KEY"}
    assert "KT_TEST_NO_SUCH_KEY is unset or empty" in error_of(data, files["source"])


def test_two_key_sources(data, files):
    data["ssh"]["key"]["env_var"] = "SOMETHING"
    assert "set exactly one of path, env_var or secret_block" in error_of(data, files["source"])


def test_missing_known_hosts(data, files, tmp_path):
    data["ssh"]["known_hosts"] = str(tmp_path / "nope")
    assert "ssh.known_hosts" in error_of(data, files["source"])


@pytest.mark.parametrize(
    ("version", "expected"),
    [
        (1.3, "YAML reads 1.30 as 1.3: quote the version"),
        ("1.23", "not a supported Kubernetes minor version"),
        ("1.31.2", "not a supported Kubernetes minor version"),
        ("latest", "not a supported Kubernetes minor version"),
    ],
)
def test_bad_kubernetes_version(data, files, version, expected):
    data["kubernetes_version"] = version
    message = error_of(data, files["source"])
    assert "kubernetes_version" in message
    assert expected in message


def test_version_with_v_prefix_is_normalized(data, files):
    data["kubernetes_version"] = "v1.30"
    assert parse_inventory(data, files["source"]).spec.kubernetes_version == "1.30"


def test_typo_in_a_setting(data, files):
    data["workers"][0]["adress"] = "192.0.2.99"
    assert "workers.0.adress: unknown setting" in error_of(data, files["source"])


def test_advertise_address_must_be_an_ip(data, files):
    data["control_plane"]["address"] = "cp-1.example.internal"
    assert "set control_plane.advertise_address" in error_of(data, files["source"])
    data["control_plane"]["advertise_address"] = "cp-1"
    assert "is not an IP address" in error_of(data, files["source"])


def test_not_a_mapping(files):
    assert "must be a YAML mapping" in error_of(["a", "list"], files["source"])


def test_unreadable_and_malformed_files(tmp_path):
    with pytest.raises(InventoryError, match="cannot read inventory"):
        load_inventory(tmp_path / "absent.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("workers: [\n")
    with pytest.raises(InventoryError, match="not valid YAML"):
        load_inventory(broken)


def test_cli_rejects_bad_inventories_before_any_ssh_connection(data, files, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import kubetrain.ssh
    from kubetrain.cli import build_app

    def no_ssh(*args: object, **kwargs: object) -> None:
        raise AssertionError("an SSH connection was attempted")

    monkeypatch.setattr(kubetrain.ssh, "connect", no_ssh)
    monkeypatch.setattr(kubetrain.ssh.paramiko.SSHClient, "connect", no_ssh)
    cases = {
        "missing-host": lambda d: d.pop("control_plane"),
        "duplicate-address": lambda d: d["workers"][1].update(address="192.0.2.11"),
        "bad-cidr": lambda d: d.update(pod_network_cidr="10.244.0.0/40"),
        "unknown-cni": lambda d: d["cni"].update(name="weave"),
        "unreadable-key": lambda d: d["ssh"].update(key={"path": str(tmp_path / "gone")}),
    }
    runner = CliRunner()
    for name, breaks in cases.items():
        broken = copy.deepcopy(data)
        breaks(broken)
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(broken))
        for command in ("bootstrap", "join", "teardown"):
            argv = ["cluster", command, "--inventory", str(path), "--dry-run"]
            result = runner.invoke(build_app(argv), argv)
            assert result.exit_code == 1, (name, command, result.output)
            assert f"error: inventory {path}" in result.output


# -- versions within support -----------------------------------------------------------------


def test_example_pins_a_supported_kubernetes_and_a_recent_flannel(data, files):
    from kubetrain.cluster.versions import SUPPORTED_KUBERNETES

    inventory = parse_inventory(data, files["source"])
    assert inventory.spec.kubernetes_version in SUPPORTED_KUBERNETES
    assert inventory.warnings == ()
    major, minor, _ = (int(part) for part in inventory.spec.cni.version[1:].split("."))
    assert (major, minor) >= (0, 27), "flannel before v0.27 is from 2024 or older"
    # Without a cni section the default is the same recent release.
    del data["cni"]
    assert parse_inventory(data, files["source"]).spec.cni.version == inventory.spec.cni.version


@pytest.mark.parametrize("version", ["1.24", "1.31", "1.99"])
def test_a_kubernetes_version_outside_the_window_warns_naming_the_window(data, files, version):
    from kubetrain.cluster.versions import SUPPORTED_KUBERNETES

    data["kubernetes_version"] = version
    (warning,) = parse_inventory(data, files["source"]).warnings
    assert f"kubernetes_version {version}" in warning
    window = f"{min(SUPPORTED_KUBERNETES, key=lambda v: int(v.split('.')[1]))}"
    assert window in warning
    assert max(SUPPORTED_KUBERNETES, key=lambda v: int(v.split(".")[1])) in warning


# -- one node --------------------------------------------------------------------------------


def test_no_workers_is_refused_unless_single_node(data, files):
    data["workers"] = []
    message = error_of(data, files["source"])
    assert "no workers" in message
    assert "node-role.kubernetes.io/control-plane" in message
    assert "single_node: true" in message
    data["single_node"] = True
    inventory = parse_inventory(data, files["source"])
    assert inventory.spec.single_node is True
    assert inventory.hosts == (inventory.control_plane,)


def test_single_node_with_workers_is_a_contradiction(data, files):
    data["single_node"] = True
    message = error_of(data, files["source"])
    assert "single_node: true" in message
    assert "workers" in message


# -- several NICs / NAT ----------------------------------------------------------------------


def test_node_ip_iface_and_endpoint_are_checked(data, files):
    data["workers"][0]["node_ip"] = "eth1"
    assert "workers.0.node_ip: 'eth1' is not an IP address" in error_of(data, files["source"])
    data["workers"][0]["node_ip"] = "10.0.0.11"
    data["cni"]["iface_regex"] = "eth1' ; rm -rf /"
    assert "cni.iface_regex" in error_of(data, files["source"])
    data["cni"]["iface_regex"] = "^(eth|ens)1$"
    data["control_plane"]["endpoint"] = "api.example.internal:6443"
    inventory = parse_inventory(data, files["source"])
    assert inventory.workers[0].node_ip == "10.0.0.11"
    assert inventory.api_endpoint == "api.example.internal:6443"
    # The operator reaches the API server where it reaches the control plane over SSH.
    assert inventory.operator_server == "https://192.0.2.10:6443"


def test_plan_flow_prints_every_hosts_commands_without_connecting(
    data, files, monkeypatch, prefect_server
):
    import kubetrain.ssh
    from flows.cluster import plan_cluster

    def no_ssh(*args: object, **kwargs: object) -> None:
        raise AssertionError("an SSH connection was attempted")

    monkeypatch.setattr(kubetrain.ssh, "connect", no_ssh)
    files["source"].write_text(yaml.safe_dump(data))
    text = plan_cluster(inventory=str(files["source"]), flow_name="bootstrap")
    for name in ("cp-1", "worker-1", "worker-2"):
        assert f"# host {name} (" in text
    assert "kubeadm init --apiserver-advertise-address=192.0.2.10" in text
    teardown = plan_cluster(inventory=str(files["source"]), flow_name="teardown")
    assert teardown.count("apply [sudo]: kubeadm reset -f") == 3
