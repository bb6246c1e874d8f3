"""Resolving a pushed tag to its digest (kubetrain/k8s/image.py) and prod's rule for images.

The real push and pull are in tests/container/test_registry.py; here the parsing and the
messages, with a docker client that is a shell script printing what `docker image inspect`
prints.
"""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from kubetrain.k8s import WorkPoolError, pool_template
from kubetrain.k8s.image import ImageError, digest_reference, main, repository_of, resolve_digest

DIGEST = "sha256:" + "ab" * 32
OTHER = "sha256:" + "cd" * 32


@pytest.mark.parametrize(
    ("image", "repository"),
    [
        ("127.0.0.1:5000/kubetrain:0.1.0", "127.0.0.1:5000/kubetrain"),
        ("registry.example.com/ml/kubetrain:1", "registry.example.com/ml/kubetrain"),
        ("registry.example.com:443/kubetrain", "registry.example.com:443/kubetrain"),
        (f"registry.example.com/kubetrain:2@{DIGEST}", "registry.example.com/kubetrain"),
        ("kubetrain:dev", "kubetrain"),
    ],
)
def test_repository_of_strips_tag_and_digest_but_not_the_port(image: str, repository: str) -> None:
    assert repository_of(image) == repository


def test_digest_of_the_pushed_repository_is_chosen_among_several() -> None:
    digests = [f"mirror.example.com/kubetrain@{OTHER}", f"127.0.0.1:5000/kubetrain@{DIGEST}"]
    assert (
        digest_reference("127.0.0.1:5000/kubetrain:0.1.0", digests)
        == f"127.0.0.1:5000/kubetrain@{DIGEST}"
    )


@pytest.mark.parametrize(
    "digests",
    [[], [f"mirror.example.com/kubetrain@{OTHER}"], ["127.0.0.1:5000/kubetrain@sha256:12"]],
)
def test_no_digest_for_the_repository_says_push_first(digests: list[str]) -> None:
    with pytest.raises(ImageError, match="push it first"):
        digest_reference("127.0.0.1:5000/kubetrain:0.1.0", digests)


def _fake_docker(tmp_path: Path, stdout: str, code: int = 0, stderr: str = "") -> str:
    script = tmp_path / "docker"
    script.write_text(
        f"#!/bin/sh\nprintf '%s' '{stdout}'\nprintf '%s\\n' '{stderr}' >&2\nexit {code}\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return str(script)


def test_resolve_reads_repo_digests_from_docker(tmp_path: Path) -> None:
    docker = _fake_docker(tmp_path, f'["127.0.0.1:5000/kubetrain@{DIGEST}"]')
    assert resolve_digest("127.0.0.1:5000/kubetrain:0.1.0", docker=docker).endswith(DIGEST)


def test_resolve_names_an_image_docker_does_not_have(tmp_path: Path) -> None:
    docker = _fake_docker(tmp_path, "", 1, "Error: No such image: 127.0.0.1:5000/kubetrain:9")
    with pytest.raises(ImageError, match="build and push it first") as info:
        resolve_digest("127.0.0.1:5000/kubetrain:9", docker=docker)
    assert "No such image" in str(info.value)


def test_resolve_without_a_docker_client_says_where_to_run(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="not on PATH"):
        resolve_digest("r.example.com/kubetrain:1", docker=str(tmp_path / "missing"))


def test_cli_prints_the_reference_or_the_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    docker = _fake_docker(tmp_path, f'["r.example.com/kubetrain@{DIGEST}"]')
    assert main(["--docker", docker, "r.example.com/kubetrain:1"]) == 0
    assert capsys.readouterr().out.strip() == f"r.example.com/kubetrain@{DIGEST}"
    assert main(["--docker", docker, "r.example.com/other:1"]) == 1
    assert "push it first" in capsys.readouterr().err


def test_prod_pool_accepts_the_resolved_digest_and_refuses_a_malformed_one() -> None:
    reference = f"127.0.0.1:5000/kubetrain@{DIGEST}"
    props = pool_template("prod", reference)["variables"]["properties"]
    assert props["image"]["default"] == reference
    for bad in (
        "127.0.0.1:5000/kubetrain@sha256:1234",
        "127.0.0.1:5000/kubetrain@md5:" + "a" * 32,
    ):
        with pytest.raises(WorkPoolError, match="malformed digest"):
            pool_template("prod", bad)
    for bad, problem in (
        (f"kubetrain@{DIGEST}", "registry host"),
        ("127.0.0.1:5000/kubetrain:latest", "latest"),
    ):
        with pytest.raises(WorkPoolError, match=problem):
            pool_template("prod", bad)
