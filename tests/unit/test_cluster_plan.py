"""The cluster plan: golden command lists per step, join-command parsing, and the runner's logic.

Golden files (tests/golden/cluster-*.txt) hold the exact commands for one host per phase, for a
reviewer to read. After an intended change, regenerate them with
`KUBETRAIN_UPDATE_GOLDEN=1 .venv/bin/pytest tests/unit/test_cluster_plan.py` and review the diff.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from kubetrain.cluster import (
    JOIN_TOKEN_COMMAND,
    AnyStep,
    ClusterReport,
    ClusterStepError,
    Command,
    Host,
    Inventory,
    Step,
    WaitSpec,
    WaitStep,
    control_plane_steps,
    full_plan,
    join_steps,
    nodes_ready_step,
    parse_inventory,
    parse_join_command,
    parse_ready,
    prepare_steps,
    render_full_plan,
    render_plan,
    run_steps,
    teardown_steps,
)
from kubetrain.ssh import CommandResult, SshTransientError

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
HASH = "sha256:" + "3f" * 32
# Exactly what `kubeadm token create --print-join-command` prints (note the trailing space).
REAL_JOIN_OUTPUT = (
    f"kubeadm join 192.0.2.10:6443 --token abcdef.0123456789abcdef "
    f"--discovery-token-ca-cert-hash {HASH} \n"
)


@pytest.fixture
def inventory(tmp_path: Path) -> Inventory:
    key = tmp_path / "key"
    key.write_text("k")
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("")
    data = {
        "kubernetes_version": "1.36",
        "ssh": {"user": "ubuntu", "key": {"path": str(key)}, "known_hosts": str(known_hosts)},
        "control_plane": {"name": "cp-1", "address": "192.0.2.10"},
        "workers": [
            {"name": "worker-1", "address": "192.0.2.11"},
            {"name": "worker-2", "address": "192.0.2.12", "user": "root", "sudo": False},
        ],
    }
    return parse_inventory(data, Path("/srv/kubetrain/inventory.yaml"))


def step_named(steps: tuple[AnyStep, ...], name: str) -> Step:
    """The check-then-apply step called name."""
    (step,) = [s for s in steps if s.name == name]
    assert isinstance(step, Step), f"{name} is a {type(step).__name__}, not a check-then-apply"
    return step


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("KUBETRAIN_UPDATE_GOLDEN") == "1":
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"missing golden file {path}: run with KUBETRAIN_UPDATE_GOLDEN=1"
    assert text == path.read_text(), f"plan differs from {path}; review, then regenerate"


def test_golden_prepare_plan(inventory):
    host = inventory.control_plane
    check_golden("cluster-prepare.txt", render_plan(host, prepare_steps(inventory, host)))


def test_golden_control_plane_plan(inventory):
    host = inventory.control_plane
    check_golden("cluster-control-plane.txt", render_plan(host, control_plane_steps(inventory)))


def test_golden_join_plan(inventory):
    worker = inventory.workers[0]
    join = parse_join_command(REAL_JOIN_OUTPUT)
    steps: tuple[AnyStep, ...] = (*join_steps(worker, join), nodes_ready_step(inventory))
    text = render_plan(worker, steps)
    check_golden("cluster-join.txt", text)
    assert "abcdef.0123456789abcdef" not in text


def test_golden_teardown_plan(inventory):
    worker = inventory.workers[0]
    check_golden("cluster-teardown.txt", render_plan(worker, teardown_steps(inventory, True)))


def test_sudo_hosts_get_sudo_n_sh_c_and_root_hosts_plain_commands(inventory):
    command = Command("swapoff -a && echo 'done'")
    sudo_host, root_host = inventory.workers
    assert command.wire(sudo_host) == "sudo -n sh -c 'swapoff -a && echo '\"'\"'done'\"'\"''"
    assert command.wire(root_host) == "swapoff -a && echo 'done'"
    assert Command('[ -e "$HOME/x" ]', sudo=False).wire(sudo_host) == '[ -e "$HOME/x" ]'
    plan = render_plan(root_host, prepare_steps(inventory, root_host))
    assert "[sudo]" not in plan


def test_user_kubeconfig_runs_sudo_inside_the_users_shell(inventory):
    step = step_named(control_plane_steps(inventory), "user-kubeconfig")
    # $HOME and id must expand in the SSH user's shell, not root's.
    assert step.apply[1].wire(inventory.control_plane).startswith("sudo -n install -m 0600")
    assert '"$HOME/.kube/config"' in step.apply[1].text


def test_pod_cidr_is_written_into_the_flannel_manifest(inventory, tmp_path):
    inventory_data = {
        "kubernetes_version": "1.30",
        "single_node": True,
        "pod_network_cidr": "10.32.0.0/16",
        "ssh": {
            "key": {"path": str(inventory.control_plane.key.path)},
            "known_hosts": str(inventory.control_plane.known_hosts),
        },
        "control_plane": {"name": "cp-1", "address": "192.0.2.10"},
    }
    custom = parse_inventory(inventory_data, tmp_path / "inv.yaml")
    steps = control_plane_steps(custom)
    assert "--pod-network-cidr=10.32.0.0/16" in step_named(steps, "kubeadm-init").apply[0].text
    assert '"Network": "10.32.0.0/16"' in step_named(steps, "cni").apply[0].text
    repo = step_named(prepare_steps(custom, custom.control_plane), "kubernetes-apt-repo")
    assert "/v1.30/deb/" in repo.check.text


# -- join command ----------------------------------------------------------------------------


def test_join_command_parsed_from_real_output():
    join = parse_join_command(REAL_JOIN_OUTPUT)
    assert join.endpoint == "192.0.2.10:6443"
    assert join.token == "abcdef.0123456789abcdef"
    assert join.ca_cert_hash == HASH
    command = join.command("worker-1")
    assert command.text == (
        "kubeadm join 192.0.2.10:6443 --token abcdef.0123456789abcdef "
        f"--discovery-token-ca-cert-hash {HASH} --node-name=worker-1"
    )
    assert "abcdef.0123456789abcdef" not in command.shown()
    assert "abcdef.0123456789abcdef" not in repr(join)


def test_join_command_with_warnings_around_it():
    output = "W1128 17:00:00.000000 warning: something\n" + REAL_JOIN_OUTPUT + "\n"
    assert parse_join_command(output).endpoint == "192.0.2.10:6443"


@pytest.mark.parametrize(
    "output",
    [
        "",
        "kubeadm join 192.0.2.10:6443 --token ABCDEF.0123456789abcdef "
        f"--discovery-token-ca-cert-hash {HASH}",
        "kubeadm join 192.0.2.10:6443 --token abcdef.0123456789abcdef "
        "--discovery-token-ca-cert-hash sha256:1234",
        "kubeadm join 192.0.2.10 --token abcdef.0123456789abcdef "
        f"--discovery-token-ca-cert-hash {HASH}",
        REAL_JOIN_OUTPUT + REAL_JOIN_OUTPUT,
        REAL_JOIN_OUTPUT.strip() + " ; rm -rf /",
    ],
)
def test_malformed_join_commands_are_rejected(output):
    with pytest.raises(ValueError, match="join") as caught:
        parse_join_command(output)
    assert "0123456789abcdef" not in str(caught.value)


def test_join_token_command_is_fresh_and_short_lived():
    assert JOIN_TOKEN_COMMAND.text == "kubeadm token create --print-join-command --ttl 30m"


def test_parse_ready():
    output = "cp-1=True\nworker-1=False\n---\netcd-cp-1=True\ncoredns-1=\n"
    nodes, pods = parse_ready(output)
    assert nodes == {"cp-1": True, "worker-1": False}
    assert pods == {"etcd-cp-1": True, "coredns-1": False}


# -- runner ----------------------------------------------------------------------------------


@dataclass
class FakeRemote:
    """Answers commands from a script of (substring → result); records what ran."""

    answers: list[tuple[str, int, str, str]]
    ran: list[str] = field(default_factory=list)

    def run(self, command: str, timeout: float) -> CommandResult:
        self.ran.append(command)
        for index, (needle, code, out, err) in enumerate(self.answers):
            if needle in command:
                del self.answers[index]
                return CommandResult(command, code, out, err)
        raise AssertionError(f"unexpected command {command}")

    def fetch(self, remote_path: str) -> bytes | None:
        return None


STEPS = (
    Step("one", "first", Command("check-one"), (Command("apply-one"),)),
    Step("two", "second", Command("check-two"), (Command("apply-two-a"), Command("apply-two-b"))),
    Step("three", "third", Command("check-three"), (Command("apply-three"),)),
)


def host_of(inventory: Inventory) -> Host:
    return inventory.workers[1]  # root, no sudo: commands go as written


def test_satisfied_steps_apply_nothing(inventory):
    remote = FakeRemote([("check-", 0, "", "")] * 3)
    results = run_steps(remote, host_of(inventory), STEPS, dry_run=False)
    assert [r.status for r in results] == ["satisfied"] * 3
    assert remote.ran == ["check-one", "check-two", "check-three"]
    report = ClusterReport("bootstrap-cluster", False, results)
    assert "nothing to do" in report.summary()
    assert report.changed is False


def test_failed_check_applies_then_rechecks(inventory):
    remote = FakeRemote(
        [("check-one", 1, "", "no"), ("apply-one", 0, "", ""), ("check-one", 0, "", "")]
        + [("check-", 0, "", "")] * 2
    )
    results = run_steps(remote, host_of(inventory), STEPS, dry_run=False)
    assert [r.status for r in results] == ["applied", "satisfied", "satisfied"]
    assert remote.ran[:3] == ["check-one", "apply-one", "check-one"]


def test_dry_run_never_applies_and_says_why(inventory):
    remote = FakeRemote([("check-one", 1, "", "swap is on"), ("check-", 0, "", "")] * 2)
    results = run_steps(remote, host_of(inventory), STEPS, dry_run=True)
    assert [r.status for r in results] == ["would-apply", "satisfied", "satisfied"]
    assert not any("apply" in command for command in remote.ran)
    assert "check exited 1: check-one" in results[0].reason
    assert "swap is on" in results[0].reason
    assert results[0].commands == ["apply-one"]


def test_failing_apply_names_host_step_command_exit_code_and_stderr_tail(inventory):
    remote = FakeRemote(
        [
            ("check-one", 0, "", ""),
            ("check-two", 1, "", ""),
            ("apply-two-a", 0, "", ""),
            ("apply-two-b", 100, "", "noise\n" * 500 + "E: Unable to locate package kubelet"),
        ]
    )
    with pytest.raises(ClusterStepError) as caught:
        run_steps(remote, host_of(inventory), STEPS, dry_run=False)
    error = caught.value
    assert (error.host, error.step, error.command, error.exit_code) == (
        "worker-2 (192.0.2.12)",
        "two",
        "apply-two-b",
        100,
    )
    assert str(error).startswith("host worker-2 (192.0.2.12), step two: `apply-two-b` failed")
    assert error.detail.endswith("E: Unable to locate package kubelet")
    assert len(error.detail) < 1000
    assert [(r.step, r.status) for r in error.results] == [
        ("one", "satisfied"),
        ("two", "failed"),
        ("three", "skipped"),
    ]
    assert "check-three" not in remote.ran


def test_check_still_failing_after_apply_is_an_error(inventory):
    remote = FakeRemote(
        [("check-one", 1, "", ""), ("apply-one", 0, "", ""), ("check-one", 1, "", "still")]
    )
    with pytest.raises(ClusterStepError, match="every apply command succeeded but the check"):
        run_steps(remote, host_of(inventory), STEPS[:1], dry_run=False)


def test_ssh_failure_becomes_a_step_error(inventory):
    class Dropping(FakeRemote):
        def run(self, command: str, timeout: float) -> CommandResult:
            raise SshTransientError("the SSH connection dropped before the remote command exited")

    with pytest.raises(ClusterStepError) as caught:
        run_steps(Dropping([]), host_of(inventory), STEPS, dry_run=False)
    assert caught.value.exit_code is None
    assert "connection dropped" in str(caught.value)


def test_wait_polls_until_ready(inventory):
    step = nodes_ready_step(inventory)
    not_ready = "cp-1=True\nworker-1=True\nworker-2=False\n"
    ready = "cp-1=True\nworker-1=True\nworker-2=True\n"
    remote = FakeRemote([("get nodes", 0, not_ready, "")] * 3 + [("get nodes", 0, ready, "")])
    sleeps: list[float] = []
    results = run_steps(
        remote,
        inventory.control_plane,
        (step,),
        dry_run=False,
        wait=WaitSpec(timeout=60, interval=2),
        sleep=sleeps.append,
    )
    assert results[0].status == "applied"
    assert "node worker-2" in results[0].reason
    assert sleeps == [2, 2, 2]


def test_wait_times_out_with_what_is_not_ready(inventory):
    step = nodes_ready_step(inventory)
    remote = FakeRemote([("get nodes", 0, "cp-1=True\nworker-1=False\n", "")] * 1000)
    with pytest.raises(ClusterStepError) as caught:
        run_steps(
            remote,
            inventory.control_plane,
            (step,),
            dry_run=False,
            wait=WaitSpec(timeout=0.05, interval=0.01),
        )
    message = str(caught.value)
    assert "timed out after 0.05s waiting for node worker-1, node worker-2" in message


def test_wait_in_dry_run_only_looks(inventory):
    step = control_plane_steps(inventory)[-1]
    remote = FakeRemote([("get nodes", 1, "", "connection refused")])
    results = run_steps(remote, inventory.control_plane, (step,), dry_run=True)
    assert results[0].status == "would-apply"
    assert "the API server to answer" in results[0].reason
    assert len(remote.ran) == 1


def test_connection_problems_name_the_host_and_step(inventory):
    from kubetrain.cluster import open_remote

    # The fixture's key file is not a key: kubetrain/ssh refuses it before any network traffic.
    with pytest.raises(ClusterStepError) as caught:
        open_remote(inventory.workers[0])
    error = caught.value
    assert (error.host, error.step, error.exit_code) == ("worker-1 (192.0.2.11)", "connect", None)
    assert "ssh ubuntu@192.0.2.11 -p 22" in str(error)
    assert "not a readable ed25519, ECDSA or RSA private key" in str(error)


# -- containerd ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "ok"),
    [
        (
            '[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]\n'
            "  SystemdCgroup = true\n"
            '[plugins."io.containerd.grpc.v1.cri".cni]\n  bin_dir = "/opt/cni/bin"\n',
            True,
        ),
        (
            "[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]\n"
            "  SystemdCgroup = true\n"
            "[plugins.'io.containerd.cri.v1.runtime'.cni]\n  bin_dirs = ['/opt/cni/bin']\n",
            True,
        ),
        # The setting under another table (where a blind append lands) does not count.
        (
            "[plugins.'io.containerd.cri.v1.runtime'.cni]\n  bin_dirs = ['/opt/cni/bin']\n"
            "  SystemdCgroup = true\n",
            False,
        ),
        (
            "[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]\n"
            "  SystemdCgroup = true\n"
            "[plugins.'io.containerd.cri.v1.runtime'.cni]\n  bin_dir = '/usr/lib/cni'\n",
            False,
        ),
    ],
)
def test_containerd_check_reads_the_effective_config_by_table(inventory, config, ok):
    import subprocess

    check = step_named(prepare_steps(inventory, inventory.control_plane), "containerd").check.text
    awk = check[check.index("awk '") : check.index(" && systemctl")]
    done = subprocess.run(["sh", "-c", awk], input=config, text=True, check=False, timeout=10)
    assert (done.returncode == 0) is ok


# -- one node --------------------------------------------------------------------------------

UNTAINT = "node-role.kubernetes.io/control-plane:NoSchedule-"


def test_single_node_untaints_the_control_plane_and_only_then(inventory, tmp_path):
    assert UNTAINT not in render_plan(inventory.control_plane, control_plane_steps(inventory))
    data = {
        "kubernetes_version": "1.36",
        "single_node": True,
        "ssh": {
            "key": {"path": str(inventory.control_plane.key.path)},
            "known_hosts": str(inventory.control_plane.known_hosts),
        },
        "control_plane": {"name": "cp-1", "address": "192.0.2.10"},
    }
    single = parse_inventory(data, tmp_path / "inv.yaml")
    steps = control_plane_steps(single)
    step = step_named(steps, "control-plane-schedulable")
    assert [command.text for command in step.apply] == [
        f"kubectl --kubeconfig=/etc/kubernetes/admin.conf --request-timeout=10s taint nodes cp-1 "
        f"{UNTAINT}"
    ]
    assert "spec.taints" in step.check.text
    names = [s.name for s in steps]
    assert names.index("kubeadm-init") < names.index("control-plane-schedulable")


# -- the full plan and the properties that matter (independent of the golden files) ----------

# Words that change a machine; a check runs in every dry run, so it must contain none of them.
MUTATING = re.compile(
    r"\b(rm|mkdir|install -|apt-get|apt-mark (un)?hold|modprobe|swapoff|sysctl -p|kubeadm "
    r"(init|join|reset)|systemctl (enable|restart|start|stop)|ip link delete|iptables-restore|"
    r"ip6tables-restore|ipvsadm --clear|nft delete|taint|annotate|kubectl [^|]* apply)\b|"
    r"sed -[A-Za-z]*i|>(?!&|\s*/dev/null)"
)


def single_node_inventory(inventory: Inventory, tmp_path: Path, version: str = "1.36"):
    data = {
        "kubernetes_version": version,
        "single_node": True,
        "ssh": {
            "key": {"path": str(inventory.control_plane.key.path)},
            "known_hosts": str(inventory.control_plane.known_hosts),
        },
        "control_plane": {"name": "cp-1", "address": "192.0.2.10"},
    }
    return parse_inventory(data, tmp_path / "inv.yaml")


def test_full_bootstrap_plan_covers_every_host_in_the_order_the_flow_runs(inventory):
    plan = full_plan(inventory, "bootstrap")
    assert [host.name for host, _ in plan] == ["cp-1", "worker-1", "worker-2", "cp-1"]
    cp_steps = [step.name for step in plan[0][1]]
    assert cp_steps[0] == "swap-off"
    assert cp_steps.index("containerd") < cp_steps.index("kubeadm-init") < cp_steps.index("cni")
    for _, steps in plan[1:3]:
        assert [s.name for s in steps][-1] == "kubeadm-join"
        assert "kubeadm-init" not in [s.name for s in steps]
    assert [s.name for s in plan[-1][1]] == ["nodes-ready"]
    teardown = full_plan(inventory, "teardown")
    assert {host.name for host, _ in teardown} == {"cp-1", "worker-1", "worker-2"}


def test_every_check_is_read_only_so_dry_runs_change_nothing(inventory, tmp_path):
    single = single_node_inventory(inventory, tmp_path)
    checked = 0
    for inv in (inventory, single):
        for flow_name in ("bootstrap", "join", "teardown"):
            for _, steps in full_plan(inv, flow_name):
                for step in steps:
                    if isinstance(step, Step):
                        assert step.apply, f"{step.name} has a check but nothing to apply"
                        found = MUTATING.search(step.check.text)
                        assert found is None, f"{step.name}'s check mutates: {found}"
                        checked += 1
                    elif isinstance(step, WaitStep):
                        assert MUTATING.search(step.probe.text) is None
    assert checked > 30


@pytest.mark.parametrize("release", ["1.7", "2.0", "2.1"])
def test_containerd_edits_land_in_each_versions_own_tables(inventory, tmp_path, release):
    import subprocess
    import tomllib

    from kubetrain.cluster.plans import CONTAINERD_CONFIG
    from tests.standins import standin

    default = {
        "1.7": standin.CONTAINERD_1_7_DEFAULT,
        "2.0": standin.CONTAINERD_2_DEFAULT.replace("{bin_dir}", "bin_dir = '/opt/cni/bin'"),
        "2.1": standin.CONTAINERD_2_DEFAULT.replace("{bin_dir}", "bin_dirs = ['/opt/cni/bin']"),
    }[release]
    config = tmp_path / "config.toml"
    config.write_text(default)
    step = step_named(prepare_steps(inventory, inventory.control_plane), "containerd")
    edits = [
        c.text for c in step.apply if CONTAINERD_CONFIG in c.text and "config default" not in c.text
    ]
    assert len(edits) == 3
    for edit in edits:
        subprocess.run(
            ["sh", "-c", edit.replace(CONTAINERD_CONFIG, str(config))], check=True, timeout=10
        )
    parsed = tomllib.loads(config.read_text())
    cri = "io.containerd.grpc.v1.cri" if release == "1.7" else "io.containerd.cri.v1.runtime"
    runc = parsed["plugins"][cri]["containerd"]["runtimes"]["runc"]
    assert runc["options"]["SystemdCgroup"] is True
    assert config.read_text().count("SystemdCgroup") == 1
    cni = parsed["plugins"][cri]["cni"]
    assert cni.get("bin_dirs", [cni.get("bin_dir")]) in (["/opt/cni/bin"],)
    assert runc["runtime_type"] == "io.containerd.runc.v2"  # the rest of the default is kept
    awk = step.check.text[step.check.text.index("awk '") : step.check.text.index(" && systemctl")]
    assert (
        subprocess.run(["sh", "-c", f"{awk} < {config}"], check=False, timeout=10).returncode == 0
    )


def test_the_join_token_never_appears_in_a_plan_or_report(inventory):
    join = parse_join_command(REAL_JOIN_OUTPUT)
    worker = inventory.workers[0]
    text = render_plan(worker, join_steps(worker, join)) + render_full_plan(inventory, "join")
    assert join.token not in text
    assert "--token <redacted>" in text
    assert "--token <fresh token>" in text
    # The only command carrying the token is the one sent to the worker.
    (sent,) = [c for c in join_steps(worker, join)[0].apply if join.token in c.text]
    assert join.token not in sent.shown()


def test_full_plan_names_an_unsupported_version(inventory, tmp_path):
    old = single_node_inventory(inventory, tmp_path, version="1.29")
    text = render_full_plan(old, "bootstrap")
    assert text.splitlines()[1].startswith("# WARNING: kubernetes_version 1.29 is older than")
    assert "control-plane-schedulable" in text
