#!/usr/bin/env bash
# tests/realmodel/serve.sh start|stop|status: run llama-server with the real
# model (installed by install.sh) on a free loopback port.
#
#   start   starts it (if not already running from this run dir), waits until
#           /health answers 200, prints the base URL http://127.0.0.1:PORT/v1
#           on stdout (the only thing on stdout), e.g.  URL=$(serve.sh start)
#   stop    kills exactly the pid it started (SIGTERM, then SIGKILL after 10 s)
#   status  prints the base URL and exits 0 when it answers, else exits 1
#
# Run dir (pid, port, url, server.log):
#   EDDY_REALMODEL_RUN   default ${TMPDIR:-/tmp}/eddy-realmodel-run.$(id -u)
# Knobs:
#   EDDY_REALMODEL_CTX       context size in tokens        (default 8192)
#   EDDY_REALMODEL_THREADS   threads                       (default: nproc - 1, at least 1)
#   EDDY_REALMODEL_TIMEOUT   seconds to wait for /health   (default 180)
#   EDDY_REALMODEL_ARGS      extra llama-server arguments, word-split
set -euo pipefail
. "$(cd "$(dirname "$0")" && pwd)/common.sh"

RUN=${EDDY_REALMODEL_RUN:-${TMPDIR:-/tmp}/eddy-realmodel-run.$(id -u)}
PIDF=$RUN/pid PORTF=$RUN/port URLF=$RUN/url LOG=$RUN/server.log

# The pid in $PIDF, if that process is alive and is our llama-server (not a
# recycled pid).
our_pid() {
    local pid
    [ -f "$PIDF" ] || return 1
    pid=$(cat "$PIDF")
    [ -n "$pid" ] && [ -d "/proc/$pid" ] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "llama-server.* --model $MODEL_FILE " || return 1
    echo "$pid"
}

http_code() {  # http_code URL -> prints the HTTP status (000 when no answer)
    curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$1" 2>/dev/null || true
}

cmd_status() {
    local pid port
    pid=$(our_pid) || { rm_log "not running (run dir $RUN)"; return 1; }
    port=$(cat "$PORTF" 2>/dev/null || true)
    if [ -n "$port" ] && [ "$(http_code "http://127.0.0.1:$port/health")" = 200 ]; then
        echo "http://127.0.0.1:$port/v1"
        return 0
    fi
    rm_log "pid $pid is running but http://127.0.0.1:${port:-?}/health does not answer 200 (log: $LOG)"
    return 1
}

cmd_start() {
    command -v curl >/dev/null 2>&1 || rm_die "curl is missing (apt-get install -y curl)"
    if our_pid >/dev/null; then
        if cmd_status 2>/dev/null; then return 0; fi
        rm_die "llama-server pid $(our_pid) from $RUN is running but not healthy; run: $0 stop"
    fi
    rm_server_ok || rm_die "llama-server is not installed in $CACHE; run tests/realmodel/install.sh"
    rm_model_ok  || rm_die "the model is not installed (or not verified) in $CACHE; run tests/realmodel/install.sh"
    [ -f "$CHAT_TEMPLATE" ] || rm_die "missing chat template $CHAT_TEMPLATE"

    mkdir -p "$RUN"
    rm -f "$PIDF" "$PORTF" "$URLF"
    local t0 threads
    t0=$(date +%s%N)
    # One core left free (for eddy and the test): with both of 2 cores busy
    # elsewhere, 2 threads generated 2 tok/s and 1 thread 6 tok/s here.
    threads=${EDDY_REALMODEL_THREADS:-$(( $(nproc) > 1 ? $(nproc) - 1 : 1 ))}
    # --port 0: the server binds a free port itself (no race) and logs it.
    # shellcheck disable=SC2086
    "$LLAMA_SERVER" --model "$MODEL_FILE" \
        --host 127.0.0.1 --port 0 \
        --jinja --chat-template-file "$CHAT_TEMPLATE" \
        --parallel 1 --ctx-size "${EDDY_REALMODEL_CTX:-8192}" \
        --temp 0 --seed 42 \
        --threads "$threads" --threads-batch "$threads" \
        --no-webui \
        ${EDDY_REALMODEL_ARGS:-} \
        </dev/null >"$LOG" 2>&1 &
    local pid=$!
    echo "$pid" >"$PIDF"

    local deadline=$(( $(date +%s) + ${EDDY_REALMODEL_TIMEOUT:-180} )) port=""
    while :; do
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -25 "$LOG" >&2
            rm -f "$PIDF"
            rm_die "llama-server exited during start-up (log: $LOG)"
        fi
        if [ -z "$port" ]; then
            port=$(sed -n 's#.*listening on http://127\.0\.0\.1:\([0-9][0-9]*\).*#\1#p' "$LOG" | head -1)
            [ -z "$port" ] || echo "$port" >"$PORTF"
        fi
        if [ -n "$port" ] && [ "$(http_code "http://127.0.0.1:$port/health")" = 200 ]; then
            break
        fi
        if [ "$(date +%s)" -ge "$deadline" ]; then
            tail -25 "$LOG" >&2
            kill "$pid" 2>/dev/null || true
            rm -f "$PIDF"
            rm_die "llama-server did not answer /health within ${EDDY_REALMODEL_TIMEOUT:-180} s (log: $LOG)"
        fi
        sleep 0.2
    done
    echo "http://127.0.0.1:$port/v1" | tee "$URLF"
    rm_log "llama-server pid $pid ready on 127.0.0.1:$port in $(( ($(date +%s%N) - t0) / 1000000 )) ms (log: $LOG)"
}

cmd_stop() {
    local pid i
    if ! pid=$(our_pid); then
        rm_log "not running (run dir $RUN)"
        rm -f "$PIDF" "$PORTF" "$URLF"
        return 0
    fi
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 50); do
        [ -d "/proc/$pid" ] || break
        sleep 0.2
    done
    if [ -d "/proc/$pid" ]; then
        rm_log "pid $pid did not stop within 10 s; SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$PIDF" "$PORTF" "$URLF"
    rm_log "stopped llama-server pid $pid"
}

case "${1:-}" in
    start)  cmd_start ;;
    stop)   cmd_stop ;;
    status) cmd_status ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
