#!/usr/bin/env bash
# Debian's Chromium for the desk's end-to-end tests (tests/e2e/test_desk.py drives it with Playwright;
# Playwright's own browser download is not used).
#
#   deploy/local/chromium.sh {install|path|env}
#
#   install  install the `chromium` package with apt-get when no Chromium is found (idempotent)
#   path     print the Chromium executable (exit 1 when there is none)
#   env      an export line for the tests, e.g.  eval "$(deploy/local/chromium.sh env)"
#
# Environment knobs:
#   MR_CHROMIUM   a Chromium executable to use instead of looking for one
set -euo pipefail

log() { printf 'chromium: %s\n' "$*"; }
err() { printf 'chromium: ERROR: %s\n' "$*" >&2; }
die() { err "$*"; exit 1; }

usage() {
    echo "usage: $0 {install|path|env}" >&2
    exit 2
}

find_chromium() {
    local candidate
    if [[ -n ${MR_CHROMIUM:-} ]]; then
        [[ -x $MR_CHROMIUM ]] || return 1
        printf '%s\n' "$MR_CHROMIUM"
        return 0
    fi
    for candidate in chromium chromium-browser /usr/lib/chromium/chromium; do
        if command -v "$candidate" >/dev/null 2>&1; then
            command -v "$candidate"
            return 0
        fi
    done
    return 1
}

install_chromium() {
    if found=$(find_chromium); then
        log "found $found ($("$found" --version 2>/dev/null | head -n 1 || echo 'version unknown'))"
        return 0
    fi
    [[ -z ${MR_CHROMIUM:-} ]] || die "MR_CHROMIUM=$MR_CHROMIUM is not an executable"
    [[ $(id -u) -eq 0 ]] || die "no Chromium found; run: sudo apt-get install -y chromium"
    log "installing Chromium from Debian packages (apt-get) ..."
    if ! { DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } >/tmp/mention-router-apt-chromium.log 2>&1; then
        cat /tmp/mention-router-apt-chromium.log >&2
        die "apt-get install chromium failed"
    fi
    found=$(find_chromium) || die "the chromium package is installed but no chromium executable was found"
    log "installed $found"
}

[[ $# -eq 1 ]] || usage
case $1 in
install) install_chromium ;;
path) find_chromium || die "no Chromium found (deploy/local/chromium.sh install)" ;;
env)
    found=$(find_chromium) || die "no Chromium found (deploy/local/chromium.sh install)"
    printf 'export MR_CHROMIUM=%q\n' "$found"
    ;;
*) usage ;;
esac
