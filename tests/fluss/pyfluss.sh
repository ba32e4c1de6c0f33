#!/bin/sh
# Install the official Python Fluss client (pyfluss, PyPI) into .cache/pyfluss
# for the cross-check tests and the benchmark. Fails loudly when it cannot.
set -eu
ROOT=$(CDPATH= cd -- "$(dirname -- "$0")/../.." && pwd)
VENV=$ROOT/.cache/pyfluss
PYFLUSS_VERSION=1.0.0
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import fluss, pyarrow" 2>/dev/null; then
    exit 0
fi
python3 -m venv "$VENV" || { echo "pyfluss.sh: python3 -m venv failed (apt-get install python3-venv)" >&2; exit 1; }
"$VENV/bin/pip" install -q "pyfluss==$PYFLUSS_VERSION" pandas pyarrow >"$ROOT/.cache/pyfluss-pip.log" 2>&1 || {
    echo "pyfluss.sh: pip could not install pyfluss $PYFLUSS_VERSION from PyPI (see .cache/pyfluss-pip.log)" >&2
    exit 1
}
