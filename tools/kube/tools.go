//go:build tools

// Package kube pins the Kubernetes commands the control-plane test runs (kube-apiserver, kubectl);
// scripts/kube.sh builds them from this module.
package kube

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
