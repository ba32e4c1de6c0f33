#!/bin/sh
# make demo: run the order-support example end to end.
#
# Without OPENAI_BASE_URL and OPENAI_API_KEY set, the model is the scripted
# mock server (tests/mockllm), labelled as such. With both set, the same job
# runs against that endpoint.
set -eu
BUILD=$(cd "${1:-build}" && pwd)
HERE=$(cd "$(dirname "$0")" && pwd)
OUT="$HERE/.eddy"
rm -rf "$OUT"
mkdir -p "$OUT"
MOCK_PID=""
cleanup() { [ -n "$MOCK_PID" ] && kill "$MOCK_PID" 2>/dev/null; true; }
trap cleanup EXIT INT TERM

if [ -n "${OPENAI_BASE_URL:-}" ] && [ -n "${OPENAI_API_KEY:-}" ]; then
    echo "== model: ${OPENAI_MODEL:-gpt-4o-mini} at $OPENAI_BASE_URL (from your environment)"
else
    "$BUILD/mockllm" --script "$HERE/mock-script.json" --port 0 --port-file "$OUT/mock.port" \
        >"$OUT/mock.log" 2>&1 &
    MOCK_PID=$!
    i=0
    while [ ! -s "$OUT/mock.port" ]; do
        i=$((i + 1)); [ $i -gt 200 ] && { echo "mock server did not start"; exit 1; }
        sleep 0.05
    done
    OPENAI_BASE_URL="http://127.0.0.1:$(cat "$OUT/mock.port")/v1"
    export OPENAI_BASE_URL
    echo "== model: mockllm, a SCRIPTED STAND-IN for a model (tests/mockllm) at $OPENAI_BASE_URL"
    echo "   set OPENAI_BASE_URL and OPENAI_API_KEY to run against a real endpoint"
fi

echo "== eddy check"
"$BUILD/eddy" check "$HERE/job.yaml"
echo "== eddy run: $(wc -l <"$HERE/events.jsonl") questions from customers"
"$BUILD/eddy" run "$HERE/job.yaml" --summary-json "$OUT/summary.json"
echo
echo "== a few answers ($OUT/answers.jsonl), with and without a tool call:"
{ grep '"tool_calls":1' "$OUT/answers.jsonl" | head -n 4; grep '"tool_calls":0' "$OUT/answers.jsonl" | head -n 3; } | while IFS= read -r line; do
    printf '%s\n' "$line" | python3 -c 'import json,sys; o=json.load(sys.stdin); print("  [%s] %s -> %s" % (o["key"], o["event_id"], o["output"]))'
done
echo
echo "== summary"
python3 - "$OUT/summary.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
for k in ("events", "runs_ok", "runs_failed", "dead_letters", "llm_calls", "llm_retries",
          "input_tokens", "output_tokens", "tool_calls", "tool_errors"):
    print("  %-14s %s" % (k, s[k]))
print("  %-14s %.2f s" % ("wall time", s["wall_ms"] / 1000))
PY
echo
echo "== the newest traces (eddy trace list $HERE/job.yaml):"
"$BUILD/eddy" trace list "$HERE/job.yaml" --limit 5
TID=$(grep '"tool_calls":1' "$OUT/answers.jsonl" | head -n 1 | python3 -c 'import json,sys; print(json.load(sys.stdin)["trace_id"])')
echo
echo "== one run with a tool call (eddy trace show $TID):"
"$BUILD/eddy" trace show "$TID" "$HERE/job.yaml"
echo
echo "Run it again to see memory carry over: make demo keeps nothing, but"
echo "  $BUILD/eddy run $HERE/job.yaml   continues each customer's conversation."
