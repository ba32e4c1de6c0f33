#!/bin/sh
# Run the fluss-support example end to end against a Fluss cluster.
#
#   examples/fluss-support/demo.sh [BUILD]
#
# FLUSS_BOOTSTRAP names the cluster; without it the test cluster is started
# (tests/fluss/cluster.sh: Java 17 and the server jar from Maven Central).
# Without OPENAI_BASE_URL and OPENAI_API_KEY the model is the scripted mock
# server (tests/mockllm), labelled as such; with both set, the same job runs
# against that endpoint. The tables are dropped and created again each time.
set -eu
BUILD=$(cd "${1:-build}" && pwd)
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
OUT="$HERE/.eddy"
rm -rf "$OUT"
mkdir -p "$OUT"
. "$ROOT/tests/mockllm/start.sh" # start_mock; stops the mock on exit

if [ -z "${FLUSS_BOOTSTRAP:-}" ]; then
    echo "== starting the test cluster (tests/fluss/cluster.sh start; stop it with ... stop)"
    FLUSS_BOOTSTRAP=$("$ROOT/tests/fluss/cluster.sh" start | tail -n 1)
fi
export FLUSS_BOOTSTRAP
echo "== Fluss at $FLUSS_BOOTSTRAP"

start_mock "$BUILD" "$HERE/mock-script.json" "$OUT"

echo "== tables and data (setup.sh --reset)"
"$HERE/setup.sh" "$BUILD/eddy" --reset
echo "== eddy check (reads the key columns of support.customers for lookup_customer)"
"$BUILD/eddy" check "$HERE/job.yaml"
echo "== eddy run: questions from support.questions, answers to support.answers"
"$BUILD/eddy" run "$HERE/job.yaml" --summary-json "$OUT/summary.json"
echo
echo "== support.answers (eddy fluss scan support.answers --columns key,event_id,output)"
"$BUILD/eddy" fluss scan support.answers --columns key,event_id,output | sort
echo
TID=$("$BUILD/eddy" fluss lookup support.answers '"q2"' |
      python3 -c 'import json,sys; print(json.load(sys.stdin)["trace_id"])')
echo "== the run of q2, with its Lua tool and two Fluss lookups (eddy trace show $TID):"
"$BUILD/eddy" trace show "$TID" "$HERE/job.yaml"
