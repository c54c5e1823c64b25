package main

import (
	"context"
	"fmt"
	"sort"
	"strings"

	authenticationv1 "k8s.io/api/authentication/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/scheme"
	rabbitmqsourcesv1alpha1 "knative.dev/eventing-rabbitmq/pkg/apis/sources/v1alpha1"
	"knative.dev/eventing/pkg/apis/feature"
	sourcesconfig "knative.dev/eventing/pkg/apis/sources/config"
	sourcesv1 "knative.dev/eventing/pkg/apis/sources/v1"
	"knative.dev/pkg/apis"
	"knative.dev/pkg/webhook/resourcesemantics"
	servingconfig "knative.dev/serving/pkg/apis/config"
	servingv1 "knative.dev/serving/pkg/apis/serving/v1"
	autoscalerconfig "knative.dev/serving/pkg/autoscaler/config"
)

// knativeKind is a kind whose webhooks we run: a new empty object, the context its webhook gives
// SetDefaults and Validate, and the checks Knative's validation leaves out (gaps.go).
type knativeKind struct {
	new     func() resourcesemantics.GenericCRD
	context func(context.Context) context.Context
	gaps    func(context.Context, resourcesemantics.GenericCRD) *apis.FieldError
	// describe names what defaulting decided that matters here, for the report.
	describe func(resourcesemantics.GenericCRD) string
}

var knativeKinds = map[schema.GroupVersionKind]knativeKind{
	servingv1.SchemeGroupVersion.WithKind("Service"): {
		new:      func() resourcesemantics.GenericCRD { return &servingv1.Service{} },
		context:  servingContext,
		gaps:     serviceGaps,
		describe: describeTimeouts,
	},
	rabbitmqsourcesv1alpha1.SchemeGroupVersion.WithKind("RabbitmqSource"): {
		// eventing-rabbitmq's source webhook adds nothing to the context (cmd/webhook/source).
		new:     func() resourcesemantics.GenericCRD { return &rabbitmqsourcesv1alpha1.RabbitmqSource{} },
		context: func(ctx context.Context) context.Context { return ctx },
		gaps:    rabbitmqSourceGaps,
	},
	sourcesv1.SchemeGroupVersion.WithKind("PingSource"): {
		// PingSource's own Validate checks the schedule (robfig/cron, as the adapter parses it), the
		// data and the sink, so nothing is left to check on our own.
		new:     func() resourcesemantics.GenericCRD { return &sourcesv1.PingSource{} },
		context: eventingContext,
	},
}

// The groups whose kinds this tool does not check: their CRDs' schemas are the check, applied by the
// control-plane test (the API server with the operators' CRDs) and by test/knative.test.ts
// (knative/schemas/).
var schemaCheckedGroups = map[string]string{
	"rabbitmq.com": "the RabbitMQ operators' CRD schemas (knative/schemas/, the control-plane test)",
}

// user is who the webhooks are told makes the request (serving records it in the creator and
// lastModifier annotations and checks them on update).
var user = &authenticationv1.UserInfo{Username: "video2mp3-deployer"}

// servingContext is what serving's webhook adds: its config store (config-defaults, config-features,
// config-autoscaler), here as the shipped, empty ConfigMaps give it.
func servingContext(ctx context.Context) context.Context {
	defaults, err := servingconfig.NewDefaultsConfigFromMap(map[string]string{})
	must(err)
	features, err := servingconfig.NewFeaturesConfigFromMap(map[string]string{})
	must(err)
	autoscaler, err := autoscalerconfig.NewConfigFromMap(map[string]string{})
	must(err)
	return servingconfig.ToContext(ctx, &servingconfig.Config{Defaults: defaults, Features: features, Autoscaler: autoscaler})
}

// eventingContext is what eventing's validation webhook adds that a PingSource reads: the ping
// defaults (config-ping-defaults) and the feature flags (config-features), as empty ConfigMaps give them.
func eventingContext(ctx context.Context) context.Context {
	ping, err := sourcesconfig.NewPingDefaultsConfigFromMap(map[string]string{})
	must(err)
	flags, err := feature.NewFlagsConfigFromMap(map[string]string{})
	must(err)
	return feature.ToContext(sourcesconfig.ToContext(ctx, &sourcesconfig.Config{PingDefaults: ping}), flags)
}

func must(err error) {
	if err != nil {
		panic(fmt.Sprintf("building a default config store: %v", err))
	}
}

// admit checks one object and says what it ran.
func admit(obj object) ([]problem, string) {
	if kind, ok := knativeKinds[obj.gvk]; ok {
		return admitKnative(obj, kind)
	}
	if why, ok := schemaCheckedGroups[obj.gvk.Group]; ok {
		return nil, "left to " + why
	}
	if scheme.Scheme.Recognizes(obj.gvk) {
		// Kubernetes' own kinds: strict decoding catches misspelt and unknown fields; their
		// validation is the API server's (the control-plane test applies them).
		target, err := scheme.Scheme.New(obj.gvk)
		must(err)
		return decodeStrict(obj, target), "strict decoding"
	}
	if strings.HasSuffix(obj.gvk.Group, "knative.dev") {
		return []problem{{file: obj.file, object: obj.name(), level: "error", message: fmt.Sprintf("%s is not a Knative kind this deployment uses (apiVersion or kind misspelt?)", obj.gvk)}}, "unknown Knative kind"
	}
	return []problem{{file: obj.file, object: obj.name(), level: "error", message: fmt.Sprintf("unknown kind %s", obj.gvk)}}, "unknown kind"
}

// admitKnative decodes strictly, then runs the defaulting and the validation webhooks' steps on the
// object as a create and as a re-apply of the same file (an update whose old object is the stored
// one: the create's, defaulted).
func admitKnative(obj object, kind knativeKind) ([]problem, string) {
	created := kind.new()
	if found := decodeStrict(obj, created); len(found) > 0 {
		return found, "strict decoding"
	}
	found := admitCreate(obj.file, obj.name(), kind, created)
	if len(found) > 0 {
		return found, "create"
	}
	note := "strict decoding, defaulting and validation as a create and as a re-apply"
	if kind.describe != nil {
		note += "; defaulted: " + kind.describe(created)
	}
	reapplied := created.DeepCopyObject().(resourcesemantics.GenericCRD)
	found = admitUpdate(obj.file, obj.name(), kind, created, reapplied)
	return found, note
}

// describeTimeouts names a Service's request timeouts as Knative's defaulting leaves them: the ones
// queue-proxy and the activator enforce (docs/deploy.md, "How the request timeouts nest").
func describeTimeouts(obj resourcesemantics.GenericCRD) string {
	spec := obj.(*servingv1.Service).Spec.Template.Spec
	seconds := func(v *int64) string {
		if v == nil {
			return "unset"
		}
		return fmt.Sprint(*v)
	}
	return fmt.Sprintf("timeoutSeconds=%s responseStartTimeoutSeconds=%s idleTimeoutSeconds=%s",
		seconds(spec.TimeoutSeconds), seconds(spec.ResponseStartTimeoutSeconds), seconds(spec.IdleTimeoutSeconds))
}

// admitCreate runs the webhooks on a create; obj is defaulted in place, as the API server stores it.
func admitCreate(file, name string, kind knativeKind, obj resourcesemantics.GenericCRD) []problem {
	ctx := apis.WithUserInfo(apis.WithinCreate(kind.context(context.Background())), user)
	obj.SetDefaults(ctx)
	return fieldProblems(file, name, "create", validate(ctx, kind, obj))
}

// admitUpdate runs the webhooks on an update of stored (as admitCreate left it) to obj, as
// knative.dev/pkg's webhooks do: the defaulter compares with a defaulted copy of the old object, the
// validator with the old object as stored.
func admitUpdate(file, name string, kind knativeKind, stored, obj resourcesemantics.GenericCRD) []problem {
	base := kind.context(context.Background())
	old := stored.DeepCopyObject().(resourcesemantics.GenericCRD)
	old.SetDefaults(base)
	obj.SetDefaults(apis.WithUserInfo(apis.WithinUpdate(base, old), user))
	ctx := apis.WithUserInfo(apis.WithinUpdate(base, stored), user)
	return fieldProblems(file, name, "update", validate(ctx, kind, obj))
}

func validate(ctx context.Context, kind knativeKind, obj resourcesemantics.GenericCRD) *apis.FieldError {
	errs := obj.Validate(ctx)
	if kind.gaps != nil {
		errs = errs.Also(kind.gaps(ctx, obj))
	}
	return errs
}

// fieldProblems splits Knative's FieldError into its errors and warnings, as the validation webhook
// does (Filter(apis.ErrorLevel), Filter(apis.WarningLevel)); each names its field path.
func fieldProblems(file, name, phase string, fe *apis.FieldError) []problem {
	var found []problem
	for _, level := range []struct {
		level apis.DiagnosticLevel
		name  string
	}{{apis.ErrorLevel, "error"}, {apis.WarningLevel, "warning"}} {
		filtered := fe.Filter(level.level)
		if filtered == nil {
			continue
		}
		var messages []string
		for _, e := range filtered.WrappedErrors() {
			messages = append(messages, e.Error())
		}
		sort.Strings(messages)
		for _, m := range messages {
			found = append(found, problem{file: file, object: name, level: fmt.Sprintf("%s (%s)", level.name, phase), message: m})
		}
	}
	return found
}
