#!/usr/bin/env bash
# Builds the real Knative RabbitmqSource receive adapter (knative.dev/eventing-rabbitmq, cmd/receive_adapter)
# into .bin/receive-adapter-<version>, for the tests that run the bundled functions behind it
# (test/knative-adapter.test.ts, platform.md §2). Needs Go and the Go module proxy; the first build takes
# several minutes. `go install` of the command path is refused by the proxy here, so the module is
# downloaded and built inside a writable copy with its own go.mod/go.sum. Only v0.48.0 is fully served.
set -euo pipefail
cd "$(dirname "$0")/.."
export GOTOOLCHAIN=local GOFLAGS=-mod=mod
version=v0.48.0
out="$PWD/.bin/receive-adapter-$version"
if [ -x "$out" ]; then
  echo "receive-adapter: $out is up to date"
  exit 0
fi
command -v go >/dev/null || { echo "receive-adapter: Go is required to build the receive adapter (see README)" >&2; exit 1; }
echo "receive-adapter: building .bin/receive-adapter-$version (knative.dev/eventing-rabbitmq)…"
dir=$(go mod download -json "knative.dev/eventing-rabbitmq@$version" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')
[ -n "$dir" ] && [ -d "$dir" ] || { echo "receive-adapter: go mod download gave no module directory" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# The module cache is read-only, and -mod=mod may tidy go.mod/go.sum while building.
cp -R "$dir/." "$work/"
chmod -R u+w "$work"
mkdir -p .bin
(cd "$work" && go build -o "$out.tmp" ./cmd/receive_adapter)
mv "$out.tmp" "$out"
echo "receive-adapter: built"
