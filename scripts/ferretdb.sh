#!/usr/bin/env bash
# Builds the FerretDB runner the tests use as their MongoDB-wire server (tools/ferretdb/main.go) into
# .bin/ferretdb. Needs Go and the Go module proxy; the first build takes a few minutes, later ones
# copy the cached binary (scripts/lib/go-cache.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/go-cache.sh
build() { (cd tools/ferretdb && go build -o "$1" .); }
cached_build ferretdb "v1.24.2-$(key_of tools/ferretdb/main.go tools/ferretdb/go.mod tools/ferretdb/go.sum)" build
