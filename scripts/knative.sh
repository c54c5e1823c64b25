#!/usr/bin/env bash
# Builds Knative's own commands at the version the docs name (tools/knative/go.mod pins it) into .bin/:
# kn, Serving's controller, webhook and autoscaler, and eventing-rabbitmq's source controller and
# webhook, for the control-plane test (test/knative-cluster.test.ts). One module, so the packages they
# share compile once. Needs Go and the Go module proxy; the first build takes several minutes, later
# ones copy the cached binaries (scripts/lib/go-cache.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/go-cache.sh
key="v0.48.0-$(key_of tools/knative/go.mod tools/knative/go.sum)"
# name → package; the eventing-rabbitmq commands are both called "source" upstream.
commands=(
  kn=knative.dev/client/cmd/kn
  knative-serving-controller=knative.dev/serving/cmd/controller
  knative-serving-webhook=knative.dev/serving/cmd/webhook
  knative-serving-autoscaler=knative.dev/serving/cmd/autoscaler
  rabbitmq-source-controller=knative.dev/eventing-rabbitmq/cmd/controller/source
  rabbitmq-source-webhook=knative.dev/eventing-rabbitmq/cmd/webhook/source
)
for entry in "${commands[@]}"; do
  package=${entry#*=}
  # shellcheck disable=SC2329 # called by cached_build
  build() { (cd tools/knative && go build -trimpath -ldflags "-s -w" -o "$1" "$package"); }
  cached_build "${entry%%=*}" "$key" build
done
