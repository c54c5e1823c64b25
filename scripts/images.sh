#!/usr/bin/env bash
# `npm run images`: bundles the functions (npm run build) and builds one image per function straight into
# Minikube's container runtime, no registry involved, tagged dev.local/<function>:<version> (Knative does
# not resolve dev.local tags against a registry).
#   MINIKUBE_PROFILE  the profile to build into (default: knative, the one `kn quickstart minikube` creates)
#   VERSION           the image tag (default: <package.json version>-<git short sha>, plus -dirty.<time> when
#                     the work tree has changes, so every code change gets a new tag and a new revision)
#   SKIP_BUILD=1      reuse dist/ as it is
# `scripts/images.sh --version` prints the default tag and exits.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

FUNCTIONS=(auth upload download convert notify)
PROFILE="${MINIKUBE_PROFILE:-knative}"

die() { echo "error: $*" >&2; exit 1; }

default_version() {
  local version sha
  version="$(node -p 'require("./package.json").version')"
  if sha="$(git rev-parse --short HEAD 2>/dev/null)"; then
    version="$version-$sha"
    if [[ -n "$(git status --porcelain 2>/dev/null)" ]]; then version="$version-dirty.$(date +%s)"; fi
  fi
  echo "$version"
}

if [[ "${1:-}" == "--version" ]]; then default_version; exit 0; fi
VERSION="${VERSION:-$(default_version)}"

command -v minikube >/dev/null 2>&1 || die "minikube is not installed or not on PATH (https://minikube.sigs.k8s.io/docs/start/)."
minikube -p "$PROFILE" status >/dev/null 2>&1 \
  || die "minikube profile '$PROFILE' is not running. Create it with 'kn quickstart minikube' (docs/deploy.md), or set MINIKUBE_PROFILE."

if [[ "${SKIP_BUILD:-}" != "1" ]]; then npm run build; fi
for fn in "${FUNCTIONS[@]}"; do
  [[ -f "dist/$fn/index.js" ]] || die "dist/$fn/index.js is missing: run 'npm run build' (does functions/$fn/index.ts exist?)."
done
for file in dist/convert/transcode-worker.js dist/convert/node_modules/@ffmpeg.wasm/core-mt/package.json; do
  [[ -f "$file" ]] || die "$file is missing: convert's image needs it; run 'npm run build'."
done

for fn in "${FUNCTIONS[@]}"; do
  echo "==> dev.local/$fn:$VERSION"
  minikube -p "$PROFILE" image build -t "dev.local/$fn:$VERSION" --build-opt="build-arg=FUNCTION=$fn" .
done
