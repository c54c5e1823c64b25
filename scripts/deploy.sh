#!/usr/bin/env bash
# `npm run deploy`: the whole stack on the current Kubernetes context (Minikube from `kn quickstart
# minikube`; docs/deploy.md is the walk-through). In order: checks the tools, the cluster, the operators and
# the Secrets; builds and builds the images into Minikube (scripts/images.sh); applies knative/00–39 with
# kubectl and waits for RabbitMQ, the queues, MySQL, MongoDB and Mailpit; derives the AMQP Secret from the
# RabbitMQ operator's default user; deploys each function with `kn service apply` from its manifest in
# knative/40-services/ with the new image; applies the RabbitmqSources. Every step is an apply, so running it
# again converges instead of failing; unchanged code and config make no new revision.
#   MINIKUBE_PROFILE, VERSION, SKIP_BUILD  as in scripts/images.sh
#   SKIP_IMAGES=1                          the images dev.local/<function>:$VERSION are already where the
#                                          cluster's nodes find them: no minikube, no image build (CI runs
#                                          this file so against its own control plane, docs/deploy.md)
#   WAIT_TIMEOUT                           how long to wait for each backend (default 300s)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

NS=video2mp3
FUNCTIONS=(auth upload download convert notify)
# Created by hand (docs/deploy.md, "Create the secrets"); video2mp3-amqp is derived below.
SECRETS=(video2mp3-mysql video2mp3-mongodb video2mp3-smtp video2mp3-jwt video2mp3-links)
# Each CRD this needs, and what installs it.
CRDS=(
  "services.serving.knative.dev|Knative Serving (kn quickstart minikube)"
  "rabbitmqclusters.rabbitmq.com|the RabbitMQ Cluster Operator"
  "queues.rabbitmq.com|the RabbitMQ Messaging Topology Operator (needs cert-manager)"
  "rabbitmqsources.sources.knative.dev|the Knative RabbitMQ source (eventing-rabbitmq rabbitmq-source.yaml)"
)
WAIT="${WAIT_TIMEOUT:-300s}"
DOCS=docs/deploy.md

die() { echo "error: $*" >&2; exit 1; }
step() { echo "==> $*"; }
urlencode() { node -e 'process.stdout.write(encodeURIComponent(process.argv[1]))' "$1"; }

step "checking tools and cluster"
declare -A INSTALL=(
  [kubectl]="https://kubernetes.io/docs/tasks/tools/"
  [kn]="https://knative.dev/docs/client/install-kn/ (with the quickstart plugin)"
  [minikube]="https://minikube.sigs.k8s.io/docs/start/"
)
TOOLS=(kubectl kn)
[[ "${SKIP_IMAGES:-}" == "1" ]] || TOOLS+=(minikube)
for tool in "${TOOLS[@]}"; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is not installed or not on PATH: install it (${INSTALL[$tool]}), see $DOCS."
done
# Each function is deployed with `kn service apply NAME --filename … --image … --annotation-revision …`,
# which needs kn to apply those flags on top of the file: kn ≥ 1.0 does (docs/deploy.md, "Tools").
KN_MIN_MAJOR=1 KN_MIN_MINOR=0
if [[ "$(kn version 2>/dev/null)" =~ Version:[[:space:]]*v?([0-9]+)\.([0-9]+) ]]; then
  if (( BASH_REMATCH[1] < KN_MIN_MAJOR || (BASH_REMATCH[1] == KN_MIN_MAJOR && BASH_REMATCH[2] < KN_MIN_MINOR) )); then
    die "kn ${BASH_REMATCH[1]}.${BASH_REMATCH[2]} is too old: kn ≥ $KN_MIN_MAJOR.$KN_MIN_MINOR is needed (kn service apply with --filename and --image), see $DOCS."
  fi
else
  die "cannot tell which kn this is ('kn version' shows no Version): kn ≥ $KN_MIN_MAJOR.$KN_MIN_MINOR is needed, see $DOCS."
fi
kubectl cluster-info --request-timeout=5s >/dev/null 2>&1 \
  || die "no Kubernetes cluster answers on the current kubectl context ($(kubectl config current-context 2>/dev/null || echo 'none set')). Create one with 'kn quickstart minikube', see $DOCS."
missing=()
for entry in "${CRDS[@]}"; do
  kubectl get crd "${entry%%|*}" >/dev/null 2>&1 || missing+=("${entry##*|} (CRD ${entry%%|*})")
done
if (( ${#missing[@]} )); then
  die "the cluster lacks: $(printf '\n  - %s' "${missing[@]}")
Install them as $DOCS shows (\"Install the operators\")."
fi

kubectl apply -f knative/00-namespace.yaml
missing=()
for secret in "${SECRETS[@]}"; do
  kubectl -n "$NS" get secret "$secret" >/dev/null 2>&1 || missing+=("$secret")
done
if (( ${#missing[@]} )); then
  die "missing Secrets in namespace $NS: ${missing[*]}. Create them as $DOCS shows (\"Create the secrets\"); knative/31-secrets.template.yaml lists their keys."
fi

VERSION="${VERSION:-$(bash scripts/images.sh --version)}"
export VERSION
if [[ "${SKIP_IMAGES:-}" == "1" ]]; then
  step "using the images dev.local/<function>:$VERSION as they are (SKIP_IMAGES=1)"
else
  step "building images dev.local/<function>:$VERSION"
  bash scripts/images.sh
fi

step "applying the backing services and configuration"
for file in knative/[0-3][0-9]-*.yaml; do
  [[ "$file" == *.template.yaml ]] && continue
  kubectl apply -f "$file"
done
kubectl -n "$NS" wait --for=condition=AllReplicasReady rabbitmqcluster/rabbitmq --timeout="$WAIT"
for kind in exchanges queues bindings; do
  kubectl -n "$NS" wait --for=condition=Ready "$kind.rabbitmq.com" --all --timeout="$WAIT"
done
kubectl -n "$NS" rollout status statefulset/mysql --timeout="$WAIT"
kubectl -n "$NS" rollout status statefulset/mongodb --timeout="$WAIT"
kubectl -n "$NS" rollout status deployment/mailpit --timeout="$WAIT"

step "deriving Secret video2mp3-amqp from rabbitmq-default-user"
user="$(kubectl -n "$NS" get secret rabbitmq-default-user -o jsonpath='{.data.username}' | base64 -d)"
password="$(kubectl -n "$NS" get secret rabbitmq-default-user -o jsonpath='{.data.password}' | base64 -d)"
printf 'amqp://%s:%s@rabbitmq.%s.svc.cluster.local:5672' "$(urlencode "$user")" "$(urlencode "$password")" "$NS" \
  | kubectl -n "$NS" create secret generic video2mp3-amqp --from-file=AMQP_URL=/dev/stdin --dry-run=client -o yaml \
  | kubectl apply -f -

# Pods read the ConfigMap when they start: a changed config must make a new revision.
config_sha="$(sha256sum knative/30-config.yaml | cut -c1-12)"
for fn in "${FUNCTIONS[@]}"; do
  step "deploying $fn"
  kn service apply "$fn" --namespace "$NS" \
    --filename "knative/40-services/$fn.yaml" \
    --image "dev.local/$fn:$VERSION" \
    --annotation-revision "video2mp3/config-sha=$config_sha"
done

step "connecting the queues to convert and notify"
kubectl apply -f knative/50-sources.yaml
kubectl apply -f knative/55-maintenance.yaml
kubectl -n "$NS" wait --for=condition=Ready rabbitmqsources.sources.knative.dev --all --timeout="$WAIT"
kubectl apply -f knative/55-maintenance.yaml

kn service list --namespace "$NS"
download_url="$(kn service describe download --namespace "$NS" -o url)"
configured="$(kubectl -n "$NS" get configmap video2mp3-config -o jsonpath='{.data.DOWNLOAD_URL}')"
if [[ "$download_url" != "$configured" ]]; then
  echo "warning: download is served at $download_url but DOWNLOAD_URL is $configured: set DOWNLOAD_URL and PUBLIC_URL in knative/30-config.yaml to the URLs above and run 'npm run deploy' again." >&2
fi
step "done: $DOCS (\"Convert a video\") shows how to try it"
