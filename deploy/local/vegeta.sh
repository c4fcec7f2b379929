#!/usr/bin/env bash
# vegeta, the HTTP load generator of the API bench (python -m bench.api_bench, make bench-api, and the
# quick API bench in make test): a native binary, so that sending the load does not take the CPU of the
# API it measures (the bench's own httpx loop cost 2-6 ms of CPU a request, as much as the API).
#
#   deploy/local/vegeta.sh {install|path|env|version}
#
#   install  `go install` the pinned release from the Go module proxy into the state dir, once
#            (idempotent: nothing to do, nothing printed on stdout, when it is there; ~15 s the first time)
#   path     print the executable (exit 1 when it is not installed)
#   env      an export line, e.g.  eval "$(deploy/local/vegeta.sh env)"
#   version  the pinned version
#
# State lives in ${MR_LOCAL_DIR:-<repo>/.local}/bin/vegeta-<version> (a new pin builds a new file).
#
# Environment knobs:
#   MR_VEGETA     a vegeta executable to use instead (install then only checks it runs)
#   MR_LOCAL_DIR  see above
set -euo pipefail

VEGETA_VERSION=v12.13.0
PACKAGE=github.com/tsenart/vegeta/v12

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/../.." && pwd)
STATE_DIR=${MR_LOCAL_DIR:-$REPO_ROOT/.local}
BIN_DIR=$STATE_DIR/bin
TARGET=$BIN_DIR/vegeta-$VEGETA_VERSION

log() { printf 'vegeta: %s\n' "$*" >&2; }
die() { printf 'vegeta: ERROR: %s\n' "$*" >&2; exit 1; }

usage() {
    echo "usage: $0 {install|path|env|version}" >&2
    exit 2
}

executable() {
    if [[ -n ${MR_VEGETA:-} ]]; then
        [[ -x $MR_VEGETA ]] || return 1
        printf '%s\n' "$MR_VEGETA"
        return 0
    fi
    [[ -x $TARGET ]] || return 1
    printf '%s\n' "$TARGET"
}

install_vegeta() {
    if [[ -n ${MR_VEGETA:-} ]]; then
        [[ -x $MR_VEGETA ]] || die "MR_VEGETA=$MR_VEGETA is not an executable"
        "$MR_VEGETA" -version >/dev/null || die "MR_VEGETA=$MR_VEGETA does not run"
        return 0
    fi
    [[ -x $TARGET ]] && return 0
    command -v go >/dev/null 2>&1 ||
        die "'go' is not on PATH: the API bench builds vegeta with go install (Go >= 1.22, as for make deploy-check); or set MR_VEGETA, or run the bench with --loader python"
    mkdir -p "$BIN_DIR"
    # Two checkouts or a make -j may install at once: one builds, the others wait and find it built.
    exec 9>"$BIN_DIR/.vegeta.lock"
    flock 9
    [[ -x $TARGET ]] && return 0
    log "building $PACKAGE@$VEGETA_VERSION (go install, once) ..."
    local tmp
    tmp=$(mktemp -d "$BIN_DIR/.vegeta.XXXXXX")
    # shellcheck disable=SC2064
    trap "rm -rf '$tmp'" EXIT
    GOBIN="$tmp" GOTOOLCHAIN=local GOFLAGS="-buildvcs=false -trimpath" \
        go install -ldflags "-s -w -X main.Version=$VEGETA_VERSION" "$PACKAGE@$VEGETA_VERSION" >&2 ||
        die "go install $PACKAGE@$VEGETA_VERSION failed"
    mv "$tmp/vegeta" "$TARGET"
    log "installed $TARGET"
}

[[ $# -eq 1 ]] || usage
case $1 in
install) install_vegeta ;;
path) executable || die "vegeta is not installed (deploy/local/vegeta.sh install)" ;;
env)
    found=$(executable) || die "vegeta is not installed (deploy/local/vegeta.sh install)"
    printf 'export MR_VEGETA=%q\n' "$found"
    ;;
version) printf '%s\n' "$VEGETA_VERSION" ;;
*) usage ;;
esac
