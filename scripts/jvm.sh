# Shared by the scripts that run a JVM server for tests (cassandra.sh, kafka.sh): find a
# JDK 17, fetch a Maven artifact with its runtime dependencies into a cache folder, stop a
# server by its pid file.
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
