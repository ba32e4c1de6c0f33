#!/bin/sh
# Create the example's tables in Fluss and feed them: customers and plans
# (primary-key tables the agent looks up) and questions (the log table the
# job reads). Answers land in support.answers when the job runs.
#
#   FLUSS_BOOTSTRAP=127.0.0.1:41234 examples/fluss-support/setup.sh [EDDY] [--reset]
#
# EDDY: the eddy binary (default build/eddy). --reset drops the tables first.
# Run it again without --reset to append the questions once more (new events
# for the job; the customers and plans are upserts, so nothing doubles there).
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
EDDY=${1:-"$HERE/../../build/eddy"}
RESET=${2:-}
: "${FLUSS_BOOTSTRAP:?set FLUSS_BOOTSTRAP to the cluster (tests/fluss/cluster.sh start prints it)}"
export FLUSS_BOOTSTRAP

for t in questions customers plans answers; do
    if [ "$RESET" = "--reset" ]; then
        "$EDDY" fluss drop-table "support.$t" --if-exists
    fi
    "$EDDY" fluss create-table "support.$t" "$HERE/tables/$t.yaml" --if-not-exists
done
"$EDDY" fluss produce support.customers "$HERE/data/customers.jsonl"
"$EDDY" fluss produce support.plans "$HERE/data/plans.jsonl"
"$EDDY" fluss produce support.questions "$HERE/data/questions.jsonl"
echo "tables ready at $FLUSS_BOOTSTRAP: support.questions (log), support.customers,"
echo "support.plans, support.answers (primary key)"
