#!/usr/bin/env bash
# Local PostgreSQL server (Debian's package, our own data dir) on loopback,
# for local development and tests.
#
#   deploy/local/postgres.sh {start|stop|status|env}
#
# State lives in ${MR_LOCAL_DIR:-<repo>/.local}/postgres:
#   data/            the cluster (PGDATA)
#   run/             unix socket directory
#   postgres.log     server log
# When running as root the server runs as the 'postgres' system user; if that
# user cannot reach the state dir, a state dir under /tmp is used instead.
#
# Environment knobs:
#   MR_PG_PORT            TCP port on 127.0.0.1      (default 15432)
#   MR_PG_START_TIMEOUT   seconds to wait for ready  (default 60)
#   MR_LOCAL_DIR          see above
#
# A login role mr/mr (SUPERUSER, tests create throwaway databases) and a
# database mention_router owned by it are created idempotently.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/../.." && pwd)

PORT=${MR_PG_PORT:-15432}
HOST=127.0.0.1
START_TIMEOUT=${MR_PG_START_TIMEOUT:-60}
DB_USER=mr
DB_PASSWORD=mr
DB_NAME=mention_router

log() { printf 'postgres: %s\n' "$*"; }
err() { printf 'postgres: ERROR: %s\n' "$*" >&2; }
die() { err "$*"; exit 1; }

usage() {
    echo "usage: $0 {start|stop|status|env}" >&2
    exit 2
}

# --------------------------------------------------------------------------- identity
IS_ROOT=false
[[ $(id -u) -eq 0 ]] && IS_ROOT=true
if $IS_ROOT; then
    SERVER_USER=postgres
else
    SERVER_USER=$(id -un)
fi

# Run a command as the server's OS user.
as_owner() {
    if $IS_ROOT; then
        runuser -u "$SERVER_USER" -- "$@"
    else
        "$@"
    fi
}

ensure_server_user() {
    $IS_ROOT || return 0
    id -u postgres >/dev/null 2>&1 && return 0
    log "creating the 'postgres' system user"
    useradd --system --user-group --home-dir /var/lib/postgresql --shell /bin/bash postgres ||
        die "could not create the 'postgres' system user"
}

# --------------------------------------------------------------------------- state dir
DEFAULT_STATE_DIR=${MR_LOCAL_DIR:-$REPO_ROOT/.local}/postgres
# Keyed by uid and the default state dir (i.e. the repo path unless MR_LOCAL_DIR is set).
FALLBACK_STATE_DIR=/tmp/mention-router-$(id -u)-$(printf '%s' "$DEFAULT_STATE_DIR" | sha256sum | cut -c1-12)/postgres

set_state_dir() {
    STATE_DIR=$1
    DATA_DIR=$STATE_DIR/data
    RUN_DIR=$STATE_DIR/run
    LOG_FILE=$STATE_DIR/postgres.log
}

# The state dir in use: an existing cluster wins; otherwise the default dir if
# the server user can reach it, else the /tmp fallback.
choose_state_dir() {
    local create=$1 parent
    if [[ -f $DEFAULT_STATE_DIR/data/PG_VERSION ]]; then
        set_state_dir "$DEFAULT_STATE_DIR"
        return 0
    fi
    if [[ -f $FALLBACK_STATE_DIR/data/PG_VERSION ]]; then
        set_state_dir "$FALLBACK_STATE_DIR"
        return 0
    fi
    set_state_dir "$DEFAULT_STATE_DIR"
    [[ $create == create ]] || return 0
    parent=$(dirname "$DEFAULT_STATE_DIR")
    mkdir -p "$parent"
    if $IS_ROOT && ! runuser -u "$SERVER_USER" -- test -x "$parent"; then
        log "user '$SERVER_USER' cannot traverse $parent; using $FALLBACK_STATE_DIR instead"
        set_state_dir "$FALLBACK_STATE_DIR"
        mkdir -p "$(dirname "$FALLBACK_STATE_DIR")"
        chmod 755 "$(dirname "$FALLBACK_STATE_DIR")"
    fi
}

# --------------------------------------------------------------------------- binaries
PG_BIN=
find_pg_bin() {
    local d best=
    for d in /usr/lib/postgresql/*/bin; do
        [[ -x $d/initdb && -x $d/pg_ctl && -x $d/postgres ]] || continue
        # highest major version wins
        if [[ -z $best ]] || (($(basename "$(dirname "$d")") > $(basename "$(dirname "$best")"))); then
            best=$d
        fi
    done
    [[ -n $best ]] || return 1
    PG_BIN=$best
}

ensure_pg_bin() {
    find_pg_bin && return 0
    $IS_ROOT || die "PostgreSQL server binaries not found in /usr/lib/postgresql/*/bin; run: sudo apt-get install -y postgresql"
    log "installing PostgreSQL from Debian packages (apt-get) ..."
    if ! { DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql; } >/tmp/mention-router-apt.log 2>&1; then
        cat /tmp/mention-router-apt.log >&2
        die "apt-get install postgresql failed"
    fi
    find_pg_bin || die "postgresql installed but no initdb/pg_ctl/postgres found in /usr/lib/postgresql/*/bin"
    log "installed PostgreSQL $(basename "$(dirname "$PG_BIN")") (the Debian 'main' cluster the package creates is not used)"
}

# --------------------------------------------------------------------------- helpers
ready_tcp() {
    local isready
    isready=${PG_BIN:+$PG_BIN/pg_isready}
    [[ -n $isready ]] || isready=$(command -v pg_isready || true)
    if [[ -n $isready ]]; then
        "$isready" -q -h "$HOST" -p "$PORT" -t 2
    else
        (exec 3<>"/dev/tcp/$HOST/$PORT") 2>/dev/null
    fi
}

# Prints the postmaster pid of our data dir if it is alive.
our_pid() {
    local pid
    [[ -n ${DATA_DIR:-} && -f $DATA_DIR/postmaster.pid ]] || return 1
    pid=$(head -n1 "$DATA_DIR/postmaster.pid")
    [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q postgres || return 1
    echo "$pid"
}

psql_bin() {
    if [[ -n $PG_BIN && -x $PG_BIN/psql ]]; then
        echo "$PG_BIN/psql"
    else
        command -v psql || die "psql not found"
    fi
}

# psql as the server owner through our unix socket (trust auth); SQL on stdin.
owner_psql() {
    "$(psql_bin)" -X -q -w -v ON_ERROR_STOP=1 -h "$RUN_DIR" -p "$PORT" -U "$SERVER_USER" -d postgres -f -
}

mr_url() {
    echo "postgresql://$DB_USER:$DB_PASSWORD@$HOST:$PORT/$DB_NAME"
}

check_mr_login() {
    PGCONNECT_TIMEOUT=5 "$(psql_bin)" -X -q -w -At "$(mr_url)" -c 'select 1' >/dev/null 2>&1
}

ensure_role_and_db() {
    local out
    if ! out=$(owner_psql 2>&1 <<EOF
SELECT format('CREATE ROLE %I', '$DB_USER') WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '$DB_USER')
\gexec
ALTER ROLE "$DB_USER" WITH LOGIN SUPERUSER PASSWORD '$DB_PASSWORD';
SELECT format('CREATE DATABASE %I OWNER %I', '$DB_NAME', '$DB_USER') WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = '$DB_NAME')
\gexec
EOF
    ); then
        printf '%s\n' "$out" >&2
        die "could not create role '$DB_USER' / database '$DB_NAME'"
    fi
}

print_log_tail() {
    if [[ -s ${LOG_FILE:-} ]]; then
        echo "----- last 50 lines of $LOG_FILE -----" >&2
        tail -n 50 "$LOG_FILE" >&2
    fi
}

init_cluster() {
    [[ -f $DATA_DIR/PG_VERSION ]] && return 0
    local out
    mkdir -p "$DATA_DIR" "$RUN_DIR"
    if $IS_ROOT; then
        chown -R "$SERVER_USER": "$STATE_DIR"
    fi
    chmod 700 "$DATA_DIR"
    if ! out=$(as_owner "$PG_BIN/initdb" -D "$DATA_DIR" -U "$SERVER_USER" -E UTF8 --locale=C.UTF-8 \
        --auth-local=trust --auth-host=scram-sha-256 2>&1); then
        printf '%s\n' "$out" >&2
        die "initdb failed for $DATA_DIR"
    fi
    printf "\n# mention-router local settings (regenerated on start)\ninclude_if_exists = 'mention_router.conf'\n" |
        as_owner tee -a "$DATA_DIR/postgresql.conf" >/dev/null
}

write_conf() {
    local sock_dir=$RUN_DIR
    as_owner mkdir -p "$RUN_DIR"
    as_owner tee "$DATA_DIR/mention_router.conf" >/dev/null <<EOF
# Generated by deploy/local/postgres.sh on every start; edits are overwritten.
listen_addresses = '$HOST'
port = $PORT
unix_socket_directories = '$sock_dir'
max_connections = 200
shared_buffers = 128MB
fsync = off
synchronous_commit = off
full_page_writes = off
password_encryption = 'scram-sha-256'
logging_collector = off
log_line_prefix = '%m [%p] %q%u@%d '
EOF
}

# --------------------------------------------------------------------------- commands
cmd_start() {
    local pid t0=$SECONDS out
    ensure_server_user
    ensure_pg_bin
    choose_state_dir create

    if ready_tcp; then
        if pid=$(our_pid) && [[ -S $RUN_DIR/.s.PGSQL.$PORT ]]; then
            ensure_role_and_db
            check_mr_login || die "server (pid $pid) is up but '$DB_USER' cannot log in at $(mr_url)"
            log "already running on $HOST:$PORT (pid $pid, data: $DATA_DIR)"
        else
            check_mr_login ||
                die "a server on $HOST:$PORT (not started by this script) does not accept $(mr_url); stop it or choose another MR_PG_PORT"
            log "already running on $HOST:$PORT (not started by this script; '$DB_USER' can log in)"
        fi
        return 0
    fi

    if [[ ${#RUN_DIR} -gt 90 ]]; then
        die "unix socket path under $RUN_DIR is too long; set MR_LOCAL_DIR to a shorter path"
    fi
    init_cluster
    if $IS_ROOT; then
        # A clone copied as root may leave files the server cannot touch.
        chown -R "$SERVER_USER": "$STATE_DIR"
    fi
    write_conf
    as_owner touch "$LOG_FILE"

    if ! out=$(as_owner "$PG_BIN/pg_ctl" start -D "$DATA_DIR" -l "$LOG_FILE" -w -t "$START_TIMEOUT" -s 2>&1); then
        printf '%s\n' "$out" >&2
        err "PostgreSQL did not start (data: $DATA_DIR)"
        print_log_tail
        exit 1
    fi
    local deadline=$((SECONDS + START_TIMEOUT))
    until ready_tcp; do
        if ((SECONDS >= deadline)); then
            err "PostgreSQL started but does not accept TCP connections on $HOST:$PORT"
            print_log_tail
            exit 1
        fi
        sleep 0.5
    done
    ensure_role_and_db
    check_mr_login || {
        print_log_tail
        die "'$DB_USER' cannot log in at $(mr_url)"
    }
    pid=$(our_pid || echo '?')
    log "started PostgreSQL $(basename "$(dirname "$PG_BIN")") on $HOST:$PORT (pid $pid, $((SECONDS - t0))s; data: $DATA_DIR)"
}

cmd_stop() {
    local pid out
    choose_state_dir nocreate
    if ! pid=$(our_pid); then
        if ready_tcp; then
            log "not stopping: the server on $HOST:$PORT was not started by this script ($DATA_DIR)"
        else
            log "not running"
        fi
        return 0
    fi
    find_pg_bin || die "pg_ctl not found"
    if ! out=$(as_owner "$PG_BIN/pg_ctl" stop -D "$DATA_DIR" -m fast -w -t 60 -s 2>&1); then
        printf '%s\n' "$out" >&2
        err "fast shutdown failed, trying immediate shutdown"
        as_owner "$PG_BIN/pg_ctl" stop -D "$DATA_DIR" -m immediate -w -t 30 -s ||
            die "could not stop PostgreSQL (pid $pid)"
    fi
    log "stopped (pid $pid)"
}

cmd_status() {
    local pid
    find_pg_bin || true
    choose_state_dir nocreate
    pid=$(our_pid || true)
    if ready_tcp; then
        if [[ -n $pid ]]; then
            log "running on $HOST:$PORT (pid $pid, data: $DATA_DIR)"
        else
            log "running on $HOST:$PORT (not started by this script)"
        fi
        return 0
    fi
    if [[ -n $pid ]]; then
        log "postmaster $pid is up but not accepting connections on $HOST:$PORT (log: $LOG_FILE)"
        return 1
    fi
    log "not running"
    return 3
}

cmd_env() {
    echo "export MR_DATABASE_URL=postgresql+asyncpg://$DB_USER:$DB_PASSWORD@$HOST:$PORT/$DB_NAME"
}

[[ $# -eq 1 ]] || usage
case $1 in
start) cmd_start ;;
stop) cmd_stop ;;
status) cmd_status ;;
env) cmd_env ;;
*) usage ;;
esac
