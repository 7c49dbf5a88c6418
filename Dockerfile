# syntax=docker/dockerfile:1
# The operator image: `redis-functions-operator run` on a slim Python base, as a non-root numeric user, able to run
# with a read-only root filesystem (it writes only TLS client certificates, under $TMPDIR=/tmp: mount an emptyDir or
# a tmpfs there, as the Helm chart does). Build and push: docs/install.md, "Building and pushing the image".
#
#   docker build --build-arg REVISION="$(git rev-parse HEAD)" -t ghcr.io/redis-functions-operator/redis-functions-operator:0.1.0 .
#
# The test suite builds this file with podman (`make image`, scripts/build-image.sh) and tests/e2e/test_image.py runs
# the image the way the Helm chart's Deployment runs its pod. No registry is reachable there, so that build passes
# --build-arg BASE_IMAGE=<a stand-in: Debian trixie's python3 3.13, made with mmdebstrap>; the defaults below are
# the published image's.

ARG PYTHON_VERSION=3.11
# Pin by digest for reproducible builds: --build-arg BASE_IMAGE=python:3.11-slim-trixie@sha256:<digest>
ARG BASE_IMAGE=python:${PYTHON_VERSION}-slim-trixie

# ---- build: a virtualenv holding exactly the runtime lock and the package ---------------------------------------
FROM ${BASE_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
WORKDIR /src
RUN python -m venv /opt/venv
# Dependencies first (their own layer, reused while only the code changes): every version pinned, closure included.
COPY requirements/runtime.txt requirements/runtime.txt
RUN /opt/venv/bin/pip install --no-cache-dir -r requirements/runtime.txt
# Then the package itself, without resolving anything again.
COPY pyproject.toml README.md ./
COPY operator/ operator/
RUN /opt/venv/bin/pip install --no-cache-dir --no-deps . \
    && /opt/venv/bin/redis-functions-operator --version

# ---- final: the base image plus the virtualenv; no build tree, no pip cache, no compilers ------------------------
FROM ${BASE_IMAGE}
ARG BASE_IMAGE
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="redis-functions-operator" \
      org.opencontainers.image.description="Keeps Redis Functions libraries loaded and verified on every primary of a Redis or Valkey deployment" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="https://github.com/redis-functions-operator/redis-functions-operator" \
      org.opencontainers.image.url="https://github.com/redis-functions-operator/redis-functions-operator" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="${BASE_IMAGE}"
# Byte code was compiled by pip at install time; nothing is written next to the code at run time (read-only root).
# LOGNAME: kopf asks getpass.getuser() for its identity, which fails for a UID without a passwd entry (this one, or
# any UID a cluster assigns, e.g. OpenShift's) unless one of these variables names the user.
ENV PATH=/opt/venv/bin:${PATH} \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TMPDIR=/tmp \
    HOME=/tmp \
    LOGNAME=redis-functions-operator
COPY --from=build /opt/venv /opt/venv
# A numeric UID/GID (no passwd entry needed), so `runAsNonRoot` can verify it; 65532 is the conventional "nonroot".
USER 65532:65532
# /healthz (and /metrics) — the operator's --liveness address.
EXPOSE 8080
ENTRYPOINT ["redis-functions-operator", "run"]
