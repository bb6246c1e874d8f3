"""The rendered Job's securityContext, pinned literally (issue #17).

`privileged: true` next to `allowPrivilegeEscalation: false` is rejected by the API server, so
such a template makes every run fail to start; anything weaker than the pinned contexts is a
hardening regression. Checked on the derivation, the committed template and the Job the worker
renders for every Kubernetes deployment in every environment.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from kubetrain.k8s import derive_base_job_template, load_base_job_template
from tests.kube_helpers import kubernetes_deployments, render_deployment_job

POD_SECURITY = {
    "runAsNonRoot": True,
    "runAsUser": 10001,
    "runAsGroup": 10001,
    "fsGroup": 10001,
    "seccompProfile": {"type": "RuntimeDefault"},
}
CONTAINER_SECURITY = {
    "runAsNonRoot": True,
    "runAsUser": 10001,
    "runAsGroup": 10001,
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}
HOST_NAMESPACES = ("hostNetwork", "hostPID", "hostIPC", "hostUsers")


def _walk(node: Any, path: str = "") -> Iterator[tuple[str, str, Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield path, key, value
            yield from _walk(value, f"{path}.{key}")
    elif isinstance(node, list):
        for index, item in enumerate(node):
            yield from _walk(item, f"{path}[{index}]")


def _assert_hardened(job: dict[str, Any]) -> None:
    pod = job["spec"]["template"]["spec"]
    assert pod["securityContext"] == POD_SECURITY
    containers = pod["containers"] + pod.get("initContainers", [])
    assert containers
    for container in containers:
        context = dict(container["securityContext"])
        # Explicit false is fine; true (or any truthy value) must never appear.
        assert context.pop("privileged", False) is False, container.get("name")
        assert context == CONTAINER_SECURITY, container.get("name")
    for path, key, value in _walk(job):
        assert not (key == "privileged" and value is not False), path
        assert not (key in HOST_NAMESPACES and value is True), f"{path}.{key}"
        assert not (key == "add" and path.endswith(".capabilities")), path


def test_derived_and_committed_templates_are_hardened() -> None:
    for template in (derive_base_job_template(), load_base_job_template()):
        _assert_hardened(json.loads(json.dumps(template))["job_configuration"]["job_manifest"])


@pytest.mark.parametrize("environment", ["dev", "prod"])
@pytest.mark.parametrize("name", kubernetes_deployments())
def test_every_rendered_job_is_hardened(name: str, environment: str) -> None:
    job = render_deployment_job(
        name,
        worker_env={"PREFECT_API_URL": "http://prefect.invalid/api"},
        environment=environment,
    )
    _assert_hardened(job)


def test_the_check_catches_privileged_true() -> None:
    # The guard itself: a template with privileged true must not pass _assert_hardened.
    template = json.loads(json.dumps(derive_base_job_template()))
    manifest = template["job_configuration"]["job_manifest"]
    manifest["spec"]["template"]["spec"]["containers"][0]["securityContext"]["privileged"] = True
    with pytest.raises(AssertionError):
        _assert_hardened(manifest)


def test_an_unknown_job_variable_is_refused_not_ignored() -> None:
    # A typo ("cpu_limt") would otherwise leave the default in place without a word.
    from kubetrain.k8s import WorkPoolError, check_job_variables

    with pytest.raises(
        WorkPoolError,
        match=r"^job variables \['cpu_limt'\] are not defined by the base job template; "
        r"defined: \[.*'cpu_limit'.*\]$",
    ):
        check_job_variables(load_base_job_template(), {"cpu_limt": "2", "cpu_request": "1"})


def test_invalid_job_variables_are_all_listed_one_per_line() -> None:
    from kubetrain.k8s import WorkPoolError, check_job_variables

    with pytest.raises(WorkPoolError) as caught:
        check_job_variables(
            load_base_job_template(), {"cpu_limit": "2 cores", "env": {"A": 1}, "image": "x"}
        )
    lines = str(caught.value).splitlines()
    assert lines[0] == "invalid job variables:"
    assert lines[1].startswith("  job variable cpu_limit: '2 cores' does not match")
    assert lines[2].startswith("  job variable env.A: 1 is not valid")
    assert len(lines) == 3
