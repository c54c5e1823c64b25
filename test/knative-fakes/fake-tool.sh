#!/usr/bin/env bash
# Stand-in for kn, kubectl, minikube and npm in test/knative.test.ts (copied under each name onto PATH).
# Records every call as one line of $FAKE_LOG: the tool and its arguments, tab-separated; what a call reads
# from stdin (`-f -`, /dev/stdin) follows on the next line as `<tool>:stdin<TAB><content>`. Answers the few
# queries the scripts make. FAKE_CLUSTER_DOWN, FAKE_MINIKUBE_DOWN, FAKE_MISSING_CRDS and
# FAKE_MISSING_SECRETS (space-separated names) make the matching query fail.
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
      *" service describe "*) printf 'http://%s.video2mp3.127.0.0.1.sslip.io\n' "$3" ;;
    esac ;;
  minikube)
    case "$args" in
      *" status "*) [[ -z "${FAKE_MINIKUBE_DOWN:-}" ]] || { echo 'Profile "knative" not found.' >&2; exit 85; } ;;
    esac ;;
esac
exit 0
