"""The README's build → push → pull path, for real: Debian's registry on 127.0.0.1, by digest.

Debian's `docker-registry` (the distribution registry) is started by the test with its own
config and storage (not its systemd unit), on a free port of 127.0.0.1, which dockerd treats as
an insecure-allowed registry by default (checked below). The kubetrain image built for the
session is tagged for it, pushed, removed from the engine, pulled back by the digest that
`python -m kubetrain.k8s.image` resolved, and run. The pool template made from that reference
(as `python -m flows.work_pool --environment prod` makes it) renders, through prefect-kubernetes'
own code, a Job whose container image and KUBETRAIN_IMAGE are that same digest.

`docker rmi` alone does not make the session's engine download anything: its build cache
still holds every layer, so its pull by digest fetches the manifest and config only. So the
image is also pulled by that digest into a second, empty dockerd (its own data-root in a temporary
folder), which downloads every layer from the registry, and runs there.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.container.conftest import (
    IMAGE_UID,
    REPO_ROOT,
    BuiltImage,
    DockerEngine,
    _stop_pid,
    run_restricted,
)
from tests.kube_helpers import pod_command, render_deployment_job

pytestmark = pytest.mark.container


@dataclass(frozen=True)
class Registry:
    """A running distribution registry on 127.0.0.1."""

    address: str  # host:port, as it appears in image references
    log: Path


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """Debian's docker-registry serving a temporary storage folder on 127.0.0.1:<free port>."""
    binary = shutil.which("docker-registry")
    assert binary, (
        "docker-registry is missing: `scripts/setup.sh test` installs it (Debian package)"
    )
    root = tmp_path_factory.mktemp("registry")
    port = _free_port()
    config = root / "config.yml"
    # JSON is YAML: the registry reads this file as its whole configuration.
    config.write_text(
        json.dumps(
            {
                "version": 0.1,
                "log": {"level": "info", "formatter": "text"},
                "storage": {
                    "filesystem": {"rootdirectory": str(root / "storage")},
                    "delete": {"enabled": True},
                },
                "http": {"addr": f"127.0.0.1:{port}", "secret": os.urandom(16).hex()},
            }
        )
    )
    log = root / "registry.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [binary, "serve", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, f"docker-registry exited:\n{log.read_text()[-3000:]}"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=2) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, f"registry not up:\n{log.read_text()[-3000:]}"
            time.sleep(0.2)
        yield Registry(address=f"127.0.0.1:{port}", log=log)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def empty_engine(docker_engine: DockerEngine, tmp_path: Path) -> Iterator[DockerEngine]:
    """A second private dockerd with nothing in it (data-root in tmp_path), stopped by PID."""
    dockerd = shutil.which("dockerd")
    assert dockerd, "dockerd vanished after the session engine started"
    run = Path(tempfile.mkdtemp(prefix="kt-empty-", dir="/run"))  # short unix socket path
    sock, log = run / "docker.sock", tmp_path / "dockerd.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                dockerd,
                "--data-root",
                str(tmp_path / "data"),
                "--exec-root",
                str(run / "exec"),
                "--pidfile",
                str(run / "dockerd.pid"),
                "--host",
                f"unix://{sock}",
                "--iptables=false",
                "--ip-forward=false",
                "--bridge=none",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    engine = DockerEngine(cli=docker_engine.cli, host=f"unix://{sock}", pid=proc.pid, log=log)
    try:
        deadline = time.monotonic() + 60
        while engine.run("version", timeout=20, check=False).returncode != 0:
            assert proc.poll() is None, f"second dockerd exited:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"second dockerd not up:\n{log.read_text()[-3000:]}"
            time.sleep(0.3)
        assert engine.text("images", "--quiet") == ""
        yield engine
    finally:
        _stop_pid(proc.pid)
        proc.wait()
        shutil.rmtree(run, ignore_errors=True)
        shutil.rmtree(tmp_path / "data", ignore_errors=True)


def _image_id(engine: DockerEngine, image: str) -> str:
    return engine.text("image", "inspect", "--format", "{{.Id}}", image)


def _resolve(engine: DockerEngine, tag: str) -> subprocess.CompletedProcess[str]:
    """`python -m kubetrain.k8s.image TAG`, as the README's step 1 runs it."""
    return subprocess.run(
        [sys.executable, "-m", "kubetrain.k8s.image", "--docker", engine.cli, tag],
        env=dict(engine.env, PYTHONPATH=str(REPO_ROOT)),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_engine_allows_the_loopback_registry_without_tls(docker_engine: DockerEngine) -> None:
    """dockerd's default insecure-registry list holds 127.0.0.0/8: no daemon flag is needed."""
    cidrs = json.loads(
        docker_engine.text("info", "--format", "{{json .RegistryConfig.InsecureRegistryCIDRs}}")
    )
    assert "127.0.0.0/8" in cidrs


def test_pushed_image_is_pulled_back_by_the_digest_the_pool_records(
    docker_engine: DockerEngine,
    project_image: BuiltImage,
    registry: Registry,
    empty_engine: DockerEngine,
) -> None:
    from kubetrain.k8s import pool_template

    built_id = _image_id(docker_engine, project_image.name)
    tag = f"{registry.address}/kubetrain:0.1.0-{os.urandom(3).hex()}"
    docker_engine.run("tag", project_image.name, tag)

    # Not pushed yet: no digest to resolve, and the message says to push.
    refused = _resolve(docker_engine, tag)
    assert refused.returncode == 1
    assert "push it first" in refused.stderr

    started = time.monotonic()
    pushed = docker_engine.text("push", tag, timeout=900)
    push_seconds = time.monotonic() - started
    reported = re.search(r"digest: (sha256:[0-9a-f]{64}) size: \d+", pushed)
    assert reported, pushed[-2000:]

    resolved = _resolve(docker_engine, tag)
    assert resolved.returncode == 0, resolved.stderr
    reference = resolved.stdout.strip()
    repository = tag.rpartition(":")[0]
    assert reference == f"{repository}@{reported[1]}"

    # What the deployment records: the prod pool's default image, in the Job the worker renders
    # and in the pod's KUBETRAIN_IMAGE (which every manifest trained there records).
    template = pool_template("prod", reference)
    assert template["variables"]["properties"]["image"]["default"] == reference
    job = render_deployment_job("predict-adhoc", template=template)
    container = job["spec"]["template"]["spec"]["containers"][0]
    _, env = pod_command(job)
    assert container["image"] == reference
    assert env["KUBETRAIN_IMAGE"] == reference

    # Gone from the engine under every name, then pulled back by that digest only.
    # By ID with --force: every name the image has goes, also names other checkouts or an
    # interrupted earlier run gave the same bytes in this engine (its data root outlives it).
    docker_engine.run("rmi", "--force", built_id)
    assert docker_engine.run("image", "inspect", built_id, check=False).returncode != 0
    try:
        pulled = docker_engine.text("pull", container["image"], timeout=900)
        assert f"Digest: {reported[1]}" in pulled
        assert _image_id(docker_engine, reference) == built_id  # the very image that was built
        assert reference in json.loads(
            docker_engine.text("image", "inspect", "--format", "{{json .RepoDigests}}", reference)
        )
    finally:
        # The other container tests of this session use the image under its local name.
        docker_engine.run("tag", reference, project_image.name, check=False)

    # An engine that never saw the image downloads every layer, by the digest the Job names.
    before = registry.log.read_text(errors="replace")
    started = time.monotonic()
    pulled = empty_engine.text("pull", container["image"], timeout=900)
    pull_seconds = time.monotonic() - started
    served = registry.log.read_text(errors="replace")[len(before) :]
    assert f"GET /v2/kubetrain/manifests/{reported[1]} " in served, served[-2000:]
    blob_gets = set(re.findall(r"GET /v2/kubetrain/blobs/(sha256:[0-9a-f]{64}) ", served))
    layers = json.loads(
        empty_engine.text("image", "inspect", "--format", "{{json .RootFS.Layers}}", reference)
    )
    assert len(blob_gets) >= len(set(layers)) + 1, f"{len(blob_gets)} blobs, {len(layers)} layers"
    assert f"Digest: {reported[1]}" in pulled
    assert _image_id(empty_engine, reference) == built_id

    # The pulled image runs, by digest, as the pod would (read-only, no network, UID 10001).
    out = run_restricted(
        empty_engine, reference, "python", "-m", "flows.predict", "--help",
        user=f"{IMAGE_UID}:{IMAGE_UID}",
    )  # fmt: skip
    assert "--output" in out, out[-2000:]
    docker_engine.timings["registry_push_s"] = push_seconds
    docker_engine.timings["registry_pull_s"] = pull_seconds
    print(
        f"\nregistry: push {push_seconds:.1f} s, pull by digest {pull_seconds:.1f} s, "
        f"{len(blob_gets)} blob(s) downloaded, digest {reported[1][:19]}…"
    )
