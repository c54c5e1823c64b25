package main

import (
	"context"
	"fmt"

	"github.com/rickb777/date/period"
	rabbitmqsourcesv1alpha1 "knative.dev/eventing-rabbitmq/pkg/apis/sources/v1alpha1"
	eventingduckv1 "knative.dev/eventing/pkg/apis/duck/v1"
	"knative.dev/pkg/apis"
	"knative.dev/pkg/webhook/resourcesemantics"
	servingv1 "knative.dev/serving/pkg/apis/serving/v1"
)

// serviceGaps checks what serving's validation leaves out of a Service's timeouts: it bounds
// timeoutSeconds by max-revision-timeout-seconds, but not responseStartTimeoutSeconds or
// idleTimeoutSeconds, which only mean something below timeoutSeconds (the request is cut at
// timeoutSeconds whatever they say). Run after defaulting, so timeoutSeconds is set.
func serviceGaps(_ context.Context, obj resourcesemantics.GenericCRD) *apis.FieldError {
	spec := obj.(*servingv1.Service).Spec.Template.Spec
	if spec.TimeoutSeconds == nil {
		return nil
	}
	var errs *apis.FieldError
	for field, value := range map[string]*int64{"responseStartTimeoutSeconds": spec.ResponseStartTimeoutSeconds, "idleTimeoutSeconds": spec.IdleTimeoutSeconds} {
		if value != nil && (*value < 0 || *value > *spec.TimeoutSeconds) {
			errs = errs.Also(apis.ErrOutOfBoundsValue(*value, 0, *spec.TimeoutSeconds, field))
		}
	}
	return errs.ViaField("spec", "template", "spec")
}

// rabbitmqSourceGaps checks what RabbitmqSource.Validate leaves out (it ignores spec.sink and
// spec.delivery): the sink with knative.dev/pkg's Destination validation (a ref has apiVersion, kind
// and name in the source's namespace, or the URI is absolute), and the delivery with eventing's
// DeliverySpec validation (retry ≥ 0, backoffPolicy linear or exponential, backoffDelay an ISO-8601
// duration). The receive adapter parses backoffDelay ignoring the error, so an unparsable delay
// would silently become 0; a negative one, which parses, is refused here too.
func rabbitmqSourceGaps(ctx context.Context, obj resourcesemantics.GenericCRD) *apis.FieldError {
	source := obj.(*rabbitmqsourcesv1alpha1.RabbitmqSource)
	ctx = apis.WithinParent(ctx, source.ObjectMeta)
	var errs *apis.FieldError

	if source.Spec.Sink == nil {
		errs = errs.Also(apis.ErrMissingField("sink"))
	} else {
		errs = errs.Also(source.Spec.Sink.Validate(ctx).ViaField("sink"))
	}

	if d := source.Spec.Delivery; d != nil {
		delivery := eventingduckv1.DeliverySpec{Retry: d.Retry, BackoffPolicy: d.BackoffPolicy, BackoffDelay: d.BackoffDelay}
		errs = errs.Also(delivery.Validate(ctx).ViaField("delivery"))
		if d.BackoffDelay != nil {
			// As the receive adapter reads it (pkg/adapter in eventing-rabbitmq).
			if p, err := period.Parse(*d.BackoffDelay); err == nil && p.DurationApprox() < 0 {
				errs = errs.Also(apis.ErrInvalidValue(fmt.Sprintf("%s (negative)", *d.BackoffDelay), "backoffDelay").ViaField("delivery"))
			}
		}
	}
	return errs.ViaField("spec")
}
