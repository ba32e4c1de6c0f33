#!/bin/sh
# Install the real MCP servers tests/integration/mcp_test.py talks to, or fail
# saying what is missing: @modelcontextprotocol/server-everything from npm into
# .cache/mcp (run over stdio and streamable HTTP), and the `mcp` package from
# PyPI into the venv .cache/mcp/venv (tests/fixtures/mcp/server.py is written
# with it). Prints nothing when all is there.
set -eu
ROOT=$(CDPATH= cd -- "$(dirname -- "$0")/../.." && pwd)
DIR=$ROOT/.cache/mcp
EVERYTHING=2026.8.31
MCP_PY=2.3.0
command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || {
    echo "mcp.sh: node and npm are missing: apt-get install -y nodejs npm" >&2
    exit 1
}
mkdir -p "$DIR"
PKG=$DIR/node_modules/@modelcontextprotocol/server-everything/package.json
if ! { [ -f "$PKG" ] && grep -q "\"version\": \"$EVERYTHING\"" "$PKG"; }; then
    [ -f "$DIR/package.json" ] || echo '{"name":"eddy-mcp-tests","private":true}' >"$DIR/package.json"
    npm install --prefix "$DIR" --no-audit --no-fund \
        "@modelcontextprotocol/server-everything@$EVERYTHING" >"$ROOT/.cache/mcp-npm.log" 2>&1 || {
        echo "mcp.sh: npm could not install @modelcontextprotocol/server-everything $EVERYTHING" \
            "(see .cache/mcp-npm.log)" >&2
        exit 1
    }
fi
VENV=$DIR/venv
if ! { [ -x "$VENV/bin/python" ] &&
    "$VENV/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('mcp') != '$MCP_PY')" 2>/dev/null; }; then
    python3 -m venv "$VENV" || {
        echo "mcp.sh: python3 -m venv failed (apt-get install python3-venv)" >&2
        exit 1
    }
    "$VENV/bin/pip" install -q "mcp==$MCP_PY" >"$ROOT/.cache/mcp-pip.log" 2>&1 || {
        echo "mcp.sh: pip could not install mcp $MCP_PY from PyPI (see .cache/mcp-pip.log)" >&2
        exit 1
    }
fi
