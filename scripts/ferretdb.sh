#!/usr/bin/env bash
# Builds the FerretDB runner the tests use as their MongoDB-wire server (tools/ferretdb/main.go) into
# .bin/ferretdb. Needs Go and the Go module proxy; the first build takes a few minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
export GOTOOLCHAIN=local GOFLAGS=-mod=mod
if [ -x .bin/ferretdb ] && [ .bin/ferretdb -nt tools/ferretdb/main.go ] && [ .bin/ferretdb -nt tools/ferretdb/go.sum ]; then
  echo "ferretdb: .bin/ferretdb is up to date"
  exit 0
fi
command -v go >/dev/null || { echo "ferretdb: Go is required to build FerretDB (see README)" >&2; exit 1; }
echo "ferretdb: building .bin/ferretdb (FerretDB v1.24.2 on SQLite)…"
(cd tools/ferretdb && go build -o ../../.bin/ferretdb .)
echo "ferretdb: built"
