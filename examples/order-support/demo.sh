#!/bin/sh
# make demo: run the order-support example end to end.
#
# Without OPENAI_BASE_URL set, the model is the scripted mock server
# (tests/mockllm), labelled as such. With it set (and OPENAI_API_KEY when the
# endpoint wants one), the same job runs against that endpoint. For a slow
# local model run a few events with budgets to match, for example:
#   OPENAI_BASE_URL=http://127.0.0.1:8080/v1 EDDY_DEMO_EVENTS=3 OPENAI_TIMEOUT=300s \
#   OPENAI_CONCURRENCY=1 EDDY_BUDGET_WALL=600s make demo
set -eu
BUILD=$(cd "${1:-build}" && pwd)
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
OUT="$HERE/.eddy"
rm -rf "$OUT"
mkdir -p "$OUT"
. "$ROOT/tests/mockllm/start.sh" # start_mock; stops the mock on exit

start_mock "$BUILD" "$HERE/mock-script.json" "$OUT"

echo "== eddy check"
"$BUILD/eddy" check "$HERE/job.yaml"
if [ -n "${EDDY_DEMO_EVENTS:-}" ]; then
    echo "== eddy run: the first $EDDY_DEMO_EVENTS questions from customers (EDDY_DEMO_EVENTS)"
    head -n "$EDDY_DEMO_EVENTS" "$HERE/events.jsonl" |
        "$BUILD/eddy" run "$HERE/job.yaml" --input - --summary-json "$OUT/summary.json"
else
    echo "== eddy run: $(wc -l <"$HERE/events.jsonl") questions from customers"
    "$BUILD/eddy" run "$HERE/job.yaml" --summary-json "$OUT/summary.json"
fi
echo
echo "== a few answers ($OUT/answers.jsonl), with and without a tool call:"
{ grep '"tool_calls":1' "$OUT/answers.jsonl" | head -n 4 || true; grep '"tool_calls":0' "$OUT/answers.jsonl" | head -n 3 || true; } | while IFS= read -r line; do
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
TID=$(grep '"tool_calls":1' "$OUT/answers.jsonl" | head -n 1 | python3 -c 'import json,sys; l=sys.stdin.readline(); print(json.loads(l)["trace_id"] if l else "")')
if [ -n "$TID" ]; then
    echo
    echo "== one run with a tool call (eddy trace show $TID):"
    "$BUILD/eddy" trace show "$TID" "$HERE/job.yaml"
fi
echo
echo "make demo starts from scratch each time (it removes $OUT first); run the job"
echo "again to see memory carry over (a plain run resumes where this one ended: nothing new):"
echo "  $BUILD/eddy run $HERE/job.yaml --from-start   reads the questions again and continues"
echo "  each customer's conversation."
echo "Browse these runs (list, search, waterfall, flame graph, diff, each customer's memory):"
echo "  $BUILD/eddy dashboard $HERE/job.yaml        then open http://127.0.0.1:8765/ (Ctrl-C stops it)"
