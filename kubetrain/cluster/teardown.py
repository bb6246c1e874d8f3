"""The teardown catalogue: undo what bootstrap did, including what `kubeadm reset` leaves.

kubeadm reset says it does not clean CNI configuration, iptables/nftables rules or IPVS tables,
and it does not delete the interfaces flannel and kube-proxy created; a later bootstrap on the
same machines then meets stale routes and rules. Each cleanup is check-then-apply and touches
only what kube-proxy and flannel made: chains named KUBE-* and FLANNEL-*, nftables tables named
kube-proxy and flannel, the cni0, flannel.1 and kube-ipvs0 devices, IPVS services (where ipvsadm
is installed, kube-proxy is the one that makes them on a node).
"""

from __future__ import annotations

from kubetrain.cluster.inventory import Inventory
from kubetrain.cluster.plans import ADMIN_CONF, APT, APT_LIST, KEYRING, KUBE_PACKAGES
from kubetrain.cluster.steps import Command, Step

LINKS = ("cni0", "flannel.1", "kube-ipvs0")
# iptables-save lines of our chains: their declarations, their rules, and jumps into them.
_OUR_IPTABLES = "'^:(KUBE|FLANNEL)-|^-[AI] (KUBE|FLANNEL)-| -[jg] (KUBE|FLANNEL)-'"
_OUR_NFT = "'table (ip|ip6|inet) (kube-proxy|flannel)'"


def network_cleanup_steps() -> tuple[Step, ...]:
    """Interfaces, iptables chains, nftables tables and IPVS services of kube-proxy and flannel."""
    families = ("iptables", "ip6tables")
    return (
        Step(
            name="cni-interfaces",
            summary=f"{', '.join(LINKS)} deleted (kubeadm reset leaves them)",
            check=Command(" && ".join(f"! ip link show {link} >/dev/null 2>&1" for link in LINKS)),
            apply=tuple(
                Command(f"if ip link show {link} >/dev/null 2>&1; then ip link delete {link}; fi")
                for link in LINKS
            ),
        ),
        Step(
            name="kube-iptables-rules",
            summary="iptables chains KUBE-* and FLANNEL-* removed; every other rule kept",
            check=Command(
                " && ".join(f"! {t}-save 2>/dev/null | grep -Eq {_OUR_IPTABLES}" for t in families)
            ),
            apply=tuple(
                Command(
                    f"if command -v {t}-save >/dev/null; then"
                    f" {t}-save | grep -Ev {_OUR_IPTABLES} | {t}-restore; fi"
                )
                for t in families
            ),
        ),
        Step(
            name="kube-nftables",
            summary="nftables tables kube-proxy and flannel deleted; other tables kept",
            check=Command(f"! nft list tables 2>/dev/null | grep -Eqx {_OUR_NFT}"),
            apply=(
                Command(
                    f"nft list tables | grep -Ex {_OUR_NFT} | while read -r _ family name;"
                    ' do nft delete table "$family" "$name" || exit 1; done'
                ),
            ),
        ),
        Step(
            name="ipvs-services",
            summary="IPVS virtual services cleared (only where ipvsadm is installed)",
            check=Command(
                "! command -v ipvsadm >/dev/null || ! ipvsadm -Ln | grep -Eq '^(TCP|UDP|SCTP|FWM) '"
            ),
            apply=(Command("ipvsadm --clear"),),
        ),
    )


def teardown_steps(inventory: Inventory, purge_packages: bool) -> tuple[Step, ...]:
    """kubeadm reset, CNI files, interfaces and rules, kubeconfig; packages purged if asked."""
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
        *network_cleanup_steps(),
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
