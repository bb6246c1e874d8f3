"""The tool versions the plans target: the one place to update when releases move on.

Kubernetes minors with upstream patch support and each one's end-of-life date, from
https://kubernetes.io/releases/ as of December 2026 (1.33 and 1.34 reached end of life in June
and October 2026). Review at each minor release (about every four months).
"""

from __future__ import annotations

SUPPORTED_KUBERNETES = {"1.35": "2027-02-28", "1.36": "2027-06-28", "1.37": "2027-10-28"}
# The newest minor out long enough to have had several patch releases.
DEFAULT_KUBERNETES = "1.36"
# A flannel release of July 2026 (v0.28.7); its kube-flannel.yml is what the plans apply.
DEFAULT_FLANNEL = "v0.28.7"


def _minor(version: str) -> int:
    return int(version.split(".")[1])


def support_window() -> str:
    """The supported minors as a range, e.g. "1.35-1.37"."""
    ordered = sorted(SUPPORTED_KUBERNETES, key=_minor)
    return f"{ordered[0]}-{ordered[-1]}"


def kubernetes_warning(version: str) -> str | None:
    """A warning when a Kubernetes minor is outside the supported window, else None."""
    if version in SUPPORTED_KUBERNETES:
        return None
    when = (
        "older than" if _minor(version) < min(map(_minor, SUPPORTED_KUBERNETES)) else "newer than"
    )
    return (
        f"kubernetes_version {version} is {when} the supported window {support_window()} "
        "(minors with upstream patch support; see kubetrain/cluster/versions.py): it may get no "
        "security fixes, or its package channel may be missing. Consider "
        f'kubernetes_version: "{DEFAULT_KUBERNETES}".'
    )
