"""The flow-run image by digest: resolve a pushed tag to `registry/name@sha256:…`.

A tag can be pushed again with other content; a digest cannot. After `docker push`, Docker
records the registry's manifest digest in the image's RepoDigests; the pool's default image
(README "Deploy to Kubernetes", step 1) should be that reference, so every Job, and the
manifest of every version trained in it (KUBETRAIN_IMAGE), names exactly the pushed bytes.

    python -m kubetrain.k8s.image REGISTRY/kubetrain:0.1.0     # prints REGISTRY/kubetrain@sha256:…
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Sequence

from kubetrain.k8s.template import DIGEST_PATTERN, WorkPoolError
from kubetrain.locations import quote_value


class ImageError(WorkPoolError):
    """The image cannot be resolved to a digest; the message says what to do."""


def repository_of(image: str) -> str:
    """`registry/name` of an image reference, without its tag or digest."""
    name = image.strip().partition("@")[0]
    head, slash, last = name.rpartition("/")
    last = last.partition(":")[0]  # a ':' before the last '/' is the registry's port
    return f"{head}{slash}{last}"


def digest_reference(image: str, repo_digests: Sequence[str]) -> str:
    """The `repository@sha256:…` among RepoDigests that belongs to `image`'s repository."""
    repository = repository_of(image)
    for entry in repo_digests:
        name, _, digest = str(entry).partition("@")
        if name == repository and DIGEST_PATTERN.fullmatch(digest):
            return f"{name}@{digest}"
    known = ", ".join(quote_value(str(e), 100) for e in repo_digests[:5]) or "none"
    raise ImageError(
        f"image {quote_value(image)} has no digest from {quote_value(repository)} (digests "
        f"known: {known}): push it first (`docker push {repository}:TAG`), or pull it, then "
        "resolve again"
    )


def resolve_digest(image: str, docker: str = "docker", timeout: float = 60.0) -> str:
    """Ask the local Docker engine for the pushed digest of `image` (a tag it pushed or pulled)."""
    if not image or not image.strip():
        raise ImageError(
            "no image given: pass the reference you pushed, e.g. REGISTRY/kubetrain:0.1.0"
        )
    client = shutil.which(docker)
    if client is None:
        raise ImageError(
            f"the docker client {quote_value(docker)} is not on PATH: run this where you pushed "
            "the image, or read the digest from `docker push`'s last line"
        )
    proc = subprocess.run(
        [client, "image", "inspect", "--format", "{{json .RepoDigests}}", image.strip()],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        detail = proc.stderr.strip().splitlines()[-1:] or ["no output"]
        raise ImageError(
            f"docker cannot inspect image {quote_value(image)} ({quote_value(detail[0], 200)}): "
            "build and push it first, or pull it"
        )
    try:
        digests = json.loads(proc.stdout or "null") or []
    except json.JSONDecodeError:
        raise ImageError(
            f"docker image inspect printed no RepoDigests list for {quote_value(image)}; "
            "check the docker client"
        ) from None
    return digest_reference(image, [str(d) for d in digests])


def main(argv: list[str] | None = None) -> int:
    """`python -m kubetrain.k8s.image [--docker CLIENT] IMAGE`: print `registry/name@sha256:…`."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m kubetrain.k8s.image",
        description="Print the registry/name@sha256:... reference of an image you pushed.",
    )
    parser.add_argument("image", help="the reference you pushed, e.g. REGISTRY/kubetrain:0.1.0")
    parser.add_argument("--docker", default="docker", help="docker client to ask (default: docker)")
    args = parser.parse_args(argv)
    try:
        print(resolve_digest(args.image, docker=args.docker))
    except ImageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
