// The local stand-in for the Knative RabbitMQ source, against a real HTTP sink, on the in-process
// queue and on RabbitMQ: what it acks, retries and dead-letters, and how many it keeps in flight.
import http from 'node:http';
import type net from 'node:net';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { closeClients } from '../lib/core/clients';
import { loadConfig } from '../lib/core/config';
import { conversionSucceeded, toAmqp } from '../lib/messaging/events';
import { createBroker, type Broker, type Consumer } from '../lib/messaging/queue';
import { backoff, InvalidCloudEventError, startSource, toCloudEventRequest } from '../lib/messaging/source';
import { backends, eventually } from './support/stack';

interface Received {
  headers: http.IncomingHttpHeaders;
  body: string;
}

function event(n: number) {
  return toAmqp(conversionSucceeded({ jobId: `job${n}`, owner: 'o', email: 'a@example.com', filename: 'f.mp4', mp3BlobId: 'b', durationSeconds: 1, bytes: 2 }));
}

describe.each(backends())('the local event source on $name backends', ({ env }) => {
  let broker: Broker;
  let sink: http.Server;
  let sinkUrl: string;
  let respond: (req: Received, n: number) => Promise<number>;
  let received: Received[];
  let consumer: Consumer | undefined;

  beforeAll(async () => {
    broker = createBroker(loadConfig({ AMQP_URL: env.AMQP_URL }));
    sink = http.createServer((req, res) => {
      let body = '';
      req.on('data', (c: Buffer) => { body += c.toString(); });
      req.on('end', () => {
        const r = { headers: req.headers, body };
        received.push(r);
        void respond(r, received.length).then((status) => res.writeHead(status).end());
      });
    });
    await new Promise<void>((resolve) => sink.listen(0, '127.0.0.1', resolve));
    sinkUrl = `http://127.0.0.1:${(sink.address() as net.AddressInfo).port}/`;
  });
  afterAll(async () => {
    sink.close();
    await broker.close();
    await closeClients();
  });
  afterEach(async () => {
    await consumer?.stop();
    for (const q of ['mp3', 'mp3.dlq'] as const) await broker.purge(q);
  });

  async function run(opts: { retry?: number; parallelism?: number; backoffPolicy?: 'linear' | 'exponential'; backoffDelayMs?: number }, messages: number) {
    received = [];
    for (const q of ['mp3', 'mp3.dlq'] as const) await broker.purge(q);
    for (let i = 0; i < messages; i++) await broker.publish('mp3', event(i));
    consumer = await startSource(broker, { queue: 'mp3', sink: sinkUrl, parallelism: opts.parallelism ?? 1, retry: opts.retry ?? 2, backoffPolicy: opts.backoffPolicy ?? 'exponential', backoffDelayMs: opts.backoffDelayMs ?? 20 });
  }

  it('when the sink answers 2xx, then the event is posted once in binary mode with our type, and acked', async () => {
    respond = async () => 202;
    await run({}, 1);
    await eventually(async () => ((await broker.depth('mp3')) === 0 && received.length === 1 ? true : undefined), 10_000);
    await new Promise((r) => setTimeout(r, 200));
    expect(received).toHaveLength(1);
    expect(received[0]!.headers).toMatchObject({ 'ce-specversion': '1.0', 'ce-id': 'job0.succeeded', 'ce-type': 'io.github.video2mp3.conversion.succeeded', 'ce-source': '/video2mp3', 'content-type': 'application/json' });
    expect(JSON.parse(received[0]!.body)).toMatchObject({ jobId: 'job0' });
    expect(await broker.depth('mp3.dlq')).toBe(0);
  });

  it.each([503, 429, 504, 404])('when the sink answers %i, then it is retried `retry` times and then dead-lettered', async (status) => {
    respond = async () => status;
    await run({ retry: 2 }, 1);
    await eventually(async () => ((await broker.depth('mp3.dlq')) === 1 ? true : undefined), 10_000, 'the dead letter');
    expect(received).toHaveLength(3);
  });

  it.each([500, 400])('when the sink answers %i, then it is not retried: dead-lettered at once', async (status) => {
    respond = async () => status;
    await run({ retry: 5 }, 1);
    await eventually(async () => ((await broker.depth('mp3.dlq')) === 1 ? true : undefined), 10_000, 'the dead letter');
    expect(received).toHaveLength(1);
  });

  it('when events are retried many times, then the waits leave no listener behind (no MaxListenersExceededWarning)', async () => {
    const warnings: string[] = [];
    const onWarning = (w: Error) => warnings.push(w.name);
    process.on('warning', onWarning);
    try {
      respond = async () => 503;
      await run({ retry: 15, backoffPolicy: 'linear', backoffDelayMs: 1 }, 2);
      await eventually(async () => ((await broker.depth('mp3.dlq')) === 2 ? true : undefined), 10_000, 'both dead letters');
      expect(received).toHaveLength(32); // 2 × (1 + 15 retries): more waits than the default limit of 10 listeners
      await new Promise((r) => setImmediate(r)); // warnings are emitted on the next tick
      expect(warnings).not.toContain('MaxListenersExceededWarning');
    } finally {
      process.off('warning', onWarning);
    }
  });

  it('when a retry succeeds, then the event is acked and not dead-lettered', async () => {
    respond = async (_r, n) => (n < 3 ? 503 : 200);
    await run({ retry: 5 }, 1);
    await eventually(async () => (received.length === 3 ? true : undefined), 10_000);
    await new Promise((r) => setTimeout(r, 200));
    expect(await broker.depth('mp3')).toBe(0);
    expect(await broker.depth('mp3.dlq')).toBe(0);
  });

  it('when parallelism is 2, then at most two requests are in flight', async () => {
    let inFlight = 0;
    let most = 0;
    respond = async () => {
      most = Math.max(most, ++inFlight);
      await new Promise((r) => setTimeout(r, 100));
      inFlight--;
      return 200;
    };
    await run({ parallelism: 2 }, 6);
    await eventually(async () => (received.length === 6 ? true : undefined), 10_000);
    expect(most).toBe(2);
  });

  it('when parallelism is 1 and the sink is slow, then the rest are prefetched, and stopping gives every message back', async () => {
    let release!: () => void;
    const hold = new Promise<void>((r) => { release = r; });
    respond = async () => { await hold; return 200; };
    await run({ parallelism: 1 }, 4);
    await eventually(async () => (received.length === 1 && (await broker.depth('mp3')) === 0 ? true : undefined), 10_000, 'one request, none ready');
    await consumer!.stop();
    consumer = undefined;
    release();
    await eventually(async () => ((await broker.depth('mp3')) === 4 ? true : undefined), 10_000, 'all four back in the queue');
    expect(received).toHaveLength(1);
    expect(await broker.depth('mp3.dlq')).toBe(0);
  });
});

describe('how the source maps messages and waits', () => {
  it('when a message has no ce- headers, then it becomes a dev.knative.rabbitmq.event as the real source does', () => {
    const req = toCloudEventRequest({ body: Buffer.from('{}'), contentType: 'application/json', messageId: 'm1', headers: { 'x-death': 'x', foo: 'bar' }, timestamp: 1_790_000_000 }, { queue: 'video' });
    expect(req.headers).toEqual({
      'ce-specversion': '1.0', 'ce-id': 'm1', 'ce-type': 'dev.knative.rabbitmq.event',
      'ce-source': '/apis/v1/namespaces/video2mp3/rabbitmqsources/video#video', 'ce-subject': 'm1', 'ce-time': '2026-09-21T14:13:20Z',
      'content-type': 'application/json', 'kn-namespace': 'video2mp3',
    });
  });

  it('when our message has x- headers, then they are dropped and the rest keep their meaning', () => {
    const msg = event(1);
    const req = toCloudEventRequest({ ...msg, headers: { ...msg.headers, 'x-first-death-queue': 'mp3' } }, { queue: 'mp3' });
    expect(req.headers).not.toHaveProperty('ce-x-first-death-queue');
    expect(req.headers['ce-type']).toBe('io.github.video2mp3.conversion.succeeded');
    expect(req.headers['ce-source']).toBe('/video2mp3');
  });

  it.each([
    ['no type', { 'ce-specversion': '1.0', 'ce-id': 'a', 'ce-source': '/s' }],
    ['a type that is empty', { 'ce-specversion': '1.0', 'ce-id': 'a', 'ce-type': '', 'ce-source': '/s' }],
    ['a time that is not one', { 'ce-specversion': '1.0', 'ce-id': 'a', 'ce-type': 't', 'ce-time': 'yesterday' }],
  ])('when a message claims to be a CloudEvent with %s, then it is refused before any request', (_what, headers) => {
    expect(() => toCloudEventRequest({ body: Buffer.from('{}'), contentType: 'application/json', messageId: 'm', headers }, { queue: 'mp3' })).toThrow(InvalidCloudEventError);
  });

  it('when a structured CloudEvent arrives, then it is sent in binary mode', () => {
    const body = Buffer.from(JSON.stringify({ specversion: '1.0', id: 's1', type: 't', source: '/s', datacontenttype: 'application/json', data: { a: 1 } }));
    const req = toCloudEventRequest({ body, contentType: 'application/cloudevents+json', messageId: 's1', headers: {} }, { queue: 'mp3' });
    expect(req.headers).toMatchObject({ 'ce-id': 's1', 'ce-type': 't', 'ce-source': '/s', 'content-type': 'application/json' });
    expect(JSON.parse(req.body.toString())).toEqual({ a: 1 });
  });

  it('when backing off, then retry n waits delay × 2^n (exponential) or delay × n (linear), as the adapter does', () => {
    expect([1, 2, 3].map((n) => backoff({ backoffPolicy: 'exponential', backoffDelayMs: 200 }, n))).toEqual([400, 800, 1600]);
    expect([1, 2, 3].map((n) => backoff({ backoffPolicy: 'linear', backoffDelayMs: 200 }, n))).toEqual([200, 400, 600]);
  });
});

const services = backends().find((b) => b.name === 'services');

describe.runIf(services)('the local event source when RabbitMQ restarts (real broker behind a proxy)', () => {
  it('when its connection is cut and the broker comes back, then it consumes again without a restart', async () => {
    const { startProxy } = await import('./support/proxy');
    const amqp = new URL(services!.env.AMQP_URL!);
    const proxy = await startProxy({ host: amqp.hostname, port: Number(amqp.port || 5672) });
    amqp.host = `127.0.0.1:${proxy.port}`;
    const broker = createBroker(loadConfig({ AMQP_URL: amqp.toString() }));
    const seen: string[] = [];
    const sink = http.createServer((req, res) => { seen.push(String(req.headers['ce-id'])); req.resume(); res.writeHead(200).end(); });
    await new Promise<void>((resolve) => sink.listen(0, '127.0.0.1', resolve));
    const consumer = await startSource(broker, { queue: 'mp3', sink: `http://127.0.0.1:${(sink.address() as net.AddressInfo).port}/`, parallelism: 1, retry: 1, backoffPolicy: 'exponential', backoffDelayMs: 20 });
    try {
      await broker.purge('mp3');
      await broker.publish('mp3', event(1));
      await eventually(async () => (seen.includes('job1.succeeded') ? true : undefined), 10_000, 'the first event');
      await proxy.down();
      await new Promise((r) => setTimeout(r, 300));
      await proxy.up();
      await broker.publish('mp3', event(2)); // the publisher reconnects too
      await eventually(async () => (seen.includes('job2.succeeded') ? true : undefined), 15_000, 'the event after the restart');
    } finally {
      await consumer.stop();
      await broker.close();
      sink.close();
      await proxy.close();
    }
  });
});
