#!/usr/bin/env bash
# Builds the real kube-apiserver and etcd that the e2e tests and `make demo` run (no Docker on this machine, so no
# kind/k3d: we build the upstream `main` packages, unchanged, from the pinned wrapper module in tests/k8s/ — see
# tests/k8s/README.md), and the official helm the chart tests use (`go install`, its own go.mod, no replaces).
# Binaries go to the git-ignored .cache/k8s/bin/; a binary that already exists and reports the pinned version is not
# rebuilt, so only the first run is slow (~7 min cold on 2 cores for the control plane + ~3 min for helm).
#
#   scripts/build-control-plane.sh                 build what is missing (the default; `make control-plane`)
#   scripts/build-control-plane.sh --no-helm       only kube-apiserver and etcd (`make demo`: it installs no chart)
#   scripts/build-control-plane.sh --force         rebuild every binary
#   scripts/build-control-plane.sh --regen-go-mod  regenerate tests/k8s/go.mod + go.sum from the pins below
#                                                  (then commit them); does not build
#   scripts/build-control-plane.sh --print-bin-dir print the binaries folder and exit
#
# Environment: K8S_BIN_DIR overrides the output folder (default <repo>/.cache/k8s/bin).
set -euo pipefail

# ---- pins (change here, then run --regen-go-mod) -----------------------------------------------------------------
K8S_VERSION=v1.36.3  # k8s.io/kubernetes; go directive 1.26.0
ETCD_VERSION=v3.6.8  # go.etcd.io/etcd/server/v3; the etcd client version Kubernetes 1.36 requires
HELM_VERSION=v4.3.1  # helm.sh/helm/v4 (not part of tests/k8s/go.mod: `go install pkg@version` uses helm's own go.mod)
# ------------------------------------------------------------------------------------------------------------------

ROOT=$(cd "$(dirname "$0")/.." && pwd)
MOD_DIR=$ROOT/tests/k8s
BIN_DIR=${K8S_BIN_DIR:-$ROOT/.cache/k8s/bin}
K8S_MINOR=$(echo "$K8S_VERSION" | cut -d. -f2)
STAGING_VERSION=v0.${K8S_MINOR}.$(echo "$K8S_VERSION" | cut -d. -f3)  # v1.36.3 -> v0.36.3

export GOTOOLCHAIN=local CGO_ENABLED=0

# shellcheck source=scripts/common.sh
. "$(dirname "$0")/common.sh"

need_go() {
    command -v go >/dev/null 2>&1 || die "Go is not installed (need Go >= 1.26 for k8s.io/kubernetes $K8S_VERSION)"
    local v
    v=$(go env GOVERSION)  # go1.26.8
    case "$v" in
        go1.2[6-9]* | go1.[3-9]* | go[2-9]*) ;;
        *) die "Go $v is too old: k8s.io/kubernetes $K8S_VERSION needs go >= 1.26.0 (GOTOOLCHAIN=local is used)" ;;
    esac
}

regen_go_mod() {
    need_go
    say "regenerating tests/k8s/go.mod for k8s.io/kubernetes $K8S_VERSION + etcd $ETCD_VERSION"
    mkdir -p "$MOD_DIR"
    cd "$MOD_DIR"
    rm -f go.mod go.sum
    go mod init redisfunctions.dev/tests/k8s >/dev/null 2>&1

    # k8s.io/kubernetes requires its staging modules at v0.0.0 and maps them with local `replace` lines, which Go
    # ignores in a dependency; mirror every one of them to the published tag instead.
    local k8s_gomod
    k8s_gomod=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | jq -r .GoMod)
    [ -f "$k8s_gomod" ] || die "could not download k8s.io/kubernetes@$K8S_VERSION"
    local staging
    staging=$(awk '$2 == "=>" && $3 ~ /^\.\/staging\// { print $1 }
                   $1 == "replace" && $3 == "=>" && $4 ~ /^\.\/staging\// { print $2 }' "$k8s_gomod" | sort -u)
    local n
    n=$(echo "$staging" | grep -c .) || true
    [ "$n" -ge 25 ] || die "found only $n staging replace lines in $k8s_gomod — has its layout changed?"
    {
        printf '\n// Kubernetes staging modules: k8s.io/kubernetes requires them at v0.0.0 with local replaces.\nreplace (\n'
        for m in $staging; do printf '\t%s => %s %s\n' "$m" "$m" "$STAGING_VERSION"; done
        printf ')\n'
    } >>go.mod
    go mod edit -fmt
    echo "    $n staging modules replaced with @$STAGING_VERSION"

    # Same language version and GODEBUG defaults as Kubernetes' own go.mod.
    local go_directive
    go_directive=$(awk '$1 == "go" { print $2; exit }' "$k8s_gomod")
    go mod edit "-go=$go_directive"
    local gd
    for gd in $(awk '$1 == "godebug" && $2 != "(" { print $2 }
                     $1 == "godebug" && $2 == "(" { f = 1; next }
                     f && $1 == ")" { f = 0 }
                     f { print $1 }' "$k8s_gomod"); do
        go mod edit "-godebug=$gd"
    done

    say "go get -tool k8s.io/kubernetes/cmd/kube-apiserver@$K8S_VERSION (module downloads, ~1 min cold)"
    with_heartbeat "downloading modules" go get -tool "k8s.io/kubernetes/cmd/kube-apiserver@$K8S_VERSION"
    say "go get -tool go.etcd.io/etcd/server/v3@$ETCD_VERSION"
    # Explicit version: without it `go get` takes the newest etcd (3.7.x), which Kubernetes 1.36 is not tested with.
    go get -tool "go.etcd.io/etcd/server/v3@$ETCD_VERSION"
    go mod tidy

    # The etcd dependency must not have bumped Kubernetes or vice versa.
    local got_k got_e
    got_k=$(go list -m -f '{{.Version}}' k8s.io/kubernetes)
    got_e=$(go list -m -f '{{.Version}}' go.etcd.io/etcd/server/v3)
    [ "$got_k" = "$K8S_VERSION" ] || die "go.mod resolved k8s.io/kubernetes $got_k, wanted $K8S_VERSION"
    [ "$got_e" = "$ETCD_VERSION" ] || die "go.mod resolved go.etcd.io/etcd/server/v3 $got_e, wanted $ETCD_VERSION"

    {
        echo "// Generated by scripts/build-control-plane.sh --regen-go-mod — do not edit by hand; see README.md here."
        echo "// A wrapper module (no Go code) that pins the upstream kube-apiserver and etcd main packages."
        cat go.mod
    } >go.mod.new && mv go.mod.new go.mod
    go mod edit -fmt
    go mod verify >/dev/null
    say "tests/k8s/go.mod ($(wc -l <go.mod) lines) and go.sum ($(wc -l <go.sum) lines) regenerated — commit both"
}

# Prints the version a binary reports, or nothing.
binary_version() {
    case "$1" in
        kube-apiserver) "$BIN_DIR/kube-apiserver" --version 2>/dev/null | awk '{ print $2 }' ;;  # Kubernetes v1.36.3
        etcd) "$BIN_DIR/etcd" --version 2>/dev/null | awk '/^etcd Version:/ { print "v" $3 }' ;;  # etcd Version: 3.6.8
        helm) "$BIN_DIR/helm" version --template '{{.Version}}' 2>/dev/null ;;  # v4.3.1 (stamped by build_helm)
    esac
}

build_one() {
    local name=$1 want=$2 estimate=$3
    shift 3
    local have=""
    if [ -x "$BIN_DIR/$name" ]; then have=$(binary_version "$name" || true); fi
    if [ "$FORCE" = 0 ] && [ "$have" = "$want" ]; then
        echo "    $name $want: up to date ($BIN_DIR/$name)"
        return 0
    fi
    if [ -n "$have" ]; then
        say "rebuilding $name $want (found ${have:-unknown}) (~$estimate)…"
    else
        say "building $name $want (first run only, ~$estimate)…"
    fi
    local start=$SECONDS
    mkdir -p "$BIN_DIR"
    (cd "$MOD_DIR" && with_heartbeat "building $name" go build -trimpath -o "$BIN_DIR/$name.tmp" "$@")
    mv -f "$BIN_DIR/$name.tmp" "$BIN_DIR/$name"
    have=$(binary_version "$name" || true)
    [ "$have" = "$want" ] || die "$name was built but reports version '${have}', wanted $want"
    echo "    built $name $want in $(fmt_secs $((SECONDS - start))) ($(du -h "$BIN_DIR/$name" | cut -f1))"
}

# helm: `go install helm.sh/helm/v4/cmd/helm@$HELM_VERSION` into a temp GOBIN, then moved into place. Without the -X
# stamp it reports only "v4.3" (its version comes from the build info); the stamp makes the check below exact.
build_helm() {
    local have=""
    if [ -x "$BIN_DIR/helm" ]; then have=$(binary_version helm || true); fi
    if [ "$FORCE" = 0 ] && [ "$have" = "$HELM_VERSION" ]; then
        echo "    helm $HELM_VERSION: up to date ($BIN_DIR/helm)"
        return 0
    fi
    if [ -n "$have" ]; then
        say "rebuilding helm $HELM_VERSION (found $have) (~3 min)…"
    else
        say "building helm $HELM_VERSION (first run only, ~3 min incl. downloads)…"
    fi
    local start=$SECONDS gobin
    mkdir -p "$BIN_DIR"
    gobin=$(mktemp -d "$BIN_DIR/.helm-build.XXXXXX")
    if ! with_heartbeat "building helm" env GOBIN="$gobin" go install -trimpath \
            -ldflags "-s -w -X helm.sh/helm/v4/internal/version.version=$HELM_VERSION" \
            "helm.sh/helm/v4/cmd/helm@$HELM_VERSION"; then
        rm -rf "$gobin"
        die "go install helm.sh/helm/v4/cmd/helm@$HELM_VERSION failed"
    fi
    mv -f "$gobin/helm" "$BIN_DIR/helm"
    rm -rf "$gobin"
    have=$(binary_version helm || true)
    [ "$have" = "$HELM_VERSION" ] || die "helm was built but reports version '${have}', wanted $HELM_VERSION"
    echo "    built helm $HELM_VERSION in $(fmt_secs $((SECONDS - start))) ($(du -h "$BIN_DIR/helm" | cut -f1))"
}

build() {
    need_go
    [ -f "$MOD_DIR/go.mod" ] || die "tests/k8s/go.mod is missing; run: scripts/build-control-plane.sh --regen-go-mod"
    local pinned_k pinned_e
    pinned_k=$(cd "$MOD_DIR" && go list -m -f '{{.Version}}' k8s.io/kubernetes 2>/dev/null || true)
    pinned_e=$(cd "$MOD_DIR" && go list -m -f '{{.Version}}' go.etcd.io/etcd/server/v3 2>/dev/null || true)
    if [ "$pinned_k" != "$K8S_VERSION" ] || [ "$pinned_e" != "$ETCD_VERSION" ]; then
        die "tests/k8s/go.mod pins kubernetes '$pinned_k' / etcd '$pinned_e' but this script wants $K8S_VERSION / $ETCD_VERSION; run: scripts/build-control-plane.sh --regen-go-mod"
    fi

    local total_start=$SECONDS
    local what="kube-apiserver $K8S_VERSION, etcd $ETCD_VERSION"
    if [ "$HELM" = 1 ]; then what+=", helm $HELM_VERSION"; fi
    say "control plane binaries: $what → ${BIN_DIR#"$ROOT"/}"
    # Version stamped, so /version, kubectl and helm's kubeVersion checks see the real version, not v0.0.0.
    local ldf="-s -w"
    ldf+=" -X k8s.io/component-base/version.gitVersion=$K8S_VERSION"
    ldf+=" -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$K8S_MINOR"
    ldf+=" -X k8s.io/component-base/version.gitTreeState=clean"
    ldf+=" -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION"
    ldf+=" -X k8s.io/client-go/pkg/version.gitMajor=1 -X k8s.io/client-go/pkg/version.gitMinor=$K8S_MINOR"
    # etcd first: it is quick, so a broken toolchain shows up before the long build.
    build_one etcd "$ETCD_VERSION" "1 min incl. downloads" -ldflags "-s -w" go.etcd.io/etcd/server/v3
    build_one kube-apiserver "$K8S_VERSION" "6 min" -tags selinux,notest -ldflags "$ldf" \
        k8s.io/kubernetes/cmd/kube-apiserver
    if [ "$HELM" = 1 ]; then build_helm; fi
    echo "    done in $(fmt_secs $((SECONDS - total_start)))"
}

FORCE=0
HELM=1
ACTION=build
for arg in "$@"; do
    case "$arg" in
        --regen-go-mod) ACTION=regen ;;
        --no-helm) HELM=0 ;;
        --force) FORCE=1 ;;
        --print-bin-dir) ACTION=print ;;
        -h | --help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument: $arg (try --help)" ;;
    esac
done
case "$ACTION" in
    regen) regen_go_mod ;;
    print) echo "$BIN_DIR" ;;
    build) build ;;
esac
