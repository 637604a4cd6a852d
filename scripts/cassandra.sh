#!/usr/bin/env bash
# A single-node Apache Cassandra for tests and local runs, from Maven Central jars.
#
#   scripts/cassandra.sh up     download (once, cached by version), start, wait for CQL
#   scripts/cassandra.sh down   stop it and delete its data
#   scripts/cassandra.sh status
#   scripts/cassandra.sh nodetool ARGS...   run nodetool against it (snapshot, import, ...)
#   scripts/cassandra.sh data-dir           print its data directory (where snapshots are)
#
# Cassandra stands in for ScyllaDB (same CQL and LWT). It listens on 127.0.0.1 only
# (CQL port $CASSANDRA_PORT, default 9042), keeps data in a temporary directory, and
# runs on JDK 17 with a small heap. Jars live in ~/.cache/stockflow/cassandra-<version>.
# With $CASSANDRA_TLS_DIR (made by scripts/tls.sh), the CQL port also takes TLS clients
# (client encryption, optional: plain and TLS connections on the same port).
set -euo pipefail

VERSION="${CASSANDRA_VERSION:-5.0.8}"
PORT="${CASSANDRA_PORT:-9042}"
STORAGE_PORT="${CASSANDRA_STORAGE_PORT:-17000}"
# JMX, for nodetool: bound to 127.0.0.1 only (cassandra.jmx.local.port), without auth.
JMX_PORT="${CASSANDRA_JMX_PORT:-$((STORAGE_PORT + 1))}"
CACHE="${STOCKFLOW_CACHE:-$HOME/.cache/stockflow}/cassandra-$VERSION"
RUN="${CASSANDRA_RUN_DIR:-${TMPDIR:-/tmp}/stockflow-cassandra-$PORT}"

# shellcheck source=scripts/jvm.sh
source "$(dirname "$0")/jvm.sh"

fetch() {
    [[ -f "$CACHE/.complete" ]] && return
    echo "cassandra.sh: fetching cassandra-all $VERSION and its dependencies from Maven Central" >&2
    # cassandra-parent names system-scoped ${jmc5.path} jars; Maven logs an ERROR for
    # them that does not affect the runtime classpath.
    maven_fetch cassandra.sh "$CACHE" "
    <dependency><groupId>org.apache.cassandra</groupId><artifactId>cassandra-all</artifactId><version>$VERSION</version></dependency>" \
        "cassandra-all-*.jar jamm-*.jar"
}

write_config() {
    mkdir -p "$RUN/data" "$RUN/commitlog" "$RUN/saved_caches" "$RUN/hints" "$RUN/cdc"
    cat > "$RUN/cassandra.yaml" <<YAML
cluster_name: stockflow-test
partitioner: org.apache.cassandra.dht.Murmur3Partitioner
endpoint_snitch: SimpleSnitch
num_tokens: 1
listen_address: 127.0.0.1
rpc_address: 127.0.0.1
storage_port: $STORAGE_PORT
native_transport_port: $PORT
start_native_transport: true
seed_provider:
  - class_name: org.apache.cassandra.locator.SimpleSeedProvider
    parameters:
      - seeds: "127.0.0.1:$STORAGE_PORT"
data_file_directories:
  - $RUN/data
commitlog_directory: $RUN/commitlog
saved_caches_directory: $RUN/saved_caches
hints_directory: $RUN/hints
cdc_raw_directory: $RUN/cdc
commitlog_sync: periodic
commitlog_sync_period: 10000ms
auto_snapshot: false
memtable_allocation_type: heap_buffers
cdc_enabled: false
concurrent_reads: 8
concurrent_writes: 8
write_request_timeout: 5000ms
cas_contention_timeout: 5000ms
read_request_timeout: 5000ms
# Every test makes its own keyspace, whose ~150 statements are prepared anew (their text
# names the keyspace): the default cache (10 MiB) evicts statements of running tests, which
# then fail with "Prepared query ... not found" when the driver's one re-prepare is evicted
# again before it runs.
prepared_statements_cache_size: 256MiB
YAML
    if [[ -n "${CASSANDRA_TLS_DIR:-}" ]]; then
        cat >> "$RUN/cassandra.yaml" <<YAML
client_encryption_options:
  enabled: true
  optional: true
  keystore: $CASSANDRA_TLS_DIR/server.p12
  keystore_password: stockflow-test
  store_type: PKCS12
YAML
    fi
    cat > "$RUN/logback.xml" <<XML
<configuration>
  <appender name="FILE" class="ch.qos.logback.core.FileAppender">
    <file>$RUN/system.log</file>
    <encoder><pattern>%-5level [%thread] %date %logger{20} %msg%n</pattern></encoder>
  </appender>
  <root level="WARN"><appender-ref ref="FILE"/></root>
  <logger name="org.apache.cassandra.service.CassandraDaemon" level="INFO"/>
</configuration>
XML
}

# The module exports and opens Cassandra's classes need on JDK 17 (daemon and tools).
jvm_opens() {
    for m in java.base/jdk.internal.misc java.management.rmi/com.sun.jmx.remote.internal.rmi \
             java.rmi/sun.rmi.registry java.rmi/sun.rmi.server java.sql/java.sql \
             java.base/java.lang.ref jdk.unsupported/sun.misc jdk.compiler/com.sun.tools.javac.file \
             jdk.attach/sun.tools.attach java.management/com.sun.jmx.remote.security; do
        opens+=("--add-exports=$m=ALL-UNNAMED")
    done
    for m in java.base/java.lang.module java.base/jdk.internal.loader java.base/jdk.internal.ref \
             java.base/jdk.internal.reflect java.base/jdk.internal.math java.base/jdk.internal.module \
             java.base/jdk.internal.util.jar java.base/sun.nio.ch java.base/java.io \
             java.base/java.lang.reflect java.base/java.lang java.base/java.util java.base/java.nio \
             jdk.management/com.sun.management.internal jdk.compiler/com.sun.tools.javac; do
        opens+=("--add-opens=$m=ALL-UNNAMED")
    done
}

is_up() { (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; }

up() {
    if [[ -f "$RUN/pid" ]] && kill -0 "$(cat "$RUN/pid")" 2>/dev/null && is_up; then
        echo "cassandra.sh: already running on 127.0.0.1:$PORT" >&2; return
    fi
    if is_up; then
        echo "cassandra.sh: port $PORT is taken by another process" >&2; exit 1
    fi
    fetch
    local java
    java="$(find_java17 cassandra.sh "${CASSANDRA_JAVA:-}")"
    rm -rf "$RUN"
    write_config
    local jamm
    jamm="$(ls "$CACHE"/lib/jamm-*.jar | head -1)"
    local opens=()
    jvm_opens
    # 2 GiB: the test suite gives each test its own keyspace (some 25 tables each, ~50
    # keyspaces a run), and every table's memtable lives on the heap; at 1 GiB a long
    # session ran out of heap.
    nohup "$java" -Xms512m -Xmx2g -XX:+UseG1GC -Xss512k \
        -javaagent:"$jamm" "${opens[@]}" \
        -Djdk.attach.allowAttachSelf=true -Dio.netty.tryReflectionSetAccessible=true \
        -Dcassandra.config="file://$RUN/cassandra.yaml" -Dcassandra.storagedir="$RUN" \
        -Dcassandra-foreground=true -Dlogback.configurationFile="$RUN/logback.xml" \
        -Dcassandra.skip_wait_for_gossip_to_settle=0 -Dcassandra.ring_delay_ms=100 \
        -Dcassandra.superuser_setup_delay_ms=0 -Dcassandra.unsafesystem=true \
        -Dcassandra.jmx.local.port="$JMX_PORT" \
        -cp "$CACHE/lib/*" org.apache.cassandra.service.CassandraDaemon \
        >"$RUN/stdout.log" 2>&1 &
    echo $! > "$RUN/pid"
    local took
    took="$(wait_started cassandra.sh "$RUN" is_up 180 "$RUN/stdout.log" "$RUN/system.log")"
    echo "cassandra.sh: Cassandra $VERSION is up on 127.0.0.1:$PORT after $took s (data in $RUN)" >&2
}

down() { stop_server "$RUN"; }

# nodetool from the same jars, over the local JMX port.
nodetool() {
    local java
    java="$(find_java17 cassandra.sh "${CASSANDRA_JAVA:-}")"
    local opens=()
    jvm_opens
    cat > "$RUN/logback-tools.xml" <<XML
<configuration>
  <appender name="ERR" class="ch.qos.logback.core.ConsoleAppender">
    <target>System.err</target>
    <encoder><pattern>%-5level %logger{20} %msg%n</pattern></encoder>
  </appender>
  <root level="WARN"><appender-ref ref="ERR"/></root>
</configuration>
XML
    "$java" -Xmx256m "${opens[@]}" -cp "$CACHE/lib/*" -Dlogback.configurationFile="$RUN/logback-tools.xml" \
        -Dcassandra.logdir="$RUN" \
        org.apache.cassandra.tools.NodeTool -h 127.0.0.1 -p "$JMX_PORT" "$@"
}

case "${1:-}" in
    nodetool) shift; nodetool "$@"; exit ;;
    pid) cat "$RUN/pid"; exit ;;
    data-dir) echo "$RUN/data"; exit ;;
esac
serve_main cassandra.sh "$PORT" "${1:-}"
