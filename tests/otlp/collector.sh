#!/bin/sh
# tests/otlp/collector.sh - build the OpenTelemetry Collector that
# tests/integration/otlp_test.py exports to: the OTLP receiver (HTTP, JSON
# and protobuf) and the OTLP/HTTP exporter (which the test points, with JSON
# encoding, at a capture server of its own to read the spans back), built with
# the collector's own builder (ocb) from the Go module proxy into
# .cache/otelcol (ignored by git). Only modules of the collector's core
# repository: contrib's file exporter needs a module this machine's proxy
# refuses (otlpencodingextension, 403). Not Phoenix (arize-phoenix): its
# /v1/traces reads protobuf only and answers 415 to OTLP/JSON.
#
#   tests/otlp/collector.sh install   build it unless it is there; prints the binary's path
#   tests/otlp/collector.sh path      print the binary's path (exit 1 if it is missing)
set -eu
VERSION=0.165.0
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
DIR="$ROOT/.cache/otelcol/$VERSION"
BIN="$DIR/build/eddy-otelcol"

case "${1:-install}" in
path)
    [ -x "$BIN" ] || { echo "missing $BIN: run tests/otlp/collector.sh install (needs go and the Go module proxy)" >&2; exit 1; }
    echo "$BIN"; exit 0 ;;
install) ;;
*) echo "usage: $0 install|path" >&2; exit 2 ;;
esac

if [ -x "$BIN" ]; then echo "$BIN"; exit 0; fi
command -v go >/dev/null || { echo "collector.sh: go is not installed: install Go 1.21 or newer (go.dev/dl; Debian 12's golang is 1.19, too old)" >&2; exit 1; }
# Go 1.21 and newer fetch the toolchain the collector's modules ask for (GOTOOLCHAIN=auto)
GOMINOR=$(go env GOVERSION | sed -n 's/^go1\.\([0-9]*\).*/\1/p')
if [ -z "$GOMINOR" ] || [ "$GOMINOR" -lt 21 ]; then
    echo "collector.sh: $(go env GOVERSION) is too old: install Go 1.21 or newer (go.dev/dl)" >&2
    exit 1
fi
mkdir -p "$DIR"
if [ ! -x "$DIR/bin/builder" ]; then
    echo "collector.sh: installing the collector builder v$VERSION" >&2
    GOBIN="$DIR/bin" go install "go.opentelemetry.io/collector/cmd/builder@v$VERSION"
fi
cat > "$DIR/builder.yaml" <<YAML
dist:
  name: eddy-otelcol
  description: OTLP receiver and OTLP/HTTP exporter for eddy's tests
  output_path: $DIR/build
receivers:
  - gomod: go.opentelemetry.io/collector/receiver/otlpreceiver v$VERSION
exporters:
  - gomod: go.opentelemetry.io/collector/exporter/otlphttpexporter v$VERSION
YAML
echo "collector.sh: building the collector (a few minutes the first time)" >&2
"$DIR/bin/builder" --config "$DIR/builder.yaml" >"$DIR/build.log" 2>&1 || {
    tail -30 "$DIR/build.log" >&2; echo "collector.sh: build failed, see $DIR/build.log" >&2; exit 1; }
[ -x "$BIN" ] || { echo "collector.sh: the builder made no $BIN" >&2; exit 1; }
echo "$BIN"
