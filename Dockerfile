# kubetrain flow-run image: the pinned runtime virtualenv and the code, nothing else; runs as
# UID/GID 10001 on a read-only root filesystem (writable: /tmp and mounted volumes).
#
# Needs BuildKit (default since Docker 23; Docker 20.10: DOCKER_BUILDKIT=1):
#   docker build -t REGISTRY/kubetrain:0.1.0 .
# Optional build secrets (secrets never reach a layer or the image history; build arguments do,
# so never pass a credential as --build-arg):
#   --secret id=pip.conf,src=FILE          a pip config: private index, credentials, find-links
#   --secret id=ca-certificates,src=FILE   a CA bundle for a TLS-intercepting proxy
#
# The default base is an exact release. For byte-for-byte reproducible builds pin it by digest:
#   docker pull python:3.11.14-slim-bookworm
#   docker inspect --format '{{index .RepoDigests 0}}' python:3.11.14-slim-bookworm
#   docker build --build-arg BASE_IMAGE=python:3.11.14-slim-bookworm@sha256:<digest> ...
# Any Debian-based image with python3 (3.11) and its venv module works as BASE_IMAGE; both stages
# use it, so the virtualenv's interpreter link (/usr/local/bin/python3 in the official image,
# /usr/bin/python3 in Debian's) resolves in the final image.
ARG BASE_IMAGE=python:3.11.14-slim-bookworm

FROM ${BASE_IMAGE} AS builder

# An image made by `docker import` has no ENV at all: set what RUN needs explicitly.
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    LANG=C.UTF-8 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore

RUN python3 -m venv /opt/venv

COPY requirements/runtime.txt /tmp/requirements.txt

# Hashes are required for every package: the build installs exactly the locked set or fails.
RUN --mount=type=secret,id=pip.conf,target=/etc/pip.conf \
    --mount=type=secret,id=ca-certificates,target=/run/secrets/ca-certificates \
    if [ -s /run/secrets/ca-certificates ]; then export PIP_CERT=/run/secrets/ca-certificates; fi \
    && /opt/venv/bin/python -m pip install --no-cache-dir --require-hashes --no-deps \
        --only-binary=:all: --no-compile -r /tmp/requirements.txt

# Strip what a flow run never uses (the packages' own test suites, pip, setuptools), then compile the
# byte code once, with unchecked hashes: the root filesystem is read-only at run time, so without
# it every start would compile prefect from source again, and unchecked pycs stay valid whatever
# the file times become in later COPY steps. Modules written for newer Pythons (whenever's
# _typing_312.py) are never imported on 3.11 and cannot compile: skip them.
RUN find /opt/venv/lib -depth -type d \( -name tests -o -name __pycache__ \) -exec rm -rf {} + \
    && /opt/venv/bin/python -m pip uninstall --yes --quiet pip setuptools \
    && /opt/venv/bin/python -m compileall -q -j 0 --invalidation-mode unchecked-hash \
        -x '_typing_31[2-9]\.py$' /opt/venv/lib


FROM ${BASE_IMAGE}

# HOME and PREFECT_HOME live under /tmp: the only writable path on a read-only root filesystem.
ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    LANG=C.UTF-8 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONPATH=/opt/kubetrain \
    HOME=/tmp \
    PREFECT_HOME=/tmp/prefect

# A fixed numeric UID/GID: the Kubernetes job template's securityContext (runAsUser 10001,
# runAsNonRoot) can only verify a numeric user.
RUN groupadd --system --gid 10001 kubetrain \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /tmp \
        --shell /usr/sbin/nologin kubetrain

COPY --from=builder /opt/venv /opt/venv

# The working directory the deployments' pull step (set_working_directory) expects. The code stays
# owned by root: the run user can read it, not change it.
WORKDIR /opt/kubetrain
COPY flows/ flows/
COPY tasks/ tasks/
COPY kubetrain/ kubetrain/
COPY data/ data/

# Declared last: a build argument invalidates the cache of every later RUN, and the revision
# changes with each commit; here it re-creates no layer (the 500 MB virtualenv stays shared).
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG SOURCE_URL=unknown
LABEL org.opencontainers.image.title="kubetrain" \
      org.opencontainers.image.description="Train scikit-learn models as Prefect flows; publish them over SFTP" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="${SOURCE_URL}"

USER 10001:10001

# What the Prefect Kubernetes worker runs in every flow-run pod.
CMD ["prefect", "flow-run", "execute"]
