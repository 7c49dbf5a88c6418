#!/usr/bin/env bash
# Installs what `make test` and `make demo` need on a fresh Debian machine of the polyglot kind:
# the Debian packages (redis-server 7.0, redis-sentinel, redis-tools, lua5.1, openssl, and build-essential, pkg-config
# and libssl-dev for the server matrix, and podman, runc, uidmap and mmdebstrap for the operator image, with podman
# set to use runc) and a virtualenv in .venv with
# the pinned Python dependencies. Idempotent and quick when everything is already there.
set -euo pipefail
# shellcheck source=scripts/common.sh
. "$(dirname "$0")/common.sh"
cd "$(dirname "$0")/.."

need_apt=()
for pair in redis-server:redis-server redis-cli:redis-tools redis-sentinel:redis-sentinel lua5.1:lua5.1 openssl:openssl \
        gcc:build-essential make:build-essential pkg-config:pkg-config; do
    cmd=${pair%%:*}; pkg=${pair##*:}
    command -v "$cmd" >/dev/null 2>&1 || need_apt+=("$pkg")
done
# the server matrix (scripts/build-servers.sh) builds Redis and Valkey with TLS
[ -f /usr/include/openssl/ssl.h ] || need_apt+=(libssl-dev)
# the operator image (scripts/build-image.sh, `make image`): podman with runc, and mmdebstrap for its stand-in base
for pair in podman:podman runc:runc newuidmap:uidmap mmdebstrap:mmdebstrap; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || need_apt+=("${pair##*:}")
done
mapfile -t need_apt < <(printf '%s\n' "${need_apt[@]}" | sort -u | grep .) || true
if ((${#need_apt[@]})); then
    say "installing Debian packages: ${need_apt[*]}"
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

# podman's default runtime (crun) cannot start containers on these VMs (setrlimit RLIMIT_NOFILE is refused, then
# "cgroups in hybrid mode not supported"): use runc, with explicit ulimits. A drop-in, so an existing
# /etc/containers/containers.conf is left alone; written only where podman is installed, and only when it differs.
podman_conf=/etc/containers/containers.conf.d/50-redis-functions-operator.conf
podman_conf_text='# Written by redis-functions-operator scripts/bootstrap.sh: crun fails on this machine kind, runc works.
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]

[engine]
runtime = "runc"'
if command -v podman >/dev/null 2>&1 && [ "$(cat "$podman_conf" 2>/dev/null)" != "$podman_conf_text" ]; then
    say "configuring podman to use runc ($podman_conf)"
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO mkdir -p "$(dirname "$podman_conf")"
    printf '%s\n' "$podman_conf_text" | $SUDO tee "$podman_conf" >/dev/null
fi

PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
stamp=.venv/.installed
if [ ! -x .venv/bin/python ]; then
    say "creating the virtualenv .venv with $($PY --version)"
    "$PY" -m venv .venv
fi
if [ ! -f "$stamp" ] || [ requirements/runtime.txt -nt "$stamp" ] || [ requirements/dev-only.txt -nt "$stamp" ] \
        || [ pyproject.toml -nt "$stamp" ]; then
    say "installing the pinned Python dependencies (requirements/dev.txt)"
    .venv/bin/python -m pip install -q --upgrade pip >/dev/null
    .venv/bin/python -m pip install -q -r requirements/dev.txt
    .venv/bin/python -m pip install -q --no-deps -e .
    touch "$stamp"
fi
say "ready: $(redis-server --version | cut -d' ' -f1-3), $(.venv/bin/python --version)"
