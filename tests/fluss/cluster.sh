#!/bin/sh
# A real single-node Fluss cluster on loopback for eddy's tests.
#
#   tests/fluss/cluster.sh start    fetch the jars (once), start ZooKeeper, a coordinator
#                                   and a tablet server on free ports, print the bootstrap
#   tests/fluss/cluster.sh stop     end exactly the processes started here, by pid
#   tests/fluss/cluster.sh status   print the bootstrap and which processes are alive
#   tests/fluss/cluster.sh kill-tablet | start-tablet    (fault tests)
#
# State lives in $FLUSS_HOME (default .cache/fluss beside this repo's root; git ignores it).
set -eu

FLUSS_VERSION=0.9.1-incubating   # newest release on Maven Central (2026-11)
LOG4J_VERSION=2.25.2
ROOT=$(CDPATH= cd -- "$(dirname -- "$0")/../.." && pwd)
FLUSS_HOME=${FLUSS_HOME:-$ROOT/.cache/fluss}
LIB=$FLUSS_HOME/lib
RUN=$FLUSS_HOME/run

die() { echo "cluster.sh: $*" >&2; exit 1; }

need_java() {
    if ! command -v java >/dev/null 2>&1; then
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
            echo "cluster.sh: installing openjdk-17-jre-headless" >&2
            apt-get install -y -qq openjdk-17-jre-headless >/dev/null ||
                die "Java is missing and openjdk-17-jre-headless could not be installed"
        else
            die "Java 17 is missing: apt-get install openjdk-17-jre-headless"
        fi
    fi
    v=$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -1)
    [ "${v:-0}" -ge 11 ] || die "Java $v is too old for Fluss (need 11+, 17 recommended)"
}

fetch_jars() {
    [ -f "$LIB/.complete-$FLUSS_VERSION" ] && return 0
    if ! command -v mvn >/dev/null 2>&1; then
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
            apt-get install -y -qq maven >/dev/null || die "Maven is missing and could not be installed"
        else
            die "Maven is missing (needed once to fetch the Fluss server jar): apt-get install maven"
        fi
    fi
    mkdir -p "$LIB"
    for a in org.apache.fluss:fluss-server:$FLUSS_VERSION \
             org.apache.logging.log4j:log4j-api:$LOG4J_VERSION \
             org.apache.logging.log4j:log4j-core:$LOG4J_VERSION \
             org.apache.logging.log4j:log4j-slf4j-impl:$LOG4J_VERSION; do
        mvn -q -B dependency:copy -Dartifact="$a" -DoutputDirectory="$LIB" >"$FLUSS_HOME/mvn.log" 2>&1 ||
            die "could not fetch $a from Maven Central (see $FLUSS_HOME/mvn.log)"
    done
    touch "$LIB/.complete-$FLUSS_VERSION"
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

alive() { [ -f "$RUN/$1.pid" ] && kill -0 "$(cat "$RUN/$1.pid")" 2>/dev/null; }

classpath() {
    cp=""
    for j in "$LIB"/log4j-*.jar; do cp="$cp$j:"; done
    echo "$cp$LIB/fluss-server-$FLUSS_VERSION.jar"
}

launch() { # name mainclass args...
    name=$1; shift
    main=$1; shift
    # setsid: the server must not die with the shell that started it
    setsid java -Xmx${FLUSS_XMX:-768m} -XX:+UseG1GC \
        --add-opens=java.base/java.nio=org.apache.arrow.memory.core,ALL-UNNAMED \
        --add-opens=java.base/java.nio=ALL-UNNAMED \
        -Dlog.file="$RUN/$name.log" -Dlog4j.configurationFile="file:$RUN/log4j.properties" \
        -classpath "$(classpath)" "$main" "$@" >"$RUN/$name.out" 2>&1 </dev/null &
    echo $! >"$RUN/$name.pid"
}

wait_port() { # port seconds name
    i=0
    while ! python3 -c "import socket,sys; socket.create_connection(('127.0.0.1',$1),0.5)" 2>/dev/null; do
        i=$((i + 1))
        alive "$3" || { tail -30 "$RUN/$3.log" "$RUN/$3.out" >&2 2>/dev/null; die "$3 exited during start-up"; }
        [ $i -lt $(($2 * 5)) ] || die "$3 did not listen on port $1 within $2 s (see $RUN/$3.log)"
        sleep 0.2
    done
}

# Wait until the coordinator answers a metadata request listing a live tablet server.
wait_ready() {
    python3 "$ROOT/tests/fluss/probe.py" "127.0.0.1:$(cat "$RUN/coordinator.port")" 60 ||
        { tail -30 "$RUN/coordinator.log" "$RUN/tablet.log" >&2 2>/dev/null; die "cluster did not become ready"; }
}

start_tablet() {
    tport=$(cat "$RUN/tablet.port")
    launch tablet org.apache.fluss.server.tablet.TabletServer --configDir "$RUN/conf" \
        -Dbind.listeners=FLUSS://127.0.0.1:$tport -Dtablet-server.id=0 \
        -Ddata.dir="$RUN/data/tablet0"
    wait_port "$tport" 60 tablet
}

start() {
    if alive coordinator && alive tablet; then echo "127.0.0.1:$(cat "$RUN/coordinator.port")"; return 0; fi
    alive coordinator && stop >/dev/null
    need_java
    fetch_jars
    rm -rf "$RUN"
    mkdir -p "$RUN/conf" "$RUN/data" "$RUN/remote" "$RUN/zk"
    zport=$(free_port); cport=$(free_port); tport=$(free_port)
    while [ "$cport" = "$zport" ]; do cport=$(free_port); done
    while [ "$tport" = "$zport" ] || [ "$tport" = "$cport" ]; do tport=$(free_port); done
    echo "$zport" >"$RUN/zk.port"; echo "$cport" >"$RUN/coordinator.port"; echo "$tport" >"$RUN/tablet.port"
    cat >"$RUN/log4j.properties" <<LOG
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = MainAppender
appender.main.name = MainAppender
appender.main.type = File
appender.main.fileName = \${sys:log.file}
appender.main.append = true
appender.main.layout.type = PatternLayout
appender.main.layout.pattern = %d{HH:mm:ss,SSS} %-5p %c{1} - %m%n
LOG
    cat >"$RUN/zoo.cfg" <<ZK
dataDir=$RUN/zk
clientPort=$zport
clientPortAddress=127.0.0.1
maxClientCnxns=0
admin.enableServer=false
# short ticks: a killed tablet server's session (max 20 ticks) expires in 10 s
tickTime=500
ZK
    cat >"$RUN/conf/server.yaml" <<CONF
zookeeper.address: 127.0.0.1:$zport
default.bucket.number: 1
default.replication.factor: 1
data.dir: $RUN/data/coordinator
remote.data.dir: $RUN/remote
bind.listeners: FLUSS://127.0.0.1:$cport
# Tests read back everything they wrote: keep logs local (no tiering to
# remote.data.dir, which eddy's client does not read yet).
remote.log.task-interval-duration: 0s
CONF
    launch zk org.apache.fluss.shaded.zookeeper3.org.apache.zookeeper.server.quorum.QuorumPeerMain "$RUN/zoo.cfg"
    wait_port "$zport" 60 zk
    launch coordinator org.apache.fluss.server.coordinator.CoordinatorServer --configDir "$RUN/conf"
    wait_port "$cport" 90 coordinator
    start_tablet
    wait_ready
    echo "127.0.0.1:$cport"
}

removed_count() {
    grep -c "CHILD_REMOVED event for server" "$RUN/coordinator.log" 2>/dev/null || true
}

stop_one() {
    [ -f "$RUN/$1.pid" ] || return 0
    pid=$(cat "$RUN/$1.pid")
    if kill -0 "$pid" 2>/dev/null; then
        kill "$pid" 2>/dev/null || true
        i=0
        while kill -0 "$pid" 2>/dev/null && [ $i -lt 50 ]; do sleep 0.2; i=$((i + 1)); done
        kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$RUN/$1.pid"
}

stop() {
    stop_one tablet
    stop_one coordinator
    stop_one zk
    echo "cluster stopped"
}

status() {
    [ -f "$RUN/coordinator.port" ] || { echo "no cluster"; return 1; }
    for p in zk coordinator tablet; do
        if alive $p; then echo "$p: running (pid $(cat "$RUN/$p.pid"), port $(cat "$RUN/$p.port"))"
        else echo "$p: stopped"; fi
    done
    echo "bootstrap: 127.0.0.1:$(cat "$RUN/coordinator.port")"
    alive coordinator && alive tablet
}

case "${1:-}" in
start) start ;;
stop) stop ;;
status) status ;;
bootstrap) echo "127.0.0.1:$(cat "$RUN/coordinator.port")" ;;
kill-tablet)
    removed_count >"$RUN/removed.before"
    pid=$(cat "$RUN/tablet.pid"); kill -9 "$pid"; rm -f "$RUN/tablet.pid" ;;
start-tablet)
    # A new tablet server with the same id must register after the killed
    # one's ZooKeeper session has expired, or that expiry removes the new
    # registration and the coordinator takes the server for dead.
    before=$(cat "$RUN/removed.before" 2>/dev/null || echo 0)
    i=0
    while [ "$(removed_count)" -le "$before" ] && [ $i -lt 150 ]; do sleep 0.2; i=$((i + 1)); done
    start_tablet; wait_ready ;;
*) echo "usage: $0 start|stop|status|bootstrap|kill-tablet|start-tablet" >&2; exit 2 ;;
esac
