#!/usr/bin/env bash
# Single-node Apache Kafka (KRaft, combined broker+controller) on loopback,
# for local development and tests.
#
#   deploy/local/kafka.sh {start|stop|status|env}
#   MR_KAFKA_SECURE=1 deploy/local/kafka.sh {start|stop|status|env}
#
# With MR_KAFKA_SECURE=1 it runs a second, secured broker beside the plaintext one (its own ports and
# state dir): SASL/SCRAM-SHA-512 on a SASL_PLAINTEXT listener (19094) and over TLS on a SASL_SSL
# listener (19095, a CA of its own), the standard authorizer denying what no ACL allows, an `admin`
# super user, and the services' and departments' users with their ACLs (deploy/local/kafka-security.sh).
#
# Jars come from Maven Central (through Maven) and are cached in
#   ${MR_CACHE_DIR:-$HOME/.cache/mention-router}/kafka-<version>/libs
# State (config, data, logs, pid) lives in
#   ${MR_LOCAL_DIR:-<repo>/.local}/kafka
#
# Environment knobs:
#   MR_KAFKA_VERSION          Kafka version to fetch          (default 4.1.2)
#   MR_KAFKA_PORT             PLAINTEXT listener port          (default 19092)
#   MR_KAFKA_CONTROLLER_PORT  CONTROLLER listener port         (default 19093)
#   MR_KAFKA_HEAP_OPTS        JVM heap options                 (default -Xmx1g -Xms256m)
#   MR_KAFKA_SECURE_PORT, MR_KAFKA_SECURE_SSL_PORT, MR_KAFKA_SECURE_CONTROLLER_PORT,
#   MR_KAFKA_SECURE_HEAP_OPTS  the same for the secured broker (SASL_PLAINTEXT 19094, SASL_SSL 19095,
#                             CONTROLLER 19096, -Xmx512m -Xms128m)
#   MR_KAFKA_START_TIMEOUT    seconds to wait for readiness    (default 90)
#   MR_JAVA_HOME              JDK to use (default: /usr/lib/jvm/java-17-openjdk-amd64
#                             if present, else java on PATH); must be Java 17+
#   MR_CACHE_DIR, MR_LOCAL_DIR  see above
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/../.." && pwd)

KAFKA_VERSION=${MR_KAFKA_VERSION:-4.1.2}
SCALA_BINARY=2.13
LOG4J_VERSION=2.24.3
DEPENDENCY_PLUGIN_VERSION=3.8.1

SECURE=${MR_KAFKA_SECURE:-0}
HOST=127.0.0.1
if [[ $SECURE == 1 ]]; then
    # Knobs of their own: the plaintext broker's may be set in the same shell.
    PORT=${MR_KAFKA_SECURE_PORT:-19094}
    SSL_PORT=${MR_KAFKA_SECURE_SSL_PORT:-19095}
    CONTROLLER_PORT=${MR_KAFKA_SECURE_CONTROLLER_PORT:-19096}
    HEAP_OPTS=${MR_KAFKA_SECURE_HEAP_OPTS:--Xmx512m -Xms128m}
    STATE_NAME=kafka-secure
else
    PORT=${MR_KAFKA_PORT:-19092}
    CONTROLLER_PORT=${MR_KAFKA_CONTROLLER_PORT:-19093}
    HEAP_OPTS=${MR_KAFKA_HEAP_OPTS:--Xmx1g -Xms256m}
    STATE_NAME=kafka
fi
START_TIMEOUT=${MR_KAFKA_START_TIMEOUT:-90}
STOP_TIMEOUT=30

CACHE_ROOT=${MR_CACHE_DIR:-$HOME/.cache/mention-router}
KAFKA_CACHE=$CACHE_ROOT/kafka-$KAFKA_VERSION
LIBS_DIR=$KAFKA_CACHE/libs
LIBS_MARKER=$LIBS_DIR/.complete

STATE_DIR=${MR_LOCAL_DIR:-$REPO_ROOT/.local}/$STATE_NAME
DATA_DIR=$STATE_DIR/data
LOG_DIR=$STATE_DIR/logs
SERVER_LOG=$LOG_DIR/server.log
STDOUT_LOG=$LOG_DIR/kafka.out
CONFIG_FILE=$STATE_DIR/server.properties
LOG4J_FILE=$STATE_DIR/log4j2.xml
PID_FILE=$STATE_DIR/kafka.pid
CLUSTER_ID_FILE=$STATE_DIR/cluster.id

log() { printf '%s: %s\n' "$STATE_NAME" "$*"; }
err() { printf '%s: ERROR: %s\n' "$STATE_NAME" "$*" >&2; }
die() { err "$*"; exit 1; }

usage() {
    echo "usage: $0 {start|stop|status|env}" >&2
    exit 2
}

# --------------------------------------------------------------------------- java
JAVA=
find_java() {
    local candidate version major
    if [[ -n ${MR_JAVA_HOME:-} ]]; then
        candidate=$MR_JAVA_HOME/bin/java
    elif [[ -x /usr/lib/jvm/java-17-openjdk-amd64/bin/java ]]; then
        candidate=/usr/lib/jvm/java-17-openjdk-amd64/bin/java
    elif command -v java >/dev/null 2>&1; then
        candidate=$(command -v java)
    else
        die "no Java found: install a JDK 17+ (apt-get install -y openjdk-17-jre-headless) or set MR_JAVA_HOME"
    fi
    candidate=$(readlink -f "$candidate")
    [[ -x $candidate ]] || die "Java executable not found: $candidate"
    # 'openjdk version "17.0.15" 2025-04-15' / 'java version "1.8.0_392"'
    version=$("$candidate" -version 2>&1 | awk -F'"' '/version/ {print $2; exit}')
    major=${version%%.*}
    [[ $major == 1 ]] && major=$(cut -d. -f2 <<<"$version")
    if ! [[ $major =~ ^[0-9]+$ ]] || ((major < 17)); then
        die "Kafka $KAFKA_VERSION needs Java 17+, but $candidate is version '${version:-unknown}'; install openjdk-17 or set MR_JAVA_HOME"
    fi
    JAVA=$candidate
    export JAVA_HOME
    JAVA_HOME=$(cd "$(dirname "$candidate")/.." && pwd)
}

# --------------------------------------------------------------------------- jars
# The pom used to resolve the classpath. Its checksum is recorded in the
# marker file, so changing it (or the version) triggers a re-fetch.
write_fetch_pom() {
    cat <<EOF
<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0"
         xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
         xsi:schemaLocation="http://maven.apache.org/POM/4.0.0 http://maven.apache.org/xsd/maven-4.0.0.xsd">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.mention-router</groupId>
  <artifactId>kafka-runtime</artifactId>
  <version>$KAFKA_VERSION</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_$SCALA_BINARY</artifactId>
      <version>$KAFKA_VERSION</version>
    </dependency>
    <!-- CLI tools (console producer/consumer, api-versions, topics ...). -->
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka-tools</artifactId>
      <version>$KAFKA_VERSION</version>
      <exclusions>
        <!-- only needed by the connect-plugin-path tool; pulls Jetty/Jersey -->
        <exclusion><groupId>org.apache.kafka</groupId><artifactId>connect-runtime</artifactId></exclusion>
        <exclusion><groupId>com.fasterxml.jackson.jakarta.rs</groupId><artifactId>jackson-jakarta-rs-json-provider</artifactId></exclusion>
      </exclusions>
    </dependency>
    <!-- Logging backend: the Kafka poms only carry slf4j-api 1.7.x. -->
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j-impl</artifactId>
      <version>$LOG4J_VERSION</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-core</artifactId>
      <version>$LOG4J_VERSION</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-api</artifactId>
      <version>$LOG4J_VERSION</version>
    </dependency>
  </dependencies>
  <build>
    <plugins>
      <plugin>
        <groupId>org.apache.maven.plugins</groupId>
        <artifactId>maven-dependency-plugin</artifactId>
        <version>$DEPENDENCY_PLUGIN_VERSION</version>
      </plugin>
    </plugins>
  </build>
</project>
EOF
}

libs_complete() {
    [[ -f $LIBS_MARKER ]] && [[ $(cat "$LIBS_MARKER") == "$1" ]]
}

fetch_jars() {
    local pom_text pom_sum fetch_dir tmp_libs
    pom_text=$(write_fetch_pom)
    pom_sum=$(sha256sum <<<"$pom_text" | cut -d' ' -f1)
    libs_complete "$pom_sum" && return 0

    command -v mvn >/dev/null 2>&1 || die "Maven (mvn) is needed once to fetch the Kafka jars (apt-get install -y maven)"
    mkdir -p "$KAFKA_CACHE"
    # Serialize concurrent fetches (e.g. two clones starting at once).
    exec 8>"$KAFKA_CACHE/.fetch.lock"
    flock -w 600 8 || die "timed out waiting for another fetch to finish ($KAFKA_CACHE/.fetch.lock)"
    if libs_complete "$pom_sum"; then
        flock -u 8
        return 0
    fi

    log "fetching Kafka $KAFKA_VERSION jars from Maven Central into $LIBS_DIR (one-time) ..."
    fetch_dir=$KAFKA_CACHE/fetch
    tmp_libs=$KAFKA_CACHE/libs.tmp.$$
    rm -rf "$fetch_dir" "$tmp_libs"
    mkdir -p "$fetch_dir"
    printf '%s\n' "$pom_text" >"$fetch_dir/pom.xml"
    if ! mvn -q -B -f "$fetch_dir/pom.xml" \
        dependency:copy-dependencies \
        -DincludeScope=runtime \
        -DoutputDirectory="$tmp_libs" >"$fetch_dir/mvn.log" 2>&1; then
        cat "$fetch_dir/mvn.log" >&2
        rm -rf "$tmp_libs"
        die "Maven could not fetch the Kafka $KAFKA_VERSION jars (see output above; pom: $fetch_dir/pom.xml)"
    fi
    [[ -f $tmp_libs/kafka_$SCALA_BINARY-$KAFKA_VERSION.jar ]] ||
        die "Maven finished but kafka_$SCALA_BINARY-$KAFKA_VERSION.jar is missing from $tmp_libs"
    rm -rf "$LIBS_DIR"
    mv "$tmp_libs" "$LIBS_DIR"
    printf '%s\n' "$pom_sum" >"$LIBS_MARKER"
    log "fetched $(find "$LIBS_DIR" -name '*.jar' | wc -l) jars"
    flock -u 8
}

# --------------------------------------------------------------------------- probes
# Exit 0 when a Kafka broker on $HOST:$PORT answers an ApiVersions request and
# a Metadata request that lists at least one broker.
probe_python() {
    local py
    py=$(command -v python3 || true)
    [[ -n $py ]] || return 2
    "$py" - "$HOST" "$PORT" "$SECURE" <<'EOF'
import socket, struct, sys

host, port, secure = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"

def call(sock, api_key, version, corr, body=b""):
    client = b"mr-probe"
    header = struct.pack(">hhih", api_key, version, corr, len(client)) + client
    msg = header + body
    sock.sendall(struct.pack(">i", len(msg)) + msg)
    size = struct.unpack(">i", recv_exact(sock, 4))[0]
    data = recv_exact(sock, size)
    if struct.unpack(">i", data[:4])[0] != corr:
        raise RuntimeError("bad correlation id")
    return data[4:]

def recv_exact(sock, n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise RuntimeError("connection closed")
        buf += chunk
    return buf

try:
    with socket.create_connection((host, port), timeout=3) as s:
        s.settimeout(3)
        # ApiVersions v0 (supported by every broker version)
        resp = call(s, 18, 0, 1)
        error, count = struct.unpack(">hi", resp[:6])
        if error != 0:
            sys.exit(1)
        versions = {}
        for i in range(count):
            key, lo, hi = struct.unpack(">hhh", resp[6 + 6 * i: 12 + 6 * i])
            versions[key] = (lo, hi)
        if secure:
            sys.exit(0)  # a Metadata request needs a SASL login first: ApiVersions is enough
        if 3 not in versions:
            sys.exit(1)
        lo, hi = versions[3]
        v = max(lo, 4)
        if v > min(hi, 8):
            sys.exit(0)  # cannot speak a Metadata version we know; ApiVersions is enough
        # Metadata v4..v8: topics=null (all), allow_auto_topic_creation=false
        body = struct.pack(">i?", -1, False)
        if v >= 8:
            body += struct.pack(">??", False, False)
        resp = call(s, 3, v, 2, body)
        _throttle, brokers = struct.unpack(">ii", resp[:8])
        sys.exit(0 if brokers >= 1 else 1)
except Exception:
    sys.exit(1)
EOF
}

probe_java() {
    [[ -f $LIBS_MARKER ]] || return 1
    [[ -n $JAVA ]] || find_java
    timeout 30 "$JAVA" -Xmx128m -XX:TieredStopAtLevel=1 -cp "$LIBS_DIR/*" \
        -Dlog4j2.configurationFile="$STATE_DIR/log4j2-tools.xml" \
        org.apache.kafka.tools.BrokerApiVersionsCommand \
        --bootstrap-server "$HOST:$PORT" >/dev/null 2>&1
}

port_open() {
    (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null
}

broker_ready() {
    port_open "$PORT" || return 1
    local rc=0
    probe_python || rc=$?
    if ((rc == 2)); then
        probe_java
    else
        return "$rc"
    fi
}

# --------------------------------------------------------------------------- process
# Prints the pid of the broker this script started, if it is still alive.
our_pid() {
    local pid
    [[ -f $PID_FILE ]] || return 1
    pid=$(cat "$PID_FILE")
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    # Guard against pid reuse: the process must run our config file.
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$CONFIG_FILE" || return 1
    echo "$pid"
}

owner_note() {
    local pid
    if pid=$(our_pid); then
        echo "(pid $pid, state: $STATE_DIR)"
    else
        echo "(not started by this script)"
    fi
}

print_log_tail() {
    local f
    for f in "$SERVER_LOG" "$STDOUT_LOG"; do
        if [[ -s $f ]]; then
            echo "----- last 50 lines of $f -----" >&2
            tail -n 50 "$f" >&2
        fi
    done
}

if [[ $SECURE == 1 ]]; then
    # shellcheck source=deploy/local/kafka-security.sh
    source "$SCRIPT_DIR/kafka-security.sh"
    LISTENERS_LINE="listeners=SASL_PLAINTEXT://$HOST:$PORT,SASL_SSL://$HOST:$SSL_PORT,CONTROLLER://$HOST:$CONTROLLER_PORT"
else
    LISTENERS_LINE="listeners=PLAINTEXT://$HOST:$PORT,CONTROLLER://$HOST:$CONTROLLER_PORT"
    listener_config() {
        cat <<EOF
advertised.listeners=PLAINTEXT://$HOST:$PORT
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
EOF
    }
fi

write_config() {
    mkdir -p "$DATA_DIR" "$LOG_DIR"
    cat >"$CONFIG_FILE" <<EOF
# Generated by deploy/local/kafka.sh on every start; edits are overwritten.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@$HOST:$CONTROLLER_PORT
$LISTENERS_LINE
controller.listener.names=CONTROLLER
log.dirs=$DATA_DIR
$(listener_config)

num.partitions=4
auto.create.topics.enable=true
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=8
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=8
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0

# small shared dev box
num.network.threads=2
num.io.threads=4
num.recovery.threads.per.data.dir=1
log.retention.hours=24
log.segment.bytes=104857600
log.retention.check.interval.ms=300000
EOF
    cat >"$LOG4J_FILE" <<EOF
<?xml version="1.0" encoding="UTF-8"?>
<!-- Generated by deploy/local/kafka.sh -->
<Configuration status="warn">
  <Appenders>
    <RollingFile name="server" fileName="$SERVER_LOG" filePattern="$SERVER_LOG.%i">
      <PatternLayout pattern="[%d] %p %m (%c)%n"/>
      <SizeBasedTriggeringPolicy size="20MB"/>
      <DefaultRolloverStrategy max="3"/>
    </RollingFile>
  </Appenders>
  <Loggers>
    <Root level="info"><AppenderRef ref="server"/></Root>
    <Logger name="kafka.request.logger" level="warn"/>
    <Logger name="state.change.logger" level="warn"/>
    <Logger name="kafka.log.LogCleaner" level="warn"/>
    <Logger name="org.apache.kafka.controller" level="info"/>
  </Loggers>
</Configuration>
EOF
    cat >"$STATE_DIR/log4j2-tools.xml" <<'EOF'
<?xml version="1.0" encoding="UTF-8"?>
<Configuration status="warn">
  <Appenders>
    <Console name="stderr" target="SYSTEM_ERR"><PatternLayout pattern="[%d] %p %m (%c)%n"/></Console>
  </Appenders>
  <Loggers>
    <Root level="warn"><AppenderRef ref="stderr"/></Root>
  </Loggers>
</Configuration>
EOF
}

# The secured broker adds its admin's SCRAM credential here: it must exist before the first login.
FORMAT_ARGS=()
format_storage() {
    [[ -f $DATA_DIR/meta.properties ]] && return 0
    local cluster_id out
    if [[ -s $CLUSTER_ID_FILE ]]; then
        cluster_id=$(cat "$CLUSTER_ID_FILE")
    else
        cluster_id=$("$JAVA" -cp "$LIBS_DIR/*" -Dlog4j2.configurationFile="$STATE_DIR/log4j2-tools.xml" \
            kafka.tools.StorageTool random-uuid) || die "could not generate a cluster id"
        printf '%s\n' "$cluster_id" >"$CLUSTER_ID_FILE"
    fi
    if ! out=$("$JAVA" -cp "$LIBS_DIR/*" -Dlog4j2.configurationFile="$STATE_DIR/log4j2-tools.xml" \
        kafka.tools.StorageTool format --ignore-formatted \
        --cluster-id "$cluster_id" --config "$CONFIG_FILE" "${FORMAT_ARGS[@]}" 2>&1); then
        printf '%s\n' "$out" >&2
        die "formatting the KRaft storage in $DATA_DIR failed"
    fi
}

wait_ready() {
    local pid=$1 deadline=$((SECONDS + START_TIMEOUT))
    while ((SECONDS < deadline)); do
        if broker_ready; then
            return 0
        fi
        if ! kill -0 "$pid" 2>/dev/null; then
            err "the broker process (pid $pid) exited during startup"
            print_log_tail
            rm -f "$PID_FILE"
            exit 1
        fi
        sleep 1
    done
    err "the broker did not become ready on $HOST:$PORT within ${START_TIMEOUT}s (pid $pid still running; 'kafka.sh stop' to kill it)"
    print_log_tail
    exit 1
}

# --------------------------------------------------------------------------- commands
cmd_start() {
    local pid t0=$SECONDS
    if broker_ready; then
        if [[ $SECURE == 1 ]]; then provision; fi
        log "already running on $HOST:$PORT $(owner_note)"
        return 0
    fi
    find_java
    fetch_jars
    mkdir -p "$STATE_DIR"
    # Serialize concurrent 'start's on the same state dir.
    exec 9>"$STATE_DIR/.start.lock"
    flock -w $((START_TIMEOUT + 30)) 9 || die "timed out waiting for another 'kafka.sh start' ($STATE_DIR/.start.lock)"

    if pid=$(our_pid); then
        grep -qxF "$LISTENERS_LINE" "$CONFIG_FILE" ||
            die "broker pid $pid from $STATE_DIR runs with other ports (see $CONFIG_FILE); run '$0 stop' first"
        log "broker pid $pid is starting, waiting for it ..."
        wait_ready "$pid"
        if [[ $SECURE == 1 ]]; then provision; fi
        log "running on $HOST:$PORT (pid $pid)"
        return 0
    fi
    if port_open "$PORT"; then
        die "something is listening on $HOST:$PORT but does not answer as a Kafka broker; choose another port (MR_KAFKA_PORT, secured: MR_KAFKA_SECURE_PORT)"
    fi
    if port_open "$CONTROLLER_PORT"; then
        die "controller port $HOST:$CONTROLLER_PORT is already in use; choose another (MR_KAFKA_CONTROLLER_PORT, secured: MR_KAFKA_SECURE_CONTROLLER_PORT)"
    fi

    if [[ $SECURE == 1 ]]; then prepare_security; fi
    write_config
    format_storage

    # shellcheck disable=SC2086 # HEAP_OPTS is a list of JVM flags
    nohup "$JAVA" $HEAP_OPTS \
        -server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 \
        -XX:+ExplicitGCInvokesConcurrent -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true \
        -Dlog4j2.configurationFile="$LOG4J_FILE" -Dkafka.logs.dir="$LOG_DIR" \
        -cp "$LIBS_DIR/*" kafka.Kafka "$CONFIG_FILE" \
        >"$STDOUT_LOG" 2>&1 </dev/null 8>&- 9>&- &
    pid=$!
    echo "$pid" >"$PID_FILE"
    wait_ready "$pid"
    if [[ $SECURE == 1 ]]; then provision; fi
    log "started Kafka $KAFKA_VERSION on $HOST:$PORT (pid $pid, $((SECONDS - t0))s; state: $STATE_DIR)"
}

cmd_stop() {
    local pid deadline
    if ! pid=$(our_pid); then
        rm -f "$PID_FILE"
        if port_open "$PORT"; then
            log "not stopping: the broker on $HOST:$PORT was not started by this script ($STATE_DIR)"
        else
            log "not running"
        fi
        return 0
    fi
    kill -TERM "$pid" 2>/dev/null || true
    deadline=$((SECONDS + STOP_TIMEOUT))
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do
        sleep 0.5
    done
    if kill -0 "$pid" 2>/dev/null; then
        err "broker pid $pid did not stop within ${STOP_TIMEOUT}s, sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        sleep 1
    fi
    rm -f "$PID_FILE"
    log "stopped (pid $pid)"
}

cmd_status() {
    local pid
    pid=$(our_pid || true)
    if broker_ready; then
        log "running on $HOST:$PORT $(owner_note)"
        return 0
    fi
    if [[ -n $pid ]]; then
        log "process $pid is up but the broker does not answer on $HOST:$PORT (starting or unhealthy; log: $SERVER_LOG)"
        return 1
    fi
    log "not running"
    return 3
}

cmd_env() {
    if [[ $SECURE == 1 ]]; then
        secure_env
        return 0
    fi
    echo "export MR_KAFKA_BOOTSTRAP_SERVERS=$HOST:$PORT"
}

[[ $# -eq 1 ]] || usage
case $1 in
start) cmd_start ;;
stop) cmd_stop ;;
status) cmd_status ;;
env) cmd_env ;;
*) usage ;;
esac
