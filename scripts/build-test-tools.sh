#!/usr/bin/env bash
# Builds the small Go tools the GitOps-health tests run (tests/e2e/test_gitops_health.py and
# tests/unit/test_argocd_health.py):
#   kstatus      tests/kstatus/ — prints what sigs.k8s.io/cli-utils/pkg/kstatus (the library Flux and Helm 4 wait
#                with) computes for an object: {"status": ..., "message": ...}
#   argo-health  tests/argo/ — prints the health Argo CD shows for an object with argocd/health.lua, evaluated in
#                gopher-lua (the Lua VM Argo CD runs health checks in) the way Argo CD feeds and reads it
# into the git-ignored .cache/k8s/bin/, next to kube-apiserver and etcd. A tool is rebuilt only when its sources
# (go.mod, go.sum, *.go) changed since the last build (a sha256 stamp next to the binary), so only the first run
# pays (~1 min cold; ~1 s with a warm Go build cache). helm is built by scripts/build-control-plane.sh, not here.
#
#   scripts/build-test-tools.sh                 build what is missing or stale (the default)
#   scripts/build-test-tools.sh argo-health     only the named tools (kstatus, argo-health)
#   scripts/build-test-tools.sh --force         rebuild
#
# Environment: K8S_BIN_DIR overrides the output folder (default <repo>/.cache/k8s/bin), as for build-control-plane.sh.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN_DIR=${K8S_BIN_DIR:-$ROOT/.cache/k8s/bin}
export GOTOOLCHAIN=local CGO_ENABLED=0

# shellcheck source=scripts/common.sh
. "$(dirname "$0")/common.sh"

sources_sha() {  # sha256 over the module's go.mod, go.sum and Go files (names and contents)
    (cd "$1" && find . -maxdepth 1 -type f \( -name go.mod -o -name go.sum -o -name '*.go' \) | LC_ALL=C sort |
        xargs sha256sum | sha256sum | cut -d' ' -f1)
}

build_tool() {  # build_tool NAME MODULE_DIR
    local name=$1 dir=$2
    [ -f "$dir/go.mod" ] || die "$dir/go.mod is missing"
    local want have=""
    want=$(sources_sha "$dir")
    [ -f "$BIN_DIR/$name.sha256" ] && have=$(cat "$BIN_DIR/$name.sha256")
    if [ "$FORCE" = 0 ] && [ -x "$BIN_DIR/$name" ] && [ "$have" = "$want" ]; then
        echo "    $name: up to date ($BIN_DIR/$name)"
        return 0
    fi
    say "building $name from ${dir#"$ROOT"/} (~1 min on the first run: module downloads and compiling apimachinery)…"
    local start=$SECONDS
    mkdir -p "$BIN_DIR"
    (cd "$dir" && with_heartbeat "building $name" go build -trimpath -ldflags "-s -w" -o "$BIN_DIR/$name.tmp" .)
    mv -f "$BIN_DIR/$name.tmp" "$BIN_DIR/$name"
    echo "$want" >"$BIN_DIR/$name.sha256"
    echo "    built $name in $((SECONDS - start))s ($(du -h "$BIN_DIR/$name" | cut -f1))"
}

declare -A TOOL_DIRS=([kstatus]="$ROOT/tests/kstatus" [argo-health]="$ROOT/tests/argo")
ALL_TOOLS=(kstatus argo-health)

FORCE=0
TOOLS=()
for arg in "$@"; do
    case "$arg" in
        --force) FORCE=1 ;;
        -h | --help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        -*) die "unknown option: $arg (try --help)" ;;
        *) [ -n "${TOOL_DIRS[$arg]+set}" ] || die "unknown tool: $arg (one of: ${ALL_TOOLS[*]})"; TOOLS+=("$arg") ;;
    esac
done
[ ${#TOOLS[@]} -gt 0 ] || TOOLS=("${ALL_TOOLS[@]}")
command -v go >/dev/null 2>&1 || die "Go is not installed (the test tools need Go >= 1.23; GOTOOLCHAIN=local is used)"
say "test tools → ${BIN_DIR#"$ROOT"/}"
for tool in "${TOOLS[@]}"; do
    build_tool "$tool" "${TOOL_DIRS[$tool]}"
done
