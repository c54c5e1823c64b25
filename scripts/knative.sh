#!/usr/bin/env bash
# Builds Knative's own commands at the version the docs name (tools/knative/go.mod pins it) into .bin/:
# kn, Serving's controller and webhook, and eventing-rabbitmq's source controller and webhook, for the
# control-plane test (test/knative-cluster.test.ts). One module, so the packages they
# share compile once. Needs Go and the Go module proxy; the first build takes several minutes, later
# ones copy the cached binaries (scripts/lib/go-cache.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/go-cache.sh
key="v0.48.0-$(key_of tools/knative/go.mod tools/knative/go.sum)"
# kn reports its version from these (deploy.sh refuses a kn whose `kn version` shows none); Knative
# v1.21.0 is the release of the v0.48.0 modules.
kn_ldflags="-X knative.dev/client/pkg/commands/version.Version=v1.21.0 -X knative.dev/client/pkg/commands/version.GitRevision=382000a9"
# name → package; the eventing-rabbitmq commands are both called "source" upstream.
commands=(
  kn=knative.dev/client/cmd/kn
  knative-serving-controller=knative.dev/serving/cmd/controller
  rabbitmq-source-controller=knative.dev/eventing-rabbitmq/cmd/controller/source
  knative-serving-webhook=knative.dev/serving/cmd/webhook
  rabbitmq-source-webhook=knative.dev/eventing-rabbitmq/cmd/webhook/source
)
for entry in "${commands[@]}"; do
  name=${entry%%=*} package=${entry#*=} ldflags="-s -w"
  [ "$name" = kn ] && ldflags="$ldflags $kn_ldflags"
  # shellcheck disable=SC2329 # called by cached_build
  build() { (cd tools/knative && go build -ldflags "$ldflags" -o "$1" "$package"); }
  cached_build "$name" "$key$([ "$name" = kn ] && echo -v1.21.0)" build
done
