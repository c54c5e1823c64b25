#!/usr/bin/env bash
# Builds Knative's admission check (tools/knative-admission: serving's, eventing's and
# eventing-rabbitmq's defaulting and validation at v0.48.0, and kn's `service apply`) into
# .bin/knative-admission, for test/knative-admission.test.ts. Needs Go and the Go module proxy; the first
# build takes several minutes, later ones copy the cached binary (scripts/lib/go-cache.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/go-cache.sh
build() { (cd tools/knative-admission && go build -ldflags "-s -w" -o "$1" .); }
cached_build knative-admission "v0.48.0-$(key_of scripts/knative-admission.sh tools/knative-admission/*.go tools/knative-admission/go.mod tools/knative-admission/go.sum)" build
