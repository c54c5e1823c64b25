#!/usr/bin/env bash
# Stand-in for kn, kubectl, minikube and npm in test/knative.test.ts (copied under each name onto PATH).
# Records every call as one line of $FAKE_LOG: the tool and its arguments, tab-separated; what a call reads
# from stdin (`-f -`, /dev/stdin) follows on the next line as `<tool>:stdin<TAB><content>`. Answers the few
# queries the scripts make. FAKE_CLUSTER_DOWN, FAKE_MINIKUBE_DOWN, FAKE_MISSING_CRDS and
# FAKE_MISSING_SECRETS (space-separated names) make the matching query fail; FAKE_KN_VERSION is what
# `kn version` reports (default v1.16.0).
# `kn service apply` is checked as kn would check it: only the flags deploy.sh may pass, the manifest file
# naming that service in that namespace, an image of that service, well-formed annotations and env.
set -euo pipefail
tool="$(basename "$0")"
args=" $* "
record="$(printf '%s' "$tool"; printf '\t%s' "$@")"
if [[ "$args" == *" -f - "* || "$args" == *"=/dev/stdin "* ]]; then
  record="$record"$'\n'"$tool:stdin"$'\t'"$(tr '\n' ' ')"
fi
# One append per call, so the calls of a pipeline, which run at once, do not interleave.
printf '%s\n' "$record" >> "$FAKE_LOG"

listed() { local name; for name in $1; do [[ "$args" == *" $name "* ]] && return 0; done; return 1; }
fail() { echo "Error: $*" >&2; exit 1; }

# kn service apply NAME [--namespace NS] --filename FILE --image IMAGE [--annotation-revision K=V]… [--env K=V]…
kn_service_apply() {
  local name="" ns=default file="" image="" flag value
  local -a annotations=() envs=()
  while (( $# )); do
    flag="$1"; shift
    case "$flag" in
      --*=*) value="${flag#*=}"; flag="${flag%%=*}" ;;
      --*) (( $# )) || fail "flag needs an argument: $flag"; value="$1"; shift ;;
      *) [[ -z "$name" ]] || fail "'service apply' requires the service name given as single argument"; name="$flag"; continue ;;
    esac
    case "$flag" in
      --namespace|-n) ns="$value" ;;
      --filename|-f) file="$value" ;;
      --image) image="$value" ;;
      --annotation-revision) annotations+=("$value") ;;
      --env|-e) envs+=("$value") ;;
      *) fail "unknown flag: $flag" ;;
    esac
  done
  [[ -n "$name" ]] || fail "'service apply' requires the service name given as single argument"
  [[ -n "$file" && -f "$file" ]] || fail "no manifest file: '$file'"
  local manifest; manifest="$(<"$file")"
  [[ "$manifest" == *$'\nkind: Service\n'* ]] || fail "$file is not a Knative Service"
  [[ "$manifest" == *$'\nmetadata:\n  name: '"$name"$'\n'* ]] || fail "provided service name '$name' doesn't match name from file $file"
  [[ "$manifest" == *$'\n  namespace: '"$ns"$'\n'* ]] || fail "$file is not in namespace '$ns'"
  [[ "$image" =~ ^dev\.local/"$name":[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$ ]] || fail "image '$image' is not dev.local/$name:<tag>"
  for value in "${annotations[@]}"; do
    [[ "$value" =~ ^([a-z0-9]([a-z0-9.-]*[a-z0-9])?/)?[A-Za-z0-9]([A-Za-z0-9_.-]*[A-Za-z0-9])?=.+$ ]] || fail "invalid annotation '$value'"
  done
  for value in "${envs[@]}"; do
    [[ "$value" =~ ^[A-Za-z_][A-Za-z0-9_]*=.*$ ]] || fail "invalid env '$value'"
  done
}

case "$tool" in
  kubectl)
    case "$args" in
      *" cluster-info "*) [[ -z "${FAKE_CLUSTER_DOWN:-}" ]] || { echo "The connection to the server was refused" >&2; exit 1; } ;;
      *" config current-context "*) echo knative ;;
      *" get crd "*) ! listed "${FAKE_MISSING_CRDS:-}" || { echo 'Error from server (NotFound)' >&2; exit 1; } ;;
      *" get secret rabbitmq-default-user "*)
        case "$args" in
          *username*) printf 'cmFiYml0' ;;         # rabbit
          *password*) printf 'cDRzcy93b3JkKz0=' ;; # p4ss/word+= (characters a URL must escape)
        esac ;;
      *" get secret "*) ! listed "${FAKE_MISSING_SECRETS:-}" || { echo 'Error from server (NotFound)' >&2; exit 1; } ;;
      *" get configmap video2mp3-config "*) printf 'http://download.video2mp3.127.0.0.1.sslip.io' ;;
    esac ;;
  kn)
    case "$args" in
      " version ") printf 'Version:      %s\nBuild Date:   2025-01-01 00:00:00\n' "${FAKE_KN_VERSION:-v1.16.0}" ;;
      *" service describe "*) printf 'http://%s.video2mp3.127.0.0.1.sslip.io\n' "$3" ;;
      " service apply "*) shift 2; kn_service_apply "$@" ;;
    esac ;;
  minikube)
    case "$args" in
      *" status "*) [[ -z "${FAKE_MINIKUBE_DOWN:-}" ]] || { echo 'Profile "knative" not found.' >&2; exit 85; } ;;
    esac ;;
esac
exit 0
