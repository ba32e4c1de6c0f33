# Sourced by the example demos: start_mock BUILD SCRIPT OUTDIR starts the
# scripted mock model (build/mockllm) on a free loopback port, unless
# OPENAI_BASE_URL is set (a real endpoint; OPENAI_API_KEY when it wants one),
# and exports OPENAI_BASE_URL.
# Sets MOCK_PID ("" when a real endpoint is used); the mock stops when the
# sourcing script exits.
MOCK_PID=""
stop_mock() { [ -n "$MOCK_PID" ] && kill "$MOCK_PID" 2>/dev/null; true; }
trap stop_mock EXIT INT TERM

start_mock() {
    MOCK_PID=""
    if [ -n "${OPENAI_BASE_URL:-}" ]; then
        echo "== model: ${OPENAI_MODEL:-gpt-4o-mini} at $OPENAI_BASE_URL (from your environment)"
        return 0
    fi
    "$1/mockllm" --script "$2" --port 0 --port-file "$3/mock.port" >"$3/mock.log" 2>&1 &
    MOCK_PID=$!
    i=0
    while [ ! -s "$3/mock.port" ]; do
        i=$((i + 1)); [ $i -gt 200 ] && { echo "mock server did not start"; return 1; }
        sleep 0.05
    done
    OPENAI_BASE_URL="http://127.0.0.1:$(cat "$3/mock.port")/v1"
    export OPENAI_BASE_URL
    echo "== model: mockllm, a SCRIPTED STAND-IN for a model (tests/mockllm) at $OPENAI_BASE_URL"
    echo "   set OPENAI_BASE_URL (and OPENAI_API_KEY) to run against a real endpoint"
}
