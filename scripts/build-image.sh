#!/usr/bin/env bash
# Builds the operator image from the project's Dockerfile with podman (no Docker daemon here), so the e2e test
# tests/e2e/test_image.py can run the real image the way the Helm chart's Deployment runs it.
#
# No container registry is reachable from this project's machines, so the Dockerfile's default base
# (python:3.11-slim-trixie) cannot be pulled. The build uses a STAND-IN base instead: Debian trixie's own python3
# (3.13) and ca-certificates, laid out by mmdebstrap from Debian's packages and imported into podman as
# localhost/rfo-standin-python:trixie (with `python` linked to /usr/bin/python3, as the official image provides it).
# It is passed as --build-arg BASE_IMAGE (and PYTHON_VERSION=3.13 to say so); the Dockerfile's defaults — the
# published shape, Python 3.11 — are unchanged. Python 3.11 itself is exercised by the rest of the suite (.venv).
#
# Cached, so only the first run pays (~25 s for the base, ~60 s for the build on 2 cores):
#   .cache/image/base-trixie.tar (+ .sha256, .recipe)  the stand-in's root filesystem, re-imported if podman lost it
#   the image's label dev.redisfunctions.inputs-sha256  a sha256 of the build inputs (--print-inputs): when it
#                                                      matches, nothing is rebuilt; otherwise podman's layer cache
#                                                      keeps the dependency layer while only the code changed
#
#   scripts/build-image.sh                 build what is missing or stale (the default; `make image`)
#   scripts/build-image.sh --force         rebuild the image (the base tarball is kept)
#   scripts/build-image.sh --check         print the image reference and exit 0 if it is up to date, else say why, exit 1
#   scripts/build-image.sh --print-inputs  list the files whose contents decide whether the image is rebuilt
#
# Needs root podman with runc (scripts/bootstrap.sh installs podman, runc, uidmap and mmdebstrap and writes
# /etc/containers/containers.conf.d/50-redis-functions-operator.conf). Environment: RFO_IMAGE overrides the tag.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
CACHE=$ROOT/.cache/image
IMAGE=${RFO_IMAGE:-localhost/redis-functions-operator:dev}
BUILD_STAGE=$IMAGE-build-stage  # a tag, so the cached layers of the Dockerfile's build stage are kept
BASE_IMAGE=localhost/rfo-standin-python:trixie
BASE_PYTHON=3.13  # trixie's python3; bookworm's (3.11.2) is below the project's requires-python (>=3.11.3)
BASE_TAR=$CACHE/base-trixie.tar
# The stand-in's recipe: minbase + what python:*-slim provides that the Dockerfile relies on; no docs, man pages or
# locales (as in the slim images). A change here rebuilds the tarball.
BASE_RECIPE=(mmdebstrap --format=tar --variant=minbase --include=python3,python3-venv,ca-certificates
    --dpkgopt=path-exclude=/usr/share/doc/* --dpkgopt=path-include=/usr/share/doc/*/copyright
    --dpkgopt=path-exclude=/usr/share/man/* --dpkgopt=path-exclude=/usr/share/info/*
    --dpkgopt=path-exclude=/usr/share/locale/*
    '--customize-hook=ln -s /usr/bin/python3 "$1/usr/local/bin/python"'
    trixie)
LABEL_KEY=dev.redisfunctions.inputs-sha256

# shellcheck source=scripts/common.sh
. "$(dirname "$0")/common.sh"

# The build context the Dockerfile may COPY (keep in step with .dockerignore's allowlist), plus the Dockerfile and
# .dockerignore themselves. tests/e2e/test_image.py checks that every file .dockerignore lets through is listed.
build_inputs() {
    (cd "$ROOT" && {
        printf '%s\n' Dockerfile .dockerignore requirements/runtime.txt pyproject.toml README.md
        find operator -type f ! -path '*/__pycache__/*' ! -name '*.pyc' ! -path '*.egg-info/*'
    } | LC_ALL=C sort)
}

inputs_sha() {  # names and contents of the inputs, the base's tarball and the build arguments
    {
        (cd "$ROOT" && build_inputs | tr '\n' '\0' | xargs -0 sha256sum)
        cat "$BASE_TAR.sha256"
        printf '%s\n' "BASE_IMAGE=$BASE_IMAGE" "PYTHON_VERSION=$BASE_PYTHON"
    } | sha256sum | cut -d' ' -f1
}

need_podman() {
    local pkg missing=()
    for pkg in podman:podman runc:runc mmdebstrap:mmdebstrap newuidmap:uidmap; do
        command -v "${pkg%%:*}" >/dev/null 2>&1 || missing+=("${pkg##*:}")
    done
    ((${#missing[@]} == 0)) || die "missing: ${missing[*]} (Debian packages); run \`make bootstrap\` (scripts/bootstrap.sh)"
    podman info >/dev/null 2>&1 || die "podman is installed but cannot run here: $(podman info 2>&1 | tail -1)
    (the recipe for this machine: runc with explicit ulimits in /etc/containers/containers.conf.d/, written by
    scripts/bootstrap.sh; see docs/install.md, \"How this is tested\")"
}

image_label() {  # the inputs sha256 the image was built from, or nothing
    podman image inspect --format "{{ index .Labels \"$LABEL_KEY\" }}" "$IMAGE" 2>/dev/null || true
}

recipe_text() { printf '%s\n' "${BASE_RECIPE[@]}"; }

ensure_base_tarball() {
    if [ -f "$BASE_TAR" ] && [ -f "$BASE_TAR.sha256" ] && [ "$(cat "$BASE_TAR.recipe" 2>/dev/null)" = "$(recipe_text)" ]; then
        echo "    stand-in base: cached ($(du -h "$BASE_TAR" | cut -f1), ${BASE_TAR#"$ROOT"/})"
        return 0
    fi
    say "laying out the stand-in base (Debian trixie + python3 + ca-certificates) with mmdebstrap (first run only, ~30 s)…"
    local start=$SECONDS
    mkdir -p "$CACHE"
    rm -f "$CACHE/base-trixie.tmp.tar"
    if ! with_heartbeat "running mmdebstrap" "${BASE_RECIPE[@]}" "$CACHE/base-trixie.tmp.tar" >"$CACHE/mmdebstrap.log" 2>&1; then
        tail -20 "$CACHE/mmdebstrap.log" >&2
        die "mmdebstrap failed (full log: ${CACHE#"$ROOT"/}/mmdebstrap.log)"
    fi
    mv -f "$CACHE/base-trixie.tmp.tar" "$BASE_TAR"
    sha256sum "$BASE_TAR" | cut -d' ' -f1 >"$BASE_TAR.sha256"
    recipe_text >"$BASE_TAR.recipe"
    podman rmi --force "$BASE_IMAGE" >/dev/null 2>&1 || true  # re-imported below from the new tarball
    echo "    base laid out in $(fmt_secs $((SECONDS - start))) ($(du -h "$BASE_TAR" | cut -f1))"
}

ensure_base_image() {
    local want have
    want=$(cat "$BASE_TAR.sha256")
    have=$(podman image inspect --format '{{ index .Labels "dev.redisfunctions.rootfs-sha256" }}' "$BASE_IMAGE" 2>/dev/null || true)
    [ "$have" = "$want" ] && return 0
    say "importing the stand-in base into podman as $BASE_IMAGE"
    # An imported tarball carries no configuration: give it what python:*-slim sets (PATH, LANG), and labels that
    # say what it is and which tarball it came from.
    podman import --quiet --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' \
        --change "LABEL dev.redisfunctions.rootfs-sha256=$want" \
        --change "LABEL org.opencontainers.image.description=\"STAND-IN base: Debian trixie python3 $BASE_PYTHON laid out by mmdebstrap (no registry reachable); not a published base\"" \
        "$BASE_TAR" "$BASE_IMAGE" >/dev/null
}

podman_build() {  # podman_build LABEL ARGS...: one `podman build` of the Dockerfile, its steps shown as they start
    local what=$1 rc log=$CACHE/build.log
    shift
    local mounts=()
    # pip inside the build uses this machine's pip configuration and CA bundle (its index is reached through them).
    [ -f /etc/pip.conf ] && mounts+=(--volume /etc/pip.conf:/etc/pip.conf:ro)
    [ -f /etc/ssl/certs/ca-certificates.crt ] &&
        mounts+=(--volume /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro)
    set +e
    with_heartbeat "$what" podman build --pull=never --network host --layers "${mounts[@]}" \
        --build-arg "BASE_IMAGE=$BASE_IMAGE" --build-arg "PYTHON_VERSION=$BASE_PYTHON" \
        -f "$ROOT/Dockerfile" "$@" "$ROOT" 2>&1 |
        tee "$log" | grep --line-buffered -E '^(\[[0-9]+/[0-9]+\] )?STEP [0-9]+/[0-9]+|^--> Using cache|^    … still' |
        sed -u -E 's/^ *(.{0,110}).*/    \1/'
    rc=${PIPESTATUS[0]}
    set -e
    if [ "$rc" != 0 ]; then
        tail -30 "$log" >&2
        die "podman build failed (exit $rc; full log: ${log#"$ROOT"/})"
    fi
}

build_image() {
    local sha=$1 start=$SECONDS
    say "podman build of the Dockerfile → $IMAGE (base: the stand-in, Python $BASE_PYTHON; ~60 s cold, ~15 s when only the code changed)"
    # The build stage gets a tag of its own: it anchors the cached dependency layer, so the prune below removes
    # only what earlier builds left behind (untagged images descended from the stand-in base), never that layer.
    podman_build "building the build stage" --target build -t "$BUILD_STAGE"
    podman_build "building the final stage" --label "$LABEL_KEY=$sha" -t "$IMAGE"
    podman image prune --force --filter "label=dev.redisfunctions.rootfs-sha256" >/dev/null
    echo "    built $IMAGE in $(fmt_secs $((SECONDS - start))) ($(podman image inspect --format '{{.Size}}' "$IMAGE" |
        awk '{ printf "%d MB", $1 / 1000000 }'))"
}

FORCE=0
ACTION=build
for arg in "$@"; do
    case "$arg" in
        --force) FORCE=1 ;;
        --check) ACTION=check ;;
        --print-inputs) ACTION=inputs ;;
        -h | --help) sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument: $arg (try --help)" ;;
    esac
done

case "$ACTION" in
    inputs)
        build_inputs
        ;;
    check)
        command -v podman >/dev/null 2>&1 || { echo "podman is not installed (make bootstrap)"; exit 1; }
        [ -f "$BASE_TAR.sha256" ] || { echo "$IMAGE has not been built: run \`make image\`"; exit 1; }
        have=$(image_label)
        [ -n "$have" ] || { echo "$IMAGE has not been built: run \`make image\`"; exit 1; }
        [ "$have" = "$(inputs_sha)" ] || {
            echo "$IMAGE was built from other sources than the work tree's: run \`make image\`"
            exit 1
        }
        echo "$IMAGE"
        ;;
    build)
        need_podman
        cd "$ROOT"
        say "operator image $IMAGE (podman $(podman version --format '{{.Client.Version}}'), runtime $(podman info --format '{{.Host.OCIRuntime.Name}}'))"
        ensure_base_tarball
        ensure_base_image
        sha=$(inputs_sha)
        if [ "$FORCE" = 0 ] && [ "$(image_label)" = "$sha" ]; then
            echo "    $IMAGE: up to date (inputs sha256 ${sha:0:12})"
            exit 0
        fi
        build_image "$sha"
        ;;
esac
