//go:build tools

// Package knative pins the Knative commands the control-plane test runs: kn, Serving's controller
// and webhook, and eventing-rabbitmq's source controller and webhook. They share one
// module so their common packages (client-go, knative.dev/pkg) resolve to one version and compile
// once; scripts/knative.sh builds them.
package knative

import (
	_ "knative.dev/client/cmd/kn"
	_ "knative.dev/eventing-rabbitmq/cmd/controller/source"
	_ "knative.dev/eventing-rabbitmq/cmd/webhook/source"
	_ "knative.dev/serving/cmd/controller"
	_ "knative.dev/serving/cmd/webhook"
)
