"""Stand-ins for the system commands the cluster flows run on a host (NOT the real tools).

Each stand-in host is an sshd instance whose sessions get, through `SetEnv`:
  PATH=<this dir>:/usr/bin:/bin          so these scripts answer before any real tool
  KUBETRAIN_STANDIN_STATE=<dir>          this host's state: calls.log, root/, package db, units
  KUBETRAIN_STANDIN_CLUSTER=<dir>        state shared by the hosts: API endpoint, tokens, nodes
Every call is appended to <state>/calls.log as one JSON line {"tool", "argv"}.

`sudo` (a sh script, ./sudo) runs its command as the (non-root) test user with absolute system
paths (/etc, /var/lib, /opt/cni, /sys/module) rewritten into <state>/root, so the flows' real
shell logic (grep, sed, printf > file, cmp, install) acts on a per-host fake root and never on
this machine.
A file <state>/fail-once/<tool>-<subcommand> makes that call fail once (and is removed).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from pathlib import Path

STATE = Path(os.environ.get("KUBETRAIN_STANDIN_STATE", "/nonexistent-standin-state"))
CLUSTER = Path(os.environ.get("KUBETRAIN_STANDIN_CLUSTER", "/nonexistent-standin-cluster"))
ROOT = STATE / "root"
KUBE_REPO_PACKAGES = {"kubelet", "kubeadm", "kubectl", "kubernetes-cni", "cri-tools"}
DISTRO_PACKAGES = {
    "containerd": "1.7.24-0ubuntu1~24.04.1",
    "apt-transport-https": "2.7.14build2",
    "ca-certificates": "20240203",
    "curl": "8.5.0-2ubuntu10.6",
    "gpg": "2.4.4-2ubuntu17",
}
UNITS = {"containerd": "containerd", "kubelet": "kubelet"}
TOOL_PACKAGE = {"kubeadm": "kubeadm", "kubectl": "kubectl", "containerd": "containerd"}
KNOWN_MODULES = {"overlay", "br_netfilter"}


class Fail(Exception):
    """Exit with a message on stderr."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def log_call(tool: str, argv: list[str]) -> None:
    with (STATE / "calls.log").open("a") as stream:
        stream.write(json.dumps({"tool": tool, "argv": argv}) + "\n")


def fail_once(name: str) -> bool:
    marker = STATE / "fail-once" / name
    if marker.exists():
        marker.unlink()
        return True
    return False


def _rmtree(path: Path) -> None:
    import shutil  # only a few calls need it; every call pays for module imports

    shutil.rmtree(path, ignore_errors=True)


def rooted(path: str) -> Path:
    return ROOT / path.lstrip("/")


def installed(package: str) -> str | None:
    path = STATE / "dpkg" / package
    return path.read_text().strip() if path.exists() else None


def held(package: str) -> bool:
    return (STATE / "held" / package).exists()


def unit_flag(unit: str, flag: str) -> Path:
    return STATE / "systemd" / f"{unit}.{flag}"


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def require_package_tool(tool: str) -> None:
    package = TOOL_PACKAGE.get(tool)
    if package and installed(package) is None:
        raise Fail(f"sh: 1: {tool}: not found", 127)


# -- swap, modules, sysctl -------------------------------------------------------------------


def swapon(argv: list[str]) -> int:
    if "--show" not in argv:
        raise Fail("swapon stand-in: only --show is supported")
    if (STATE / "swap").read_text().strip() != "off":
        print("/swap.img file 2G 0B -2")
    return 0


def swapoff(argv: list[str]) -> int:
    if argv != ["-a"]:
        raise Fail("swapoff stand-in: only -a is supported")
    write(STATE / "swap", "off\n")
    return 0


def modprobe(argv: list[str]) -> int:
    names = [a for a in argv if not a.startswith("-")]
    for name in names:
        if name not in KNOWN_MODULES:
            raise Fail(f"modprobe: FATAL: Module {name} not found in directory /lib/modules")
        if "-r" in argv:
            _rmtree(rooted(f"/sys/module/{name}"))
        else:
            rooted(f"/sys/module/{name}").mkdir(parents=True, exist_ok=True)
    return 0


def _sysctl_exists(key: str) -> bool:
    return not key.startswith("net.bridge.") or rooted("/sys/module/br_netfilter").is_dir()


def _sysctl_set(key: str, value: str) -> None:
    if not _sysctl_exists(key):
        raise Fail(f"sysctl: cannot stat /proc/sys/{key.replace('.', '/')}: No such file", 255)
    write(STATE / "sysctl" / key, value.strip() + "\n")


def sysctl(argv: list[str]) -> int:
    if argv[:1] == ["-p"] or argv == ["--system"]:
        confs = [Path(argv[1])] if argv[:1] == ["-p"] else sorted(rooted("/etc/sysctl.d").glob("*"))
        for conf in confs:
            print(f"* Applying {conf.name}")
            for line in conf.read_text().splitlines():
                if "=" in line and not line.lstrip().startswith("#"):
                    key, _, value = line.partition("=")
                    _sysctl_set(key.strip(), value)
        return 0
    if argv[:1] == ["-w"]:
        key, _, value = argv[1].partition("=")
        _sysctl_set(key, value)
        return 0
    if argv[:1] == ["-n"]:
        key = argv[1]
        if not _sysctl_exists(key):
            raise Fail(f"sysctl: cannot stat /proc/sys/{key.replace('.', '/')}: No such file", 255)
        path = STATE / "sysctl" / key
        print(path.read_text().strip() if path.exists() else "0")
        return 0
    raise Fail(f"sysctl stand-in: unsupported arguments {argv}")


# -- packages --------------------------------------------------------------------------------


def _repo_minor() -> str | None:
    listing = rooted("/etc/apt/sources.list.d/kubernetes.list")
    keyring = rooted("/etc/apt/keyrings/kubernetes-apt-keyring.gpg")
    updated = STATE / "apt-updated"
    if not (listing.exists() and keyring.exists() and updated.exists()):
        return None
    if updated.stat().st_mtime_ns < listing.stat().st_mtime_ns:
        return None  # the list was written after the last `apt-get update`
    match = re.search(r"/v(1\.\d+)/deb/ /", listing.read_text())
    return match.group(1) if match else None


def _candidate(package: str) -> str | None:
    offered = STATE / "offer" / package  # a host whose distribution ships another version
    if offered.exists():
        return offered.read_text().strip()
    if package in DISTRO_PACKAGES:
        return DISTRO_PACKAGES[package]
    if package in KUBE_REPO_PACKAGES:
        minor = _repo_minor()
        if minor is None:
            return None
        return f"{minor}.4-1.1" if package not in {"kubernetes-cni", "cri-tools"} else "1.5.1-1.1"
    return None


def apt_get(argv: list[str]) -> int:
    words = []
    args = list(argv)
    while args:
        arg = args.pop(0)
        if arg == "-o":
            option = args.pop(0)
            if not option.startswith("DPkg::Lock::Timeout="):
                raise Fail(f"apt-get stand-in: unexpected option {option}")
        elif not arg.startswith("-"):
            words.append(arg)
    if not words:
        raise Fail("apt-get stand-in: no command")
    command, packages = words[0], words[1:]
    if command in {"install", "purge", "remove", "autoremove"} and "-y" not in argv:
        raise Fail("apt-get stand-in: refusing to prompt (no -y)")
    if command == "update":
        write(STATE / "apt-updated", "")
        print("Reading package lists... Done")
        return 0
    if command == "install":
        for package in packages:
            version = _candidate(package)
            if version is None:
                raise Fail(f"E: Unable to locate package {package}", 100)
            if held(package) and installed(package) not in (None, version):
                raise Fail(
                    "E: Held packages were changed and -y was used without "
                    "--allow-change-held-packages.",
                    100,
                )
        for package in packages:
            extra = ["kubernetes-cni", "cri-tools"] if package in {"kubelet", "kubeadm"} else []
            for name in [package, *extra]:
                write(STATE / "dpkg" / name, str(_candidate(name)) + "\n")
            if package == "containerd":
                write(unit_flag("containerd", "enabled"), "")
                write(unit_flag("containerd", "active"), "")
            print(f"Setting up {package} ({_candidate(package)}) ...")
        return 0
    if command in {"purge", "remove"}:
        if any(held(p) and installed(p) for p in packages):
            raise Fail(
                "E: Held packages were changed and -y was used without "
                "--allow-change-held-packages.",
                100,
            )
        for package in packages:
            (STATE / "dpkg" / package).unlink(missing_ok=True)
            unit = UNITS.get(package)
            if unit:
                unit_flag(unit, "enabled").unlink(missing_ok=True)
                unit_flag(unit, "active").unlink(missing_ok=True)
            if package == "kubelet":
                _rmtree(rooted("/etc/kubernetes/manifests"))
        return 0
    if command == "autoremove":
        if not any(installed(p) for p in ("kubelet", "kubeadm")):
            for package in ("kubernetes-cni", "cri-tools"):
                (STATE / "dpkg" / package).unlink(missing_ok=True)
        return 0
    raise Fail(f"apt-get stand-in: unsupported command {command}")


def apt_mark(argv: list[str]) -> int:
    command, packages = argv[0], argv[1:]
    if command == "showhold":
        held_dir = STATE / "held"
        for path in sorted(held_dir.iterdir()) if held_dir.exists() else []:
            print(path.name)
        return 0
    for package in packages:
        if installed(package) is None:
            raise Fail(
                f"E: Can't select installed nor candidate version from package '{package}' "  # noqa: S608
                "as it has neither of them",
                100,
            )
    for package in packages:
        if command == "hold":
            write(STATE / "held" / package, "")
            print(f"{package} set on hold.")
        elif command == "unhold":
            (STATE / "held" / package).unlink(missing_ok=True)
            print(f"Canceled hold on {package}.")
        else:
            raise Fail(f"apt-mark stand-in: unsupported command {command}")
    return 0


def dpkg_query(argv: list[str]) -> int:
    fmt = "${Package}\t${Version}\n"
    packages: list[str] = []
    args = list(argv)
    while args:
        arg = args.pop(0)
        if arg == "-W":
            continue
        if arg.startswith(("-f=", "--showformat=")):
            fmt = arg.split("=", 1)[1]
        elif arg in {"-f", "--showformat"}:
            fmt = args.pop(0)
        else:
            packages.append(arg)
    code = 0
    for package in packages:
        version = installed(package)
        if version is None:
            print(f"dpkg-query: no packages found matching {package}", file=sys.stderr)
            code = 1
            continue
        text = (
            fmt.replace("${Status}", "install ok installed")
            .replace("${Version}", version)
            .replace("${Package}", package)
            .replace("\\n", "\n")
        )
        sys.stdout.write(text)
    return code


def systemctl(argv: list[str]) -> int:
    quiet = "--quiet" in argv or "-q" in argv
    now = "--now" in argv
    words = [a for a in argv if not a.startswith("-")]
    command, units = words[0], [u.removesuffix(".service") for u in words[1:]]
    if command == "daemon-reload":
        return 0
    code = 0
    for unit in units:
        package = next((p for p, u in UNITS.items() if u == unit), None)
        exists = package is not None and installed(package) is not None
        if command == "is-active":
            active = exists and unit_flag(unit, "active").exists()
            if not quiet:
                print("active" if active else "inactive")
            code = code or (0 if active else 3)
            continue
        if command == "is-enabled":
            enabled = exists and unit_flag(unit, "enabled").exists()
            if not quiet:
                print("enabled" if enabled else "disabled")
            code = code or (0 if enabled else 1)
            continue
        if not exists:
            raise Fail(f"Failed to {command} {unit}.service: Unit {unit}.service not found.", 5)
        if command in {"enable", "disable"}:
            flag = unit_flag(unit, "enabled")
            if command == "enable":
                write(flag, "")
            else:
                flag.unlink(missing_ok=True)
        if command in {"start", "restart"} or (command == "enable" and now):
            write(unit_flag(unit, "active"), "")
        if command == "stop" or (command == "disable" and now):
            unit_flag(unit, "active").unlink(missing_ok=True)
        if command not in {"enable", "disable", "start", "restart", "stop"}:
            raise Fail(f"systemctl stand-in: unsupported command {command}")
    return code


# `containerd config default`, abridged to the tables the plans touch, per release line. 1.7
# writes config version 2 under io.containerd.grpc.v1.cri; Debian and Ubuntu patch its CNI
# bin_dir to /usr/lib/cni (flannel installs its plugin into /opt/cni/bin). 2.x writes version 3:
# the CRI runtime settings moved to io.containerd.cri.v1.runtime, the runc options no longer
# list SystemdCgroup, and 2.1 replaced cni.bin_dir with the list bin_dirs.
CONTAINERD_1_7_DEFAULT = """\
disabled_plugins = []
imports = []
oom_score = 0
root = "/var/lib/containerd"
state = "/run/containerd"
version = 2

[plugins]

  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "registry.k8s.io/pause:3.8"

    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "/usr/lib/cni"
      conf_dir = "/etc/cni/net.d"
      max_conf_num = 1

    [plugins."io.containerd.grpc.v1.cri".containerd]
      default_runtime_name = "runc"

      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes]

        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
          runtime_type = "io.containerd.runc.v2"

          [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
            BinaryName = ""
            Root = ""
            ShimCgroup = ""
            SystemdCgroup = false
"""
CONTAINERD_2_DEFAULT = """\
version = 3
root = '/var/lib/containerd'
state = '/run/containerd'
temp = ''
plugin_dir = ''
disabled_plugins = []
required_plugins = []
oom_score = 0
imports = []

[plugins]
  [plugins.'io.containerd.cri.v1.images']
    snapshotter = 'overlayfs'

    [plugins.'io.containerd.cri.v1.images'.pinned_images]
      sandbox = 'registry.k8s.io/pause:3.10'

  [plugins.'io.containerd.cri.v1.runtime']
    enable_selinux = false

    [plugins.'io.containerd.cri.v1.runtime'.containerd]
      default_runtime_name = 'runc'

      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes]
        [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
          runtime_type = 'io.containerd.runc.v2'
          sandboxer = 'podsandbox'

          [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
            BinaryName = ''
            NoNewKeyring = false
            Root = ''
            ShimCgroup = ''

    [plugins.'io.containerd.cri.v1.runtime'.cni]
      {bin_dir}
      conf_dir = '/etc/cni/net.d'
      max_conf_num = 1
"""


def _containerd_default() -> str:
    version = installed("containerd") or ""
    major, _, rest = version.partition(".")
    minor = int(rest.split(".")[0]) if rest[:1].isdigit() else 0
    if major != "2":
        return CONTAINERD_1_7_DEFAULT
    bin_dir = "bin_dirs = ['/opt/cni/bin']" if minor >= 1 else "bin_dir = '/opt/cni/bin'"
    return CONTAINERD_2_DEFAULT.replace("{bin_dir}", bin_dir)


def containerd(argv: list[str]) -> int:
    require_package_tool("containerd")
    if argv == ["config", "default"]:
        sys.stdout.write(_containerd_default())
        return 0
    if argv == ["config", "dump"]:
        # The effective configuration: the file if there is one (it must parse), else defaults.
        import tomllib

        path = rooted("/etc/containerd/config.toml")
        text = path.read_text() if path.exists() else _containerd_default()
        try:
            tomllib.loads(text)
        except tomllib.TOMLDecodeError as error:
            raise Fail(
                f"containerd: failed to load TOML from /etc/containerd/config.toml: {error}"
            ) from None
        sys.stdout.write(text)
        return 0
    raise Fail(f"containerd stand-in: unsupported arguments {argv}")


# -- downloads -------------------------------------------------------------------------------

FLANNEL_MANIFEST = """\
apiVersion: v1
kind: Namespace
metadata:
  name: kube-flannel
---
kind: ConfigMap
apiVersion: v1
metadata:
  name: kube-flannel-cfg
  namespace: kube-flannel
data:
  net-conf.json: |
    {
      "Network": "10.244.0.0/16",
      "EnableNFTables": false,
      "Backend": {
        "Type": "vxlan"
      }
    }
---
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: kube-flannel-ds
  namespace: kube-flannel
spec:
  template:
    spec:
      containers:
      - name: kube-flannel
        image: ghcr.io/flannel-io/flannel:v0.28.7
        command:
        - /opt/bin/flanneld
        args:
        - --ip-masq
        - --kube-subnet-mgr
        resources:
          requests:
            cpu: "100m"
"""


def curl(argv: list[str]) -> int:
    output: str | None = None
    urls: list[str] = []
    args = list(argv)
    while args:
        arg = args.pop(0)
        if arg == "-o":
            output = args.pop(0)
        elif arg == "--retry":
            args.pop(0)
        elif not arg.startswith("-"):
            urls.append(arg)
    if len(urls) != 1:
        raise Fail("curl stand-in: exactly one URL expected")
    url = urls[0]
    # Answers by path only: the stand-in never resolves or contacts any host.
    if re.search(r"/v1\.\d+/deb/Release\.key$", url):
        body = (
            "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nmQENBGMHoXcBCADukGOEQyleViOgtkMVa7hKifP6POCTh+"
            "stand-in\n-----END PGP PUBLIC KEY BLOCK-----\n"
        )
    elif re.search(r"/releases/download/v\d+\.\d+\.\d+/kube-flannel\.yml$", url):
        body = FLANNEL_MANIFEST
    else:
        host = url.split("/")[2] if "://" in url else url
        raise Fail(f"curl: (6) Could not resolve host: {host}", 6)
    if output is None:
        sys.stdout.write(body)
    else:
        write(Path(output), body)
    return 0


def gpg(argv: list[str]) -> int:
    if "--dearmor" not in argv or "-o" not in argv:
        raise Fail("gpg stand-in: only --dearmor -o OUT [IN] is supported")
    out = argv[argv.index("-o") + 1]
    rest = [a for a in argv[argv.index("-o") + 2 :] if not a.startswith("-")]
    text = Path(rest[0]).read_text() if rest else sys.stdin.read()
    if "BEGIN PGP PUBLIC KEY BLOCK" not in text:
        raise Fail("gpg: no valid OpenPGP data found.", 2)
    Path(out).write_bytes(b"\x99\x01\x0dstand-in keyring " + hashlib.sha256(text.encode()).digest())
    return 0


# -- kubeadm / kubectl -----------------------------------------------------------------------


def _cluster_file(name: str) -> Path:
    return CLUSTER / name


def _cluster_get(name: str) -> str | None:
    path = _cluster_file(name)
    return path.read_text().strip() if path.exists() else None


def _preflight() -> None:
    errors = []
    if (STATE / "swap").read_text().strip() != "off":
        errors.append("[ERROR Swap]: running with swap on is not supported. Please disable swap")
    if not rooted("/sys/module/br_netfilter").is_dir():
        errors.append(
            "[ERROR FileContent--proc-sys-net-bridge-bridge-nf-call-iptables]: "
            "/proc/sys/net/bridge/bridge-nf-call-iptables does not exist"
        )
    for key in ("net.ipv4.ip_forward", "net.bridge.bridge-nf-call-iptables"):
        path = STATE / "sysctl" / key
        if not path.exists() or path.read_text().strip() != "1":
            errors.append(
                f"[ERROR FileContent--proc-sys-{key.replace('.', '-')}]: contents are not set to 1"
            )
    if not unit_flag("containerd", "active").exists():
        errors.append(
            "[ERROR CRI]: container runtime is not running: validate service connection: "
            "dial unix /var/run/containerd/containerd.sock: connect: no such file or directory"
        )
    if installed("kubelet") is None:
        errors.append("[ERROR FileExisting-kubelet]: kubelet not found in system path")
    if errors:
        raise Fail(
            "[preflight] Running pre-flight checks\nerror execution phase preflight: [preflight] "
            "Some fatal errors occurred:\n\t" + "\n\t".join(errors)
        )


def _flag(argv: list[str], name: str) -> str | None:
    for index, arg in enumerate(argv):
        if arg.startswith(f"{name}="):
            return arg.split("=", 1)[1]
        if arg == name and index + 1 < len(argv):
            return argv[index + 1]
    return None


CONTROL_PLANE_TAINT = "node-role.kubernetes.io/control-plane"


def _register_node(name: str, taints: tuple[str, ...] = ()) -> None:
    # kubeadm init taints its node NoSchedule; joined workers have no taint.
    record = {"root": str(ROOT), "observed": 0, "taints": list(taints)}
    write(CLUSTER / "nodes" / name, json.dumps(record))
    if _cluster_get("cni"):
        _write_cni_files(ROOT)


def _write_cni_files(root: Path) -> None:
    write(root / "etc/cni/net.d/10-flannel.conflist", '{"name": "cbr0", "cniVersion": "0.3.1"}\n')
    write(root / "var/lib/cni/flannel/stand-in", "")
    _network_up(root.parent)


# -- network state kube-proxy and flannel leave on a node ------------------------------------
# What a running node has, and what `kubeadm reset` does not remove: the cni0 bridge, the
# flannel.1 VXLAN device, kube-proxy's and flannel's iptables chains (KUBE-*, FLANNEL-*),
# kube-proxy's nftables tables and, in IPVS mode, its virtual services and kube-ipvs0.

OPERATOR_IPTABLES = {
    "filter": [
        ":OPERATOR-SSH - [0:0]",
        "-A INPUT -j OPERATOR-SSH",
        "-A OPERATOR-SSH -s 192.0.2.0/24 -p tcp -m tcp --dport 22 -j ACCEPT",
    ],
    "nat": ["-A POSTROUTING -o eth0 -j MASQUERADE"],
}
KUBE_IPTABLES = {
    "filter": [
        ":FLANNEL-FWD - [0:0]",
        ":KUBE-FIREWALL - [0:0]",
        ":KUBE-FORWARD - [0:0]",
        '-A INPUT -m comment --comment "kubernetes firewall" -j KUBE-FIREWALL',
        '-A FORWARD -m comment --comment "flanneld forward" -j FLANNEL-FWD',
        '-A FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD',
        '-A FLANNEL-FWD -s 10.244.0.0/16 -m comment --comment "flanneld forward" -j ACCEPT',
        "-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP",
    ],
    "nat": [
        ":FLANNEL-POSTRTG - [0:0]",
        ":KUBE-POSTROUTING - [0:0]",
        ":KUBE-SERVICES - [0:0]",
        '-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
        '-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING',
        '-A POSTROUTING -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG',
        "-A FLANNEL-POSTRTG -s 10.244.0.0/16 -d 10.244.0.0/16 -j RETURN",
        "-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN",
    ],
}
BUILTIN_CHAINS = {
    "filter": ("INPUT", "FORWARD", "OUTPUT"),
    "nat": ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"),
}
TARGETS = {"ACCEPT", "DROP", "RETURN", "MASQUERADE", "REJECT"}


def _iptables_text(rules: dict[str, list[str]]) -> str:
    lines = []
    for table, builtins in BUILTIN_CHAINS.items():
        lines.append(f"*{table}")
        lines.extend(f":{chain} ACCEPT [0:0]" for chain in builtins)
        body = rules.get(table, [])
        lines.extend(line for line in body if line.startswith(":"))
        lines.extend(line for line in body if not line.startswith(":"))
        lines.append("COMMIT")
    return "\n".join(lines) + "\n"


def network_seed(state: Path) -> None:
    """What a fresh host has: the operator's own firewall rules and nftables table."""
    for family in ("v4", "v6"):
        write(state / "net" / f"iptables.{family}", _iptables_text(OPERATOR_IPTABLES))
    write(state / "net" / "nft", "table inet operator\n")


def _network_up(state: Path) -> None:
    links = state / "net" / "links"
    for name in ("cni0", "flannel.1"):
        write(links / name, "")
    for family in ("v4", "v6"):
        path = state / "net" / f"iptables.{family}"
        if "KUBE-" not in (path.read_text() if path.exists() else ""):
            merged = {t: OPERATOR_IPTABLES.get(t, []) + KUBE_IPTABLES[t] for t in BUILTIN_CHAINS}
            write(path, _iptables_text(merged))
    nft = state / "net" / "nft"
    if "kube-proxy" not in (nft.read_text() if nft.exists() else ""):
        write(
            nft,
            (nft.read_text() if nft.exists() else "") + "table ip kube-proxy\n"
            "table ip6 kube-proxy\n",
        )
    if (state / "bin" / "ipvsadm").exists():  # kube-proxy in IPVS mode
        write(links / "kube-ipvs0", "")
        write(state / "net" / "ipvs", "TCP  10.96.0.1:443 rr\nUDP  10.96.0.10:53 rr\n")


def ip(argv: list[str]) -> int:
    links = STATE / "net" / "links"
    if argv[:2] == ["link", "show"] and len(argv) == 3:
        if not (links / argv[2]).exists():
            raise Fail(f'Device "{argv[2]}" does not exist.')
        print(f"7: {argv[2]}: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1450 state UP")
        return 0
    if argv[:2] == ["link", "delete"] and len(argv) == 3:
        if not (links / argv[2]).exists():
            raise Fail("Cannot find device " + f'"{argv[2]}"')
        (links / argv[2]).unlink()
        return 0
    raise Fail(f"ip stand-in: unsupported arguments {argv}")


def _iptables(family: str, argv: list[str]) -> int:
    path = STATE / "net" / f"iptables.{family}"
    tool = "iptables" if family == "v4" else "ip6tables"
    if argv == ["save"]:
        sys.stdout.write(path.read_text() if path.exists() else "")
        return 0
    if argv == ["restore"]:
        text = sys.stdin.read()
        declared: set[str] = set()
        table = ""
        for number, line in enumerate(text.splitlines(), 1):
            if line.startswith("*"):
                table = line[1:]
                declared = set(BUILTIN_CHAINS.get(table, ()))
            elif line.startswith(":"):
                declared.add(line[1:].split()[0])
            elif line.startswith("-A "):
                words = line.split()
                jump = words[words.index("-j") + 1] if "-j" in words else None
                if words[1] not in declared or (jump and jump not in declared | TARGETS):
                    raise Fail(f"{tool}-restore: line {number} failed", 2)
        if not table:
            raise Fail(f"{tool}-restore: no table in input", 2)
        write(path, text)
        return 0
    raise Fail(f"{tool} stand-in: unsupported arguments {argv}")


def nft(argv: list[str]) -> int:
    path = STATE / "net" / "nft"
    tables = path.read_text().splitlines() if path.exists() else []
    if argv == ["list", "tables"]:
        for table in tables:
            print(table)
        return 0
    if argv[:2] == ["delete", "table"] and len(argv) == 4:
        line = f"table {argv[2]} {argv[3]}"
        if line not in tables:
            raise Fail(f"Error: No such file or directory\ndelete table {argv[2]} {argv[3]}")
        write(path, "".join(f"{t}\n" for t in tables if t != line))
        return 0
    raise Fail(f"nft stand-in: unsupported arguments {argv}")


def ipvsadm(argv: list[str]) -> int:
    path = STATE / "net" / "ipvs"
    if argv == ["-Ln"]:
        print("IP Virtual Server version 1.2.1 (size=4096)")
        print("Prot LocalAddress:Port Scheduler Flags\n  -> RemoteAddress:Port Forward Weight")
        sys.stdout.write(path.read_text() if path.exists() else "")
        return 0
    if argv == ["--clear"]:
        path.unlink(missing_ok=True)
        return 0
    raise Fail(f"ipvsadm stand-in: unsupported arguments {argv}")


def _kubeadm_init(argv: list[str]) -> int:
    advertise = _flag(argv, "--apiserver-advertise-address")
    endpoint = _flag(argv, "--control-plane-endpoint")
    node = _flag(argv, "--node-name")
    cidr = _flag(argv, "--pod-network-cidr")
    if not (advertise and node and cidr):
        raise Fail(
            "kubeadm stand-in: init needs --apiserver-advertise-address, --node-name and "
            "--pod-network-cidr"
        )
    if rooted("/etc/kubernetes/manifests/kube-apiserver.yaml").exists():
        raise Fail(
            "[preflight] Running pre-flight checks\nerror execution phase preflight: "
            "[preflight] Some fatal errors occurred:\n\t[ERROR FileAvailable--etc-kubernetes-"
            "manifests-kube-apiserver.yaml]: /etc/kubernetes/manifests/kube-apiserver.yaml "
            "already exists\n\t[ERROR Port-6443]: Port 6443 is in use"
        )
    _preflight()
    for name in ("admin.conf", "kubelet.conf", "super-admin.conf"):
        write(
            rooted(f"/etc/kubernetes/{name}"),
            "apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n"
            "    certificate-authority-data: c3RhbmQtaW4=\n"
            f"    server: https://{endpoint or f'{advertise}:6443'}\n"
            f"  name: kubernetes\n# {name} written by the kubeadm stand-in for {node}\n",
        )
    write(rooted("/etc/kubernetes/manifests/kube-apiserver.yaml"), "kind: Pod\n")
    write(rooted("/etc/kubernetes/pki/ca.crt"), "stand-in CA\n")
    write(rooted("/var/lib/etcd/member/stand-in"), "")
    if fail_once("kubeadm-init"):
        (CLUSTER / "nodes").mkdir(parents=True, exist_ok=True)
        raise Fail(
            "[wait-control-plane] Waiting for the kubelet to boot up the control plane\n"
            "[kubelet-check] The kubelet is not healthy after 4m0s\n"
            "error execution phase wait-control-plane: could not initialize a Kubernetes cluster"
        )
    ca_hash = hashlib.sha256(f"{advertise}/{node}".encode()).hexdigest()
    write(_cluster_file("endpoint"), f"{endpoint or f'{advertise}:6443'}\n")
    write(_cluster_file("ca-hash"), f"sha256:{ca_hash}\n")
    write(_cluster_file("control-plane-state"), f"{STATE}\n")
    write(_cluster_file("pod-cidr"), f"{cidr}\n")
    _register_node(node, (f"{CONTROL_PLANE_TAINT}:NoSchedule",))
    token = _new_token()
    print(
        f"[init] Using Kubernetes version: v{str(installed('kubeadm')).split('-')[0]}\n"
        "[preflight] Running pre-flight checks\n"
        "Your Kubernetes control-plane has initialized successfully!\n\n"
        "Then you can join any number of worker nodes by running the following on each as root:\n\n"
        f"kubeadm join {advertise}:6443 --token {token} \\\n"
        f"\t--discovery-token-ca-cert-hash sha256:{ca_hash} "
    )
    return 0


def _new_token() -> str:
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    token = (
        "".join(alphabet[b % 36] for b in os.urandom(6))
        + "."
        + "".join(alphabet[b % 36] for b in os.urandom(16))
    )
    write(CLUSTER / "tokens" / token, "")
    return token


def _is_control_plane() -> bool:
    return (
        _cluster_get("control-plane-state") == str(STATE)
        and rooted("/etc/kubernetes/admin.conf").exists()
    )


def _kubeadm_join(argv: list[str]) -> int:
    endpoint = argv[1] if len(argv) > 1 else ""
    token = _flag(argv, "--token")
    ca_hash = _flag(argv, "--discovery-token-ca-cert-hash")
    node = _flag(argv, "--node-name")
    if not (token and ca_hash and node):
        raise Fail(
            "kubeadm stand-in: join needs --token, --discovery-token-ca-cert-hash, --node-name"
        )
    for path in ("/etc/kubernetes/kubelet.conf", "/etc/kubernetes/pki/ca.crt"):
        if rooted(path).exists():
            name = path.lstrip("/").replace("/", "-")
            raise Fail(
                "[preflight] Running pre-flight checks\nerror execution phase preflight: "
                f"[preflight] Some fatal errors occurred:\n\t[ERROR FileAvailable--{name}]: "
                f"{path} already exists"
            )
    _preflight()
    if endpoint != _cluster_get("endpoint"):
        raise Fail(
            f"error execution phase preflight: couldn't validate the identity of the API Server: "
            f'Get "https://{endpoint}/api/v1/namespaces/kube-public/configmaps/cluster-info": '
            "dial tcp: connect: connection refused"
        )
    if not (CLUSTER / "tokens" / token).exists():
        raise Fail(
            "error execution phase preflight: couldn't validate the identity of the API Server: "
            "could not find a JWS signature in the cluster-info ConfigMap for token ID "
            f'"{token.split(".")[0]}"'
        )
    if ca_hash != _cluster_get("ca-hash"):
        raise Fail(
            "error execution phase preflight: cluster CA found in cluster-info ConfigMap is "
            "invalid: none of the public keys match"
        )
    write(rooted("/etc/kubernetes/pki/ca.crt"), "stand-in CA\n")
    write(rooted("/etc/kubernetes/bootstrap-kubelet.conf"), "stand-in\n")
    if fail_once("kubeadm-join"):
        raise Fail(
            "[kubelet-start] Waiting for the kubelet to perform the TLS Bootstrap\n"
            "error execution phase kubelet-start: timed out waiting for the condition"
        )
    rooted("/etc/kubernetes/bootstrap-kubelet.conf").unlink()
    write(rooted("/etc/kubernetes/kubelet.conf"), f"stand-in kubelet credentials for {node}\n")
    _register_node(node)
    print("This node has joined the cluster:\n* Certificate signing request was sent to apiserver")
    return 0


def _kubeadm_reset(argv: list[str]) -> int:
    if "-f" not in argv and "--force" not in argv:
        raise Fail("kubeadm stand-in: reset would prompt; use -f")
    was_control_plane = _is_control_plane()
    for name in ("admin.conf", "kubelet.conf", "bootstrap-kubelet.conf", "super-admin.conf"):
        rooted(f"/etc/kubernetes/{name}").unlink(missing_ok=True)
    for directory in ("/etc/kubernetes/manifests", "/etc/kubernetes/pki", "/var/lib/etcd"):
        _rmtree(rooted(directory))
    if was_control_plane:
        for name in (
            "endpoint",
            "ca-hash",
            "control-plane-state",
            "cni",
            "cni-network",
            "pod-cidr",
        ):
            _cluster_file(name).unlink(missing_ok=True)
        _rmtree(CLUSTER / "nodes")
        _rmtree(CLUSTER / "tokens")
    print(
        "[reset] Deleted contents of the etcd data directory: /var/lib/etcd\n"
        "The reset process does not clean CNI configuration. To do so, you must remove "
        "/etc/cni/net.d"
    )
    return 0


def kubeadm(argv: list[str]) -> int:
    require_package_tool("kubeadm")
    if not argv:
        raise Fail("kubeadm stand-in: no command")
    if argv[0] == "init":
        return _kubeadm_init(argv[1:])
    if argv[0] == "join":
        return _kubeadm_join(argv)
    if argv[0] == "reset":
        return _kubeadm_reset(argv)
    if argv[:2] == ["token", "create"] and "--print-join-command" in argv:
        if not _is_control_plane():
            raise Fail(
                "failed to load admin kubeconfig: open /etc/kubernetes/admin.conf: "
                "no such file or directory\nTo see the stack trace of this error execute with --v=5"
            )
        token = _new_token()
        print(
            f"kubeadm join {_cluster_get('endpoint')} --token {token} "
            f"--discovery-token-ca-cert-hash {_cluster_get('ca-hash')} "
        )
        return 0
    raise Fail(f"kubeadm stand-in: unsupported arguments {argv}")


def _taints(node: dict[str, object]) -> list[str]:
    taints = node.get("taints", [])
    return [str(taint) for taint in taints] if isinstance(taints, list) else []


def _nodes() -> dict[str, dict[str, object]]:
    directory = CLUSTER / "nodes"
    if not directory.exists():
        return {}
    return {path.name: json.loads(path.read_text()) for path in sorted(directory.iterdir())}


def kubectl(argv: list[str]) -> int:
    require_package_tool("kubectl")
    args = list(argv)
    kubeconfig = _flag(args, "--kubeconfig")
    output = _flag(args, "-o") or ""
    namespace = _flag(args, "-n") or _flag(args, "--namespace") or "default"
    words: list[str] = []
    while args:
        arg = args.pop(0)
        if arg in {"-n", "--namespace", "-o", "-f"}:
            value = args.pop(0)
            if arg == "-f":
                words.append(f"-f={value}")
            continue
        if not arg.startswith("-") or arg.startswith("-f="):
            words.append(arg)
    if kubeconfig is None or not Path(kubeconfig).exists():
        raise Fail(f"error: stat {kubeconfig}: no such file or directory")
    endpoint = _cluster_get("endpoint")
    if endpoint is None or _cluster_get("control-plane-state") != str(STATE):
        raise Fail(
            f"The connection to the server {endpoint or 'localhost:8080'} was refused - "
            "did you specify the right host or port?"
        )
    cni = _cluster_get("cni")
    nodes = _nodes()
    verb = words[0] if words else ""
    if verb == "get" and words[1:2] == ["node"]:
        name = words[2]
        if name not in nodes:
            raise Fail(f'Error from server (NotFound): nodes "{name}" not found')
        if output == "jsonpath={.spec.taints[*].key}":
            print(" ".join(t.split(":")[0] for t in _taints(nodes[name])))
        elif output == "name":
            print(f"node/{name}")
        else:
            raise Fail(f"kubectl stand-in: unsupported output {output}")
        return 0
    if verb == "taint" and words[1:2] == ["nodes"]:
        name, change = words[2], words[3]
        if name not in nodes:
            raise Fail(f'Error from server (NotFound): nodes "{name}" not found')
        taints = _taints(nodes[name])
        if not change.endswith("-"):
            raise Fail("kubectl stand-in: only taint removal (KEY:EFFECT-) is supported")
        if change[:-1] not in taints:
            raise Fail(f'error: taint "{change[:-1]}" not found')
        taints.remove(change[:-1])
        write(CLUSTER / "nodes" / name, json.dumps(nodes[name] | {"taints": taints}))
        print(f"node/{name} untainted")
        return 0
    if verb == "get" and words[1:2] == ["nodes"]:
        for name, node in nodes.items():
            if cni is not None:
                node["observed"] = int(str(node["observed"])) + 1
                write(CLUSTER / "nodes" / name, json.dumps(node))
                _write_cni_files(Path(str(node["root"])))
            ready = cni is not None and int(str(node["observed"])) >= 2
            print(f"{name}={'True' if ready else 'False'}")
        return 0
    if verb == "get" and words[1:2] == ["pods"] and namespace == "kube-system":
        control = next(iter(nodes), "control-plane")
        for component in ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"):
            print(f"{component}-{control}=True")
        for index in range(len(nodes)):
            print(f"kube-proxy-{index:05d}=True")
        for suffix in ("7c65d6cfc9-4xk2p", "7c65d6cfc9-q8r6m"):
            print(f"coredns-{suffix}={'True' if cni else 'False'}")
        return 0
    if verb == "get" and words[1:3] == ["daemonset", "kube-flannel-ds"]:
        if cni is None or namespace != "kube-flannel":
            raise Fail(f'Error from server (NotFound): namespaces "{namespace}" not found')
        sys.stdout.write(_cluster_get("cni-annotation") or "")
        return 0
    if verb == "apply":
        source = next((w.split("=", 1)[1] for w in words if w.startswith("-f=")), None)
        text = sys.stdin.read() if source in (None, "-") else Path(str(source)).read_text()
        if "kube-flannel-ds" not in text:
            raise Fail("error: no objects passed to apply")
        match = re.search(r'"Network": "([^"]+)"', text)
        listed = re.search(r"\n( +)args:\n((?:\1- .*\n)+)", text)
        flannel_args = [line.strip()[2:] for line in listed.group(2).splitlines()] if listed else []
        write(_cluster_file("flannel-args"), " ".join(flannel_args) + "\n")
        write(_cluster_file("cni"), "flannel\n")
        write(_cluster_file("cni-network"), (match.group(1) if match else "") + "\n")
        for node in nodes.values():
            _write_cni_files(Path(str(node["root"])))
        print(
            "namespace/kube-flannel created\nconfigmap/kube-flannel-cfg created\n"
            "daemonset.apps/kube-flannel-ds created"
        )
        return 0
    if verb == "annotate" and words[1:3] == ["daemonset", "kube-flannel-ds"]:
        if cni is None or namespace != "kube-flannel":
            raise Fail(f'Error from server (NotFound): namespaces "{namespace}" not found')
        key, _, value = words[3].partition("=")
        if key != "kubetrain.io/cni":
            raise Fail(f"kubectl stand-in: unexpected annotation {key}")
        write(_cluster_file("cni-annotation"), value)
        print("daemonset.apps/kube-flannel-ds annotated")
        return 0
    raise Fail(f"kubectl stand-in: unsupported arguments {argv}")


TOOLS = {
    "swapon": swapon,
    "swapoff": swapoff,
    "modprobe": modprobe,
    "sysctl": sysctl,
    "apt-get": apt_get,
    "apt-mark": apt_mark,
    "dpkg-query": dpkg_query,
    "systemctl": systemctl,
    "containerd": containerd,
    "curl": curl,
    "gpg": gpg,
    "kubeadm": kubeadm,
    "kubectl": kubectl,
    "ip": ip,
    "iptables-save": lambda argv: _iptables("v4", ["save", *argv]),
    "iptables-restore": lambda argv: _iptables("v4", ["restore", *argv]),
    "ip6tables-save": lambda argv: _iptables("v6", ["save", *argv]),
    "ip6tables-restore": lambda argv: _iptables("v6", ["restore", *argv]),
    "nft": nft,
    "ipvsadm": ipvsadm,
}


def main(tool: str) -> None:
    """Run the stand-in named tool with sys.argv[1:]; record the call first."""
    os.umask(0)  # state is shared by several test users (one per stand-in host)
    if not STATE.is_dir():
        print(f"{tool} stand-in: KUBETRAIN_STANDIN_STATE is not set up", file=sys.stderr)
        sys.exit(97)
    argv = sys.argv[1:]
    log_call(tool, argv)
    try:
        code = TOOLS[tool](argv)
    except Fail as error:
        print(str(error), file=sys.stderr)
        code = error.code
    sys.stdout.flush()
    sys.exit(code)
