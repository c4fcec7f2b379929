#!/usr/bin/env bash
# Local backing services for development and tests: PostgreSQL + Kafka.
#
#   deploy/local/services.sh {up|down|status|env}
#
#   up      start both (idempotent)
#   down    stop both (only what these scripts started)
#   status  status of both; exit status 0 only if both are running
#   env     export lines for both, e.g.  eval "$(deploy/local/services.sh env)"
#
# See postgres.sh and kafka.sh for the MR_* environment knobs.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PG=$SCRIPT_DIR/postgres.sh
KAFKA=$SCRIPT_DIR/kafka.sh

usage() {
    echo "usage: $0 {up|down|status|env}" >&2
    exit 2
}

[[ $# -eq 1 ]] || usage
case $1 in
up)
    "$PG" start
    "$KAFKA" start
    ;;
down)
    rc=0
    "$KAFKA" stop || rc=$?
    "$PG" stop || rc=$?
    exit "$rc"
    ;;
status)
    rc=0
    "$PG" status || rc=$?
    "$KAFKA" status || rc=$?
    exit "$rc"
    ;;
env)
    "$PG" env
    "$KAFKA" env
    ;;
*) usage ;;
esac
