#!/bin/sh
# Install prometheus-client (PyPI) into .cache/promclient: its text-format
# parser reads eddy's /metrics in tests/integration/dashboard_test.py. Fails
# loudly when it cannot.
set -eu
ROOT=$(CDPATH= cd -- "$(dirname -- "$0")/../.." && pwd)
VENV=$ROOT/.cache/promclient
VERSION=0.21.1
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import prometheus_client.parser" 2>/dev/null; then
    exit 0
fi
python3 -m venv "$VENV" || { echo "promclient.sh: python3 -m venv failed (apt-get install python3-venv)" >&2; exit 1; }
"$VENV/bin/pip" install -q "prometheus-client==$VERSION" >"$ROOT/.cache/promclient-pip.log" 2>&1 || {
    echo "promclient.sh: pip could not install prometheus-client $VERSION from PyPI (see .cache/promclient-pip.log)" >&2
    exit 1
}
