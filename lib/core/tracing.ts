import type { EventEmitter } from 'node:events';
import type * as Api from '@opentelemetry/api';

/**
 * OpenTelemetry traces, off unless OTEL_EXPORTER_OTLP_ENDPOINT is set. Only the type of the API is
 * imported here: the SDK, the exporter and the API itself are loaded by startTracing, so a function
 * that does not trace never evaluates them (no cold-start cost, docs/operations.md). While off,
 * every helper runs its callback untraced.
 *
 * Context crosses the pipeline as Knative Eventing carries it: the W3C `traceparent`/`tracestate`
 * pair as CloudEvents extensions (`ce-traceparent` on the AMQP message and on the HTTP delivery).
 */
interface Tracing {
  api: typeof Api;
  tracer: Api.Tracer;
  propagator: Api.TextMapPropagator;
  flush(): Promise<void>;
  shutdown(): Promise<void>;
}

let tracing: Tracing | undefined;

export type SpanKind = 'server' | 'client' | 'producer' | 'consumer' | 'internal';
export type Attributes = Record<string, string | number | boolean | undefined>;

/** Loads the SDK and sends spans to `${endpoint}/v1/traces` (OTLP/HTTP, JSON). Idempotent. */
export async function startTracing(settings: { endpoint: string; service: string }): Promise<void> {
  if (tracing) return;
  const [api, { TracerProvider, BatchSpanProcessor }, { OTLPTraceExporter }, { resourceFromAttributes }, { W3CTraceContextPropagator }, { AsyncLocalStorageContextManager }] = await Promise.all([
    import('@opentelemetry/api'),
    import('@opentelemetry/sdk-trace'),
    import('@opentelemetry/exporter-trace-otlp-http'),
    import('@opentelemetry/resources'),
    import('@opentelemetry/core'),
    import('@opentelemetry/context-async-hooks'),
  ]);
  const processor = new BatchSpanProcessor({ exporter: new OTLPTraceExporter({ url: `${settings.endpoint}/v1/traces` }), scheduledDelayMillis: 1000 });
  const provider = new TracerProvider({ resource: resourceFromAttributes({ 'service.name': settings.service }), spanProcessors: [processor] });
  const contextManager = new AsyncLocalStorageContextManager().enable();
  api.context.setGlobalContextManager(contextManager);
  api.trace.setGlobalTracerProvider(provider);
  const propagator = new W3CTraceContextPropagator();
  tracing = {
    api,
    tracer: provider.getTracer('video2mp3'),
    propagator,
    flush: () => provider.forceFlush(),
    async shutdown() {
      await provider.shutdown();
      api.trace.disable();
      api.context.disable();
    },
  };
}

/** Sends the spans still buffered (a test waiting for them; shutdown). */
export async function flushTracing(): Promise<void> {
  await tracing?.flush();
}

/** Flushes and unloads the tracer: spans after this are not recorded. */
export async function stopTracing(): Promise<void> {
  const t = tracing;
  tracing = undefined;
  await t?.shutdown();
}

export const tracingEnabled = (): boolean => tracing !== undefined;

function kindOf(api: typeof Api, kind: SpanKind = 'internal'): Api.SpanKind {
  return { server: api.SpanKind.SERVER, client: api.SpanKind.CLIENT, producer: api.SpanKind.PRODUCER, consumer: api.SpanKind.CONSUMER, internal: api.SpanKind.INTERNAL }[kind];
}

function clean(attributes: Attributes = {}): Api.Attributes {
  return Object.fromEntries(Object.entries(attributes).filter(([, v]) => v !== undefined)) as Api.Attributes;
}

/** A handle on the current span for code that learns its attributes as it goes; a no-op while off. */
export interface SpanHandle {
  set(attributes: Attributes): void;
  rename(name: string): void;
}
const noSpan: SpanHandle = { set: () => {}, rename: () => {} };

/**
 * Runs `fn` in a new span, child of the active one. A thrown error is recorded on the span and
 * rethrown. While tracing is off, `fn` just runs.
 */
export async function withSpan<T>(name: string, opts: { kind?: SpanKind; attributes?: Attributes }, fn: (span: SpanHandle) => Promise<T>): Promise<T> {
  const t = tracing;
  if (!t) return fn(noSpan);
  return t.tracer.startActiveSpan(name, { kind: kindOf(t.api, opts.kind), attributes: clean(opts.attributes) }, async (span) => {
    try {
      return await fn({ set: (a) => span.setAttributes(clean(a)), rename: (n) => span.updateName(n) });
    } catch (err) {
      span.recordException(err as Error);
      span.setStatus({ code: t.api.SpanStatusCode.ERROR, message: (err as Error).message });
      throw err;
    } finally {
      span.end();
    }
  });
}

/**
 * Runs `run` inside a server span continuing the trace the request carries: a CloudEvent's
 * `ce-traceparent` extension first (what the RabbitMQ source delivers), else the HTTP `traceparent`
 * header. `done` is called once with the final name and attributes, when the response is over.
 */
export function serverSpan(
  req: EventEmitter & { headers: Record<string, string | string[] | undefined> },
  res: EventEmitter,
  name: string,
  run: (done: (name: string, attributes: Attributes, failed: boolean) => void) => void,
): void {
  const t = tracing;
  if (!t) return run(() => {});
  const { headers } = req;
  const header = (key: string) => {
    const v = headers[`ce-${key}`] ?? headers[key];
    return Array.isArray(v) ? v[0] : v;
  };
  const parent = t.propagator.extract(t.api.ROOT_CONTEXT, headers, { keys: () => ['traceparent', 'tracestate'], get: (_carrier, key) => header(key) });
  const span = t.tracer.startSpan(name, { kind: t.api.SpanKind.SERVER }, parent);
  const active = t.api.trace.setSpan(parent, span);
  // The body arrives in the socket's callbacks, not ours: listeners added from here on (body-parser's,
  // busboy's, the handler's) run in the span's context.
  t.api.context.bind(active, req);
  t.api.context.bind(active, res);
  t.api.context.with(active, () => run((finalName, attributes, failed) => {
    span.updateName(finalName);
    span.setAttributes(clean(attributes));
    if (failed) span.setStatus({ code: t.api.SpanStatusCode.ERROR });
    span.end();
  }));
}

/** The active span's context as W3C headers (`traceparent`, `tracestate`); empty while off or outside a span. */
export function traceHeaders(): Record<string, string> {
  const t = tracing;
  if (!t) return {};
  const carrier: Record<string, string> = {};
  t.propagator.inject(t.api.context.active(), carrier, { set: (c, k, v) => { c[k] = v; } });
  return carrier;
}

/** The active span's ids, for log lines; empty while off or outside a span. */
export function traceFields(): { traceId?: string; spanId?: string } {
  const t = tracing;
  if (!t) return {};
  const ctx = t.api.trace.getSpanContext(t.api.context.active());
  return ctx && t.api.isSpanContextValid(ctx) ? { traceId: ctx.traceId, spanId: ctx.spanId } : {};
}
