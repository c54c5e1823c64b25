#!/usr/bin/env bash
# Builds kube-apiserver and kubectl from k8s.io/kubernetes (tools/kube/go.mod pins the version) into
# .bin/, for the control-plane test (test/knative-cluster.test.ts, test/support/control-plane.ts).
# Needs Go and the Go module proxy; the first build takes several minutes (kube-apiserver is the long
# one), later ones copy the cached binaries (scripts/lib/go-cache.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/go-cache.sh
version=v1.34.4
key="$version-$(key_of tools/kube/go.mod tools/kube/go.sum)"
# Without the version stamp the binaries report v0.0.0, which kubectl and kn warn about.
ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$version"
build_apiserver() { (cd tools/kube && go build -ldflags "$ldflags" -o "$1" k8s.io/kubernetes/cmd/kube-apiserver); }
build_kubectl() { (cd tools/kube && go build -ldflags "$ldflags" -o "$1" k8s.io/kubernetes/cmd/kubectl); }
cached_build kube-apiserver "$key" build_apiserver
cached_build kubectl "$key" build_kubectl
