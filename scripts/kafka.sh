#!/usr/bin/env bash
# A single-node Apache Kafka (KRaft: broker and controller in one process) for tests and
# local runs, from Maven Central jars.
#
#   scripts/kafka.sh up     download (once, cached by version), format, start, wait for it
#   scripts/kafka.sh down   stop it and delete its data
#   scripts/kafka.sh status
#
# It listens on 127.0.0.1 only (client port $KAFKA_PORT, default 9092; controller port
# $KAFKA_CONTROLLER_PORT, default 9093), keeps data in a temporary directory, and runs on
# JDK 17 with a small heap. Jars live in ~/.cache/stockflow/kafka-<version>.
#
# With $KAFKA_TLS_DIR (made by scripts/tls.sh), a SASL_SSL listener on $KAFKA_SASL_PORT
# (default: client port + 2) takes user "stockflow" with password "stockflow-secret" by
# SCRAM-SHA-512 or PLAIN, as managed Kafkas do.
set -euo pipefail

VERSION="${KAFKA_VERSION:-4.1.1}"
SCALA="${KAFKA_SCALA_VERSION:-2.13}"
LOG4J_VERSION="${KAFKA_LOG4J_VERSION:-2.24.3}"
PORT="${KAFKA_PORT:-9092}"
CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-9093}"
SASL_PORT="${KAFKA_SASL_PORT:-$((PORT + 2))}"
TLS_DIR="${KAFKA_TLS_DIR:-}"
CACHE="${STOCKFLOW_CACHE:-$HOME/.cache/stockflow}/kafka-$VERSION"
RUN="${KAFKA_RUN_DIR:-${TMPDIR:-/tmp}/stockflow-kafka-$PORT}"

# shellcheck source=scripts/jvm.sh
source "$(dirname "$0")/jvm.sh"

fetch() {
    [[ -f "$CACHE/.complete" ]] && return
    echo "kafka.sh: fetching kafka_$SCALA $VERSION and its dependencies from Maven Central" >&2
    # The SLF4J on Kafka's path is 1.7.x, so the log4j bridge is the slf4j (not slf4j2) one;
    # without it the broker logs nothing at all.
    maven_fetch kafka.sh "$CACHE" "
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_$SCALA</artifactId><version>$VERSION</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId><version>$LOG4J_VERSION</version></dependency>" \
        "kafka_$SCALA-*.jar log4j-slf4j-impl-*.jar"
}

write_config() {
    mkdir -p "$RUN/data"
    local listeners="PLAINTEXT://127.0.0.1:$PORT,CONTROLLER://127.0.0.1:$CONTROLLER_PORT"
    local protocols="PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"
    if [[ -n "$TLS_DIR" ]]; then
        listeners="$listeners,SASL_SSL://127.0.0.1:$SASL_PORT"
        protocols="$protocols,SASL_SSL:SASL_SSL"
    fi
    cat > "$RUN/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:$CONTROLLER_PORT
listeners=$listeners
advertised.listeners=$listeners
listener.security.protocol.map=$protocols
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
log.dirs=$RUN/data
num.partitions=1
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
auto.create.topics.enable=false
group.initial.rebalance.delay.ms=0
broker.session.timeout.ms=3000
broker.heartbeat.interval.ms=500
PROPS
    if [[ -n "$TLS_DIR" ]]; then
        cat >> "$RUN/server.properties" <<PROPS
sasl.enabled.mechanisms=SCRAM-SHA-512,PLAIN
listener.name.sasl_ssl.ssl.keystore.location=$TLS_DIR/server.p12
listener.name.sasl_ssl.ssl.keystore.password=stockflow-test
listener.name.sasl_ssl.ssl.keystore.type=PKCS12
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_stockflow="stockflow-secret";
PROPS
    fi
    cat > "$RUN/log4j2.properties" <<PROPS
appender.file.type=File
appender.file.name=FILE
appender.file.fileName=$RUN/server.log
appender.file.layout.type=PatternLayout
appender.file.layout.pattern=[%d] %p %m (%c)%n
rootLogger.level=INFO
rootLogger.appenderRef.file.ref=FILE
logger.kafka.name=kafka
logger.kafka.level=INFO
logger.state.name=state.change.logger
logger.state.level=WARN
PROPS
}

is_up() { (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; }

up() {
    if [[ -f "$RUN/pid" ]] && kill -0 "$(cat "$RUN/pid")" 2>/dev/null && is_up; then
        echo "kafka.sh: already running on 127.0.0.1:$PORT" >&2; return
    fi
    if is_up; then
        echo "kafka.sh: port $PORT is taken by another process" >&2; exit 1
    fi
    fetch
    local java
    java="$(find_java17 kafka.sh "${KAFKA_JAVA:-}")"
    rm -rf "$RUN"
    write_config
    local cp="$CACHE/lib/*"
    local log4j="-Dlog4j2.configurationFile=$RUN/log4j2.properties"
    local cluster_id
    cluster_id="$("$java" "$log4j" -cp "$cp" kafka.tools.StorageTool random-uuid)"
    local scram=()
    # SCRAM users live in the cluster metadata; KRaft adds them when formatting.
    [[ -n "$TLS_DIR" ]] && scram=(--add-scram 'SCRAM-SHA-512=[name=stockflow,password=stockflow-secret]')
    "$java" "$log4j" -cp "$cp" kafka.tools.StorageTool format --standalone \
        -t "$cluster_id" -c "$RUN/server.properties" "${scram[@]}" >"$RUN/format.log" 2>&1 || {
        cat "$RUN/format.log" >&2; exit 1; }
    nohup "$java" -Xms256m -Xmx512m -XX:+UseG1GC "$log4j" -cp "$cp" \
        kafka.Kafka "$RUN/server.properties" >"$RUN/stdout.log" 2>&1 &
    echo $! > "$RUN/pid"
    local took
    took="$(wait_started kafka.sh "$RUN" started 120 "$RUN/stdout.log" "$RUN/server.log")"
    echo "kafka.sh: Kafka $VERSION is up on 127.0.0.1:$PORT after $took s (data in $RUN)" >&2
}

# Serving: the port answers and the broker logged its readiness line.
started() { is_up && grep -q "Kafka Server started" "$RUN/server.log" 2>/dev/null; }

down() { stop_server "$RUN"; }

serve_main kafka.sh "$PORT" "${1:-}"
