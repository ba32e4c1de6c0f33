#!/bin/sh
# Install what the browser tests need, or fail saying what is missing:
# Debian's Chromium (apt-get when root; else the command to run) and
# playwright-core from npm into .cache/playwright (no browser download: it
# drives /usr/bin/chromium). Prints nothing when all is there.
set -eu
ROOT=$(CDPATH= cd -- "$(dirname -- "$0")/../.." && pwd)
DIR=$ROOT/.cache/playwright
VERSION=1.65.1
if ! command -v chromium >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then
        echo "playwright.sh: installing Debian's chromium" >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null || {
            apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
        } || { echo "playwright.sh: apt-get install chromium failed" >&2; exit 1; }
    else
        echo "playwright.sh: Chromium is missing; run as root: sudo apt-get install -y chromium" >&2
        exit 1
    fi
fi
command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || {
    echo "playwright.sh: node and npm are missing: apt-get install -y nodejs npm" >&2
    exit 1
}
if [ -f "$DIR/node_modules/playwright-core/package.json" ] &&
    grep -q "\"version\": \"$VERSION\"" "$DIR/node_modules/playwright-core/package.json"; then
    exit 0
fi
mkdir -p "$DIR"
[ -f "$DIR/package.json" ] || echo '{"name":"eddy-browser-tests","private":true}' >"$DIR/package.json"
PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm install --prefix "$DIR" --no-audit --no-fund \
    "playwright-core@$VERSION" >"$ROOT/.cache/playwright-npm.log" 2>&1 || {
    echo "playwright.sh: npm could not install playwright-core $VERSION (see .cache/playwright-npm.log)" >&2
    exit 1
}
