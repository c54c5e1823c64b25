#!/usr/bin/env bash
# Builds the real Knative RabbitmqSource receive adapter (knative.dev/eventing-rabbitmq, cmd/receive_adapter)
# into .bin/receive-adapter-<version>, for the tests that run the bundled functions behind it
# (test/knative-adapter.test.ts, docs/rabbitmq-source.md). Needs Go and the Go module proxy; the first build takes
# several minutes, later ones copy the cached binary (scripts/lib/go-cache.sh). `go install` of the
# command path is refused by the proxy here, so the module is downloaded and built inside a writable
# copy with its own go.mod/go.sum. Only v0.48.0 is fully served.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/go-cache.sh
version=v0.48.0
build() {
  local dir work
  dir=$(go mod download -json "knative.dev/eventing-rabbitmq@$version" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')
  [ -n "$dir" ] && [ -d "$dir" ] || { echo "receive-adapter: go mod download gave no module directory" >&2; return 1; }
  work=$(mktemp -d)
  # The module cache is read-only, and -mod=mod may tidy go.mod/go.sum while building.
  cp -R "$dir/." "$work/"
  chmod -R u+w "$work"
  (cd "$work" && go build -o "$1" ./cmd/receive_adapter)
  rm -rf "$work"
}
cached_build "receive-adapter-$version" "$version" build
