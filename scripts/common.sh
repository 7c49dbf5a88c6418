# Shared by the build scripts (sourced, not run): messages, and a heartbeat for long silent builds.

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }
die() { printf '\033[1;31merror:\033[0m %s\n' "$*" >&2; exit 1; }
fmt_secs() { printf '%dm%02ds' $(($1 / 60)) $(($1 % 60)); }

# with_heartbeat LABEL CMD...: runs CMD while printing a line every 30 s, so a long silent build does not look hung.
# The ticker kills its own sleep when it is stopped: a leftover `sleep 30` would hold the output pipe open, and a
# caller reading the build's output (a test fixture) would wait up to 30 s after the build has finished.
with_heartbeat() {
    local label=$1; shift
    local start=$SECONDS
    (
        trap 'kill "$nap" 2>/dev/null; exit 0' TERM
        while :; do
            sleep 30 & nap=$!
            wait "$nap"
            printf '    … still %s (%s elapsed)\n' "$label" "$(fmt_secs $((SECONDS - start)))"
        done
    ) &
    local ticker=$! rc=0
    "$@" || rc=$?
    kill "$ticker" 2>/dev/null || true
    wait "$ticker" 2>/dev/null || true
    return "$rc"
}
