import http from 'node:http';
import { randomUUID } from 'node:crypto';
import type { Config, SourceSettings } from '../core/config';
import type { AmqpMessage } from './events';
import { log } from '../core/log';
import { eventsDeadLettered } from '../core/metrics';
import type { Broker, Consumer, Delivery, QueueName } from './queue';

/**
 * The local stand-in for the Knative RabbitMQ source (`RabbitmqSource`), used by `npm start` and the
 * tests, never in a cluster. It does what that source's receive adapter (eventing-rabbitmq v0.48.0,
 * run against it in test/adapter-parity.test.ts) does, and nothing more (docs/deploy.md, "How events
 * flow"):
 * - prefetch is fixed at 100; `parallelism` is the number of requests in flight;
 * - each message becomes a binary-mode CloudEvent POSTed to the sink with `Kn-Namespace`, no timeout;
 *   a missing id or time is filled in; a message that claims to be a CloudEvent but is not a valid one
 *   (no type, a malformed time) is dead-lettered without a request;
 * - 2xx → ack; 404/413/425/429/502/503/504 or a network error → retry n (n = 1…retry) after
 *   backoffDelay × 2^n (exponential) or × n (linear); anything else, or retries exhausted → nack
 *   without requeue, so RabbitMQ dead-letters it;
 * - when stopped, in-flight requests are cancelled and nothing is settled: the broker redelivers. The
 *   adapter, on SIGTERM, nacks the cancelled ones (and up to parallelism + 1 it had handed to its
 *   workers) without requeue, racing its own connection close: usually the close wins and the broker
 *   redelivers them, as here; sometimes they are dead-lettered (test/adapter-parity.test.ts).
 * Differences, harmless: a binary event's ce-time is passed on as published, where the adapter re-formats
 * it (same instant); it does not wait for its queue to exist (the adapter retries every second) because
 * the broker client declares the queues itself.
 */
export interface SourceOptions extends SourceSettings {
  queue: QueueName;
  sink: string;
  /** RabbitmqSource name and namespace (ce-source of wrapped messages, Kn-Namespace): knative/50-sources.yaml's by default. */
  name?: string;
  namespace?: string;
}

/** The adapter's channel QoS (eventing-rabbitmq pkg/rabbit ChannelQoS), whatever `parallelism` says. */
export const PREFETCH = 100;
const NAMESPACE = 'video2mp3';
const retryable = new Set([404, 413, 425, 429, 502, 503, 504]);
// The CloudEvents media type of a structured event in the AMQP content_type (the SDK's format lookup).
const structured = 'application/cloudevents+json';
const required = ['source', 'type'] as const;

export class InvalidCloudEventError extends Error {
  override name = 'InvalidCloudEventError';
}

export interface CloudEventRequest {
  headers: Record<string, string>;
  body: Buffer;
}

const mediaType = (contentType: string | undefined) => (contentType ?? '').split(';')[0]!.trim().toLowerCase();

const rfc3339 = (ms: number) => new Date(ms).toISOString().replace('.000Z', 'Z');

// The adapter's CloudEvents client fills a missing id (a UUID) and time (now), then validates.
function checked(attrs: Record<string, string>): Record<string, string> {
  attrs.id ||= randomUUID();
  attrs.time ??= rfc3339(Date.now());
  for (const name of required) if (!attrs[name]) throw new InvalidCloudEventError(`CloudEvent without ${name}`);
  if (attrs.time !== undefined && Number.isNaN(Date.parse(attrs.time))) throw new InvalidCloudEventError(`CloudEvent time ${attrs.time} is not a timestamp`);
  return attrs;
}

function binary(attrs: Record<string, string>, body: Buffer, opts: Pick<SourceOptions, 'namespace'>): CloudEventRequest {
  const headers: Record<string, string> = { 'kn-namespace': opts.namespace ?? NAMESPACE };
  for (const [k, v] of Object.entries(attrs)) {
    if (k === 'datacontenttype') headers['content-type'] = v;
    else headers[`ce-${k}`] = v;
  }
  return { headers, body };
}

/**
 * How the RabbitMQ source turns an AMQP message into the HTTP request it sends (always binary mode).
 * Throws InvalidCloudEventError for a message that is a CloudEvent by its headers or content type
 * but not a valid one: the source nacks those without sending anything.
 */
export function toCloudEventRequest(message: AmqpMessage, opts: Pick<SourceOptions, 'queue' | 'name' | 'namespace'>): CloudEventRequest {
  const namespace = opts.namespace ?? NAMESPACE;
  const source = `/apis/v1/namespaces/${namespace}/rabbitmqsources/${opts.name ?? opts.queue}#${opts.queue}`;
  // Header names lower-cased and without `ce-`; a missing source is filled in. The bare `traceparent`
  // and `tracestate` headers (exactly so spelt) are dropped, while `ce-traceparent` becomes the event's
  // traceparent extension, as the adapter's NewMessageFromDelivery does.
  const headers: Record<string, string> = {};
  for (const [k, v] of Object.entries(message.headers)) {
    if (k !== 'traceparent' && k !== 'tracestate') headers[k.toLowerCase().replace(/^ce-/, '')] = v;
  }
  headers.source ??= source;

  if (mediaType(message.contentType) === structured) {
    let event: Record<string, unknown>;
    try {
      event = JSON.parse(message.body.toString('utf8')) as Record<string, unknown>;
    } catch {
      throw new InvalidCloudEventError('structured CloudEvent is not JSON');
    }
    if (typeof event !== 'object' || event === null || event.specversion !== '1.0') throw new InvalidCloudEventError('structured CloudEvent without specversion 1.0');
    const { data, data_base64: base64, ...rest } = event;
    const attrs = checked(Object.fromEntries(Object.entries(rest).map(([k, v]) => [k, String(v)])));
    const body = typeof base64 === 'string' ? Buffer.from(base64, 'base64')
      : data === undefined ? Buffer.alloc(0)
      : typeof data === 'string' && !/json/.test(attrs.datacontenttype ?? 'application/json') ? Buffer.from(data) : Buffer.from(JSON.stringify(data));
    return binary(attrs, body, opts);
  }

  if (headers.specversion === '1.0' || headers.specversion === '0.3') {
    const attrs: Record<string, string> = {};
    for (const [k, v] of Object.entries(headers)) {
      if (k === 'content-type') attrs.datacontenttype = v;
      else if (!k.startsWith('x-')) attrs[k] = v;
    }
    return binary(checked(attrs), message.body, opts);
  }

  // Anything else is wrapped in a new event; the AMQP headers are not carried over.
  const id = message.messageId || randomUUID();
  const attrs: Record<string, string> = { specversion: '1.0', id, type: 'dev.knative.rabbitmq.event', source, subject: id };
  if (message.timestamp) attrs.time = rfc3339(message.timestamp * 1000);
  if (message.contentType) attrs.datacontenttype = message.contentType;
  return binary(checked(attrs), message.body, opts);
}

function post(sink: string, req: CloudEventRequest, signal: AbortSignal): Promise<number> {
  return new Promise((resolve, reject) => {
    const r = http.request(sink, { method: 'POST', signal, headers: { ...req.headers, 'content-length': String(req.body.length) } }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
      res.on('error', reject);
    });
    r.on('error', reject);
    r.end(req.body);
  });
}

/** The wait before retry n (n = 1…retry), as the adapter's CloudEvents client computes it. */
export function backoff(opts: Pick<SourceOptions, 'backoffPolicy' | 'backoffDelayMs'>, n: number): number {
  return opts.backoffPolicy === 'exponential' ? opts.backoffDelayMs * 2 ** n : opts.backoffDelayMs * n;
}

// Resolves after `ms`, or at once when stopped. Its listener on the source's one signal is removed
// when the time is up, so retries do not pile listeners onto it.
const sleep = (ms: number, signal: AbortSignal) => new Promise<void>((resolve) => {
  const done = () => {
    clearTimeout(timer);
    signal.removeEventListener('abort', done);
    resolve();
  };
  const timer = setTimeout(done, ms);
  signal.addEventListener('abort', done, { once: true });
});

async function deliver(opts: SourceOptions, d: Delivery, signal: AbortSignal) {
  const id = d.message.messageId;
  let request: CloudEventRequest;
  try {
    request = toCloudEventRequest(d.message, opts);
  } catch (err) {
    log.warn({ queue: opts.queue, id, err }, 'message is not a valid CloudEvent; dead-lettered without delivery');
    eventsDeadLettered.inc({ queue: opts.queue, reason: 'invalid' });
    d.deadLetter();
    return;
  }
  for (let retries = 0; ; retries++) {
    let status: number | string;
    try {
      status = await post(opts.sink, request, signal);
    } catch (err) {
      status = (err as NodeJS.ErrnoException).code ?? 'network-error';
    }
    if (signal.aborted) return; // stopped: left unsettled, the broker redelivers it
    if (typeof status === 'number' && status >= 200 && status < 300) {
      d.ack();
      log.debug({ queue: opts.queue, id, status, retries }, 'event delivered');
      return;
    }
    const again = typeof status === 'string' || retryable.has(status);
    if (!again || retries >= opts.retry) {
      log.warn({ queue: opts.queue, id, status, attempts: retries + 1 }, 'event not delivered; dead-lettered');
      eventsDeadLettered.inc({ queue: opts.queue, reason: again ? 'retries-exhausted' : 'rejected' });
      d.deadLetter();
      return;
    }
    const delay = backoff(opts, retries + 1);
    log.info({ queue: opts.queue, id, status, retry: retries + 1, retryInMs: delay }, 'event delivery failed; retrying');
    await sleep(delay, signal);
    if (signal.aborted) return;
  }
}

/** Starts consuming `opts.queue` (prefetch 100) and forwarding to `opts.sink` with `parallelism` requests at most. */
export async function startSource(broker: Broker, opts: SourceOptions): Promise<Consumer> {
  const waiting: Delivery[] = [];
  const stopping = new AbortController();
  let busy = 0;
  const next = () => {
    while (!stopping.signal.aborted && busy < opts.parallelism && waiting.length > 0) {
      busy++;
      void deliver(opts, waiting.shift()!, stopping.signal).finally(() => { busy--; next(); });
    }
  };
  const consumer = await broker.consume(opts.queue, PREFETCH, (d) => { waiting.push(d); next(); });
  return {
    async stop() {
      stopping.abort();
      waiting.length = 0;
      await consumer.stop();
    },
  };
}

/** The two sources of the pipeline, `video` → convert and `mp3` → notify, each with its own settings. */
export function startPipelineSources(broker: Broker, baseUrl: string, config: Pick<Config, 'sources'>): Promise<Consumer[]> {
  return Promise.all([
    startSource(broker, { ...config.sources.video, queue: 'video', sink: `${baseUrl}/convert/` }),
    startSource(broker, { ...config.sources.mp3, queue: 'mp3', sink: `${baseUrl}/notify/` }),
  ]);
}
