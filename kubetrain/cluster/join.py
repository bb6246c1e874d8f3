"""The worker join command: minted on the control plane, parsed strictly, token never shown."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from kubetrain.cluster.steps import REDACTED, Command

JOIN_TOKEN_COMMAND = Command("kubeadm token create --print-join-command --ttl 30m")
# `kubeadm token create --print-join-command` prints exactly this (plus a trailing space).
_JOIN = re.compile(
    r"^kubeadm join (?P<endpoint>\S+:\d{1,5}) --token (?P<token>[a-z0-9]{6}\.[a-z0-9]{16})"
    r" --discovery-token-ca-cert-hash (?P<hash>sha256:[0-9a-f]{64})$"
)


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
