# Shared by the scripts that run a JVM server for tests (cassandra.sh, kafka.sh): find a
# JDK 17, fetch a Maven artifact with its runtime dependencies into a cache folder, wait
# for a started server, stop it by its pid file, and the up|down|status command line.
# Sourced, not run.

# Prints the path of a JDK 17 `java` ($1 names the caller in messages; $2 overrides).
find_java17() {
    local who=$1 override=${2:-}
    if [[ -n "$override" ]]; then echo "$override"; return; fi
    for candidate in /usr/lib/jvm/java-17-openjdk-amd64/bin/java /usr/lib/jvm/java-17-openjdk*/bin/java /usr/lib/jvm/openjdk-17/bin/java; do
        [[ -x "$candidate" ]] && { echo "$candidate"; return; }
    done
    if command -v java >/dev/null && java -version 2>&1 | grep -q '"17\.'; then command -v java; return; fi
    echo "$who: JDK 17 not found; install openjdk-17-jre-headless" >&2
    exit 1
}

# Copies the runtime dependencies of the <dependency> elements in $3 into $2/lib through a
# throwaway pom, once: $2/.complete marks a finished fetch whose jars matching the globs in
# $4 are there ($1 names the caller).
maven_fetch() {
    local who=$1 cache=$2 dependencies=$3 expected=$4
    [[ -f "$cache/.complete" ]] && return
    command -v mvn >/dev/null || { echo "$who: mvn not found; install maven" >&2; exit 1; }
    local work
    work="$(mktemp -d)"
    cat > "$work/pom.xml" <<POM
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>dev.stockflow</groupId>
  <artifactId>test-server-runtime</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
$dependencies
  </dependencies>
</project>
POM
    mvn -q -B -f "$work/pom.xml" dependency:copy-dependencies \
        -DincludeScope=runtime -DoutputDirectory="$cache/lib" >"$work/mvn.log" 2>&1 || {
        cat "$work/mvn.log" >&2; exit 1; }
    local glob
    for glob in $expected; do
        compgen -G "$cache/lib/$glob" >/dev/null || { echo "$who: $glob missing after the fetch" >&2; exit 1; }
    done
    touch "$cache/.complete"
    rm -rf "$work"
}

# Stops the server whose pid is in $1/pid (SIGTERM, SIGKILL after 30 s) and deletes $1.
stop_server() {
    local run=$1
    if [[ -f "$run/pid" ]]; then
        local pid
        pid="$(cat "$run/pid")"
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
        kill -9 "$pid" 2>/dev/null || true
    fi
    rm -rf "$run"
}

# Waits until the command `$3` succeeds for the server started with its pid in $2/pid; fails
# (printing the tail of the logs $5...) when it exits meanwhile or after $4 seconds ($1
# names the caller). Prints how long the start took.
wait_started() {
    local who=$1 run=$2 ready=$3 limit=$4
    shift 4
    local started=$SECONDS
    until $ready; do
        if ! kill -0 "$(cat "$run/pid")" 2>/dev/null; then
            echo "$who: the server exited during start-up:" >&2
            tail -30 "$@" >&2 2>/dev/null || true
            exit 1
        fi
        if (( SECONDS - started > limit )); then
            echo "$who: not ready after $limit s" >&2
            tail -30 "$@" >&2 2>/dev/null || true
            stop_server "$run"; exit 1
        fi
        sleep 0.5
    done
    echo $((SECONDS - started))
}

# The scripts' command line: up, down or status of the server on 127.0.0.1:$2, with the
# caller's `up`, `down` and `is_up` functions ($1 names the caller, $3 is the verb).
serve_main() {
    local who=$1 port=$2 verb=${3:-}
    case "$verb" in
        up) up ;;
        down) down ;;
        status) if is_up; then echo "up on 127.0.0.1:$port"; else echo "down"; exit 1; fi ;;
        *) echo "usage: $who up|down|status" >&2; exit 2 ;;
    esac
}
