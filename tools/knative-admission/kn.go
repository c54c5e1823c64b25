package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"knative.dev/client/pkg/commands"
	knservice "knative.dev/client/pkg/commands/service"
	knflags "knative.dev/client/pkg/flags"
	clientservingv1 "knative.dev/client/pkg/serving/v1"
	servingv1 "knative.dev/serving/pkg/apis/serving/v1"
	servingfake "knative.dev/serving/pkg/client/clientset/versioned/fake"
)

// The two deployments checked: a first one (the create) and a redeploy with new code and a new
// configuration (an update that changes the revision template), as scripts/deploy.sh passes them.
var knDeploys = []struct{ version, configSHA string }{
	{"0.1.0-aaaaaaa", "111111111111"},
	{"0.1.1-bbbbbbb", "222222222222"},
}

// admitKnApply checks each Service in file as scripts/deploy.sh deploys it: `kn service apply NAME
// --namespace NS --filename FILE --image dev.local/NAME:VERSION --annotation-revision
// video2mp3/config-sha=SHA`. kn's own command (knative.dev/client/pkg at v0.48.0: its flag parsing, its
// lenient read of the file, its three-way merge for an update) runs against a fake serving clientset
// in place of the cluster; the Service kn creates, and the one its patch makes of the stored Service,
// go through the webhooks' defaulting and validation (admit.go). The stored Service is the created one
// as the defaulting webhook left it, so the update is checked against what a cluster would hold.
func admitKnApply(file string, objects []object, namespace string) []problem {
	var found []problem
	kind := knativeKinds[servingv1.SchemeGroupVersion.WithKind("Service")]
	for _, obj := range objects {
		if obj.gvk != servingv1.SchemeGroupVersion.WithKind("Service") {
			continue
		}
		// deploy.sh names the Service after its file (FUNCTIONS, knative/40-services/NAME.yaml); kn
		// refuses a file whose Service is named otherwise.
		name := strings.TrimSuffix(filepath.Base(file), filepath.Ext(file))
		label := fmt.Sprintf("%s/Service/%s (kn service apply)", namespace, name)
		cluster := servingfake.NewSimpleClientset()
		services := cluster.ServingV1().Services(namespace)

		var stored *servingv1.Service
		var outcome []problem
		for i, deploy := range knDeploys {
			phase := "create"
			if i > 0 {
				phase = "update"
			}
			fail := func(message string) {
				outcome = append(outcome, problem{file: file, object: label, level: "error (" + phase + ")", message: message})
			}
			if err := runKnApply(cluster, namespace, name, file, deploy.version, deploy.configSHA); err != nil {
				fail(err.Error())
				break
			}
			made, err := services.Get(context.Background(), name, metav1.GetOptions{})
			if err != nil {
				fail("kn made no Service: " + err.Error())
				break
			}
			image := "dev.local/" + name + ":" + deploy.version
			if len(made.Spec.Template.Spec.Containers) == 0 || made.Spec.Template.Spec.Containers[0].Image != image ||
				made.Spec.Template.Annotations["video2mp3/config-sha"] != deploy.configSHA {
				fail("kn's Service lacks the image " + image + " or the config-sha " + deploy.configSHA)
				break
			}
			if stored == nil {
				outcome = append(outcome, admitCreate(file, label, kind, made)...)
			} else {
				outcome = append(outcome, admitUpdate(file, label, kind, stored, made)...)
			}
			// What the API server keeps: the object as the defaulting webhook left it.
			if made, err = services.Update(context.Background(), made, metav1.UpdateOptions{}); err != nil {
				fail("storing: " + err.Error())
				break
			}
			stored = made
		}
		report(obj, "as kn service apply makes it", outcome, "create, then an update with a new image and config-sha")
		found = append(found, outcome...)
	}
	return found
}

// runKnApply runs kn's `service apply` command with scripts/deploy.sh's arguments, against cluster.
// --no-wait only spares waiting for a Ready condition no controller will set here; it changes nothing
// in the object.
func runKnApply(cluster *servingfake.Clientset, namespace, name, file, version, configSHA string) error {
	args := []string{
		"apply", name, "--namespace", namespace,
		"--filename", file,
		"--image", "dev.local/" + name + ":" + version,
		"--annotation-revision", "video2mp3/config-sha=" + configSHA,
		"--no-wait",
	}
	var output bytes.Buffer
	params := &commands.KnParams{Output: &output}
	params.NewServingClient = func(ns string) (clientservingv1.KnServingClient, error) {
		return clientservingv1.NewKnServingClient(cluster.ServingV1(), ns), nil
	}
	cmd := knservice.NewServiceCommand(params)
	// As kn's root command does (knative.dev/client/pkg/root): --no-wait and the like.
	cmd.PersistentPreRunE = func(cmd *cobra.Command, _ []string) error { return knflags.ReconcileBoolFlags(cmd.Flags()) }
	cmd.SetArgs(args)
	cmd.SetOut(&output)
	cmd.SetErr(&output)
	cmd.SilenceUsage = true
	// kn orders --env flags by their position in os.Args (PodSpecFlags.ResolvePodSpec).
	savedArgs := os.Args
	os.Args = append([]string{"kn", "service"}, args...)
	defer func() { os.Args = savedArgs }()
	if err := cmd.Execute(); err != nil {
		return fmt.Errorf("kn service %s: %w (%s)", strings.Join(args, " "), err, strings.TrimSpace(output.String()))
	}
	return nil
}
