import http from 'node:http';
import { randomUUID } from 'node:crypto';
import type { Config } from '../core/config';
import type { AmqpMessage } from './events';
import { log } from '../core/log';
import type { Broker, Consumer, Delivery, QueueName } from './queue';

/**
 * The local stand-in for the Knative RabbitMQ source (`RabbitmqSource`), used by `npm start` and the
 * tests, never in a cluster. It does what that source does and nothing more (docs/deploy.md, "How events flow"): at most
 * `parallelism` messages in flight, each turned into a binary-mode CloudEvent and POSTed to the sink;
 * 2xx → ack; 404/413/425/429/502/503/504 or a network error → retried `retry` times with backoff;
 * anything else, or retries exhausted → nack without requeue, so RabbitMQ dead-letters it. Like the
 * real source, its HTTP client has no timeout.
 */
export interface SourceOptions {
  queue: QueueName;
  sink: string;
  parallelism: number;
  retry: number;
  backoffPolicy: 'exponential' | 'linear';
  backoffDelayMs: number;
  /** RabbitmqSource name, for the fallback event source attribute. */
  name?: string;
}

const retryable = new Set([404, 413, 425, 429, 502, 503, 504]);

/** How the RabbitMQ source maps an AMQP message to HTTP (binary content mode). */
export function toCloudEventRequest(message: AmqpMessage, opts: Pick<SourceOptions, 'queue' | 'name'>): { headers: Record<string, string>; body: Buffer } {
  if (message.contentType === 'application/cloudevents+json') {
    return { headers: { 'content-type': 'application/cloudevents+json' }, body: message.body };
  }
  const lower = Object.fromEntries(Object.entries(message.headers).map(([k, v]) => [k.toLowerCase(), v]));
  if (lower['ce-specversion'] || lower.specversion) {
    const headers: Record<string, string> = {};
    for (const [k, v] of Object.entries(lower)) {
      if (k.startsWith('x-')) continue;
      if (k === 'content-type') headers['content-type'] = v;
      else headers[`ce-${k.replace(/^ce-/, '')}`] = v;
    }
    return { headers, body: message.body };
  }
  const headers: Record<string, string> = {
    'ce-specversion': '1.0',
    'ce-id': message.messageId || randomUUID(),
    'ce-type': 'dev.knative.rabbitmq.event',
    'ce-source': `/apis/v1/namespaces/default/rabbitmqsources/${opts.name ?? 'local'}#${opts.queue}`,
  };
  if (message.contentType) headers['content-type'] = message.contentType;
  return { headers, body: message.body };
}

function post(sink: string, req: { headers: Record<string, string>; body: Buffer }): Promise<number> {
  return new Promise((resolve, reject) => {
    const r = http.request(sink, { method: 'POST', headers: { ...req.headers, 'content-length': String(req.body.length) } }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
      res.on('error', reject);
    });
    r.on('error', reject);
    r.end(req.body);
  });
}

export function backoff(opts: Pick<SourceOptions, 'backoffPolicy' | 'backoffDelayMs'>, attempt: number): number {
  return opts.backoffPolicy === 'exponential' ? opts.backoffDelayMs * 2 ** attempt : opts.backoffDelayMs * (attempt + 1);
}

async function deliver(opts: SourceOptions, d: Delivery, stopped: () => boolean) {
  const request = toCloudEventRequest(d.message, opts);
  const id = d.message.messageId;
  for (let attempt = 0; ; attempt++) {
    let status: number | string;
    try {
      status = await post(opts.sink, request);
    } catch (err) {
      status = (err as NodeJS.ErrnoException).code ?? 'network-error';
    }
    if (typeof status === 'number' && status >= 200 && status < 300) {
      d.ack();
      log.debug({ queue: opts.queue, id, status, attempt }, 'event delivered');
      return;
    }
    const again = typeof status === 'string' || retryable.has(status);
    if (!again || attempt >= opts.retry || stopped()) {
      log.warn({ queue: opts.queue, id, status, attempts: attempt + 1 }, 'event not delivered; dead-lettered');
      d.deadLetter();
      return;
    }
    const delay = backoff(opts, attempt);
    log.info({ queue: opts.queue, id, status, attempt: attempt + 1, retryInMs: delay }, 'event delivery failed; retrying');
    await new Promise((r) => setTimeout(r, delay));
  }
}

/** Starts consuming `opts.queue` and forwarding to `opts.sink`. */
export async function startSource(broker: Broker, opts: SourceOptions): Promise<Consumer> {
  let stopped = false;
  const consumer = await broker.consume(opts.queue, opts.parallelism, (d) => void deliver(opts, d, () => stopped));
  return {
    async stop() {
      stopped = true;
      await consumer.stop();
    },
  };
}

/** The two sources of the pipeline, with the settings the RabbitmqSource manifests use. */
export function startPipelineSources(broker: Broker, baseUrl: string, config: Pick<Config, 'source'>): Promise<Consumer[]> {
  const common = { ...config.source };
  return Promise.all([
    startSource(broker, { ...common, queue: 'video', sink: `${baseUrl}/convert/`, name: 'video-source' }),
    startSource(broker, { ...common, queue: 'mp3', sink: `${baseUrl}/notify/`, name: 'mp3-source' }),
  ]);
}
