// The local stand-in for the RabbitMQ source (lib/messaging/source.ts) and the real receive adapter (eventing-rabbitmq
// v0.48.0) in the same scenarios, on the same RabbitMQ queue and the same HTTP sink: what each sends, when it
// retries, how many requests it keeps in flight and how many messages it takes off the queue. The stand-in is
// only worth its name while these agree.
import http from 'node:http';
import type net from 'node:net';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig, type SourceSettings } from '../lib/core/config';
import type { AmqpMessage } from '../lib/messaging/events';
import { createBroker, type Broker, type Consumer } from '../lib/messaging/queue';
import { startSource } from '../lib/messaging/source';
import { adapterAvailable, adapterBroker, startAdapter } from './support/adapter';
import { adapterEnv } from './support/manifests';
import { backends, eventually } from './support/stack';

const services = backends().find((b) => b.name === 'services');
const enabled = services !== undefined && adapterAvailable();

interface Request { at: number; headers: http.IncomingHttpHeaders; body: string }
type Runner = 'stand-in' | 'adapter';
const runners: Runner[] = ['stand-in', 'adapter'];

const iso = (ms: number) => `PT${ms / 1000}S`;

describe.runIf(enabled)('the stand-in and the real receive adapter in the same scenario', () => {
  let broker: Broker;
  let sink: http.Server;
  let sinkUrl: string;
  let requests: Request[] = [];
  let open = 0;
  let status = 200;
  let held: (() => void)[] | undefined;
  let running: Consumer | undefined;

  beforeAll(async () => {
    broker = createBroker(loadConfig({ AMQP_URL: services!.env.AMQP_URL }));
    sink = http.createServer((req, res) => {
      let body = '';
      req.on('data', (c: Buffer) => { body += c.toString(); });
      req.on('end', () => {
        requests.push({ at: Date.now(), headers: req.headers, body });
        open++;
        const answer = () => { open--; res.writeHead(status).end(); };
        if (held) held.push(answer);
        else answer();
      });
    });
    await new Promise<void>((resolve) => sink.listen(0, '127.0.0.1', resolve));
    sinkUrl = `http://127.0.0.1:${(sink.address() as net.AddressInfo).port}/`;
  });
  afterEach(async () => {
    for (const answer of held ?? []) answer();
    held = undefined;
    await running?.stop();
    running = undefined;
  });
  afterAll(async () => {
    sink.closeAllConnections();
    sink.close();
    await broker.close();
  });

  /** Starts `runner` on queue mp3 with the `mp3` source's manifest settings, overridden by `settings`. */
  async function start(runner: Runner, settings: SourceSettings): Promise<void> {
    requests = [];
    status = 200;
    for (const q of ['mp3', 'mp3.dlq'] as const) await broker.purge(q);
    if (runner === 'stand-in') {
      running = await startSource(broker, { ...settings, queue: 'mp3', sink: sinkUrl });
    } else {
      running = await startAdapter({
        ...adapterEnv('mp3', { ...adapterBroker(services!.env.AMQP_URL!), sink: sinkUrl }),
        RABBITMQ_CHANNEL_PARALLELISM: String(settings.parallelism),
        HTTP_SENDER_RETRY: String(settings.retry),
        HTTP_SENDER_BACKOFF_POLICY: settings.backoffPolicy,
        HTTP_SENDER_BACKOFF_DELAY: iso(settings.backoffDelayMs),
      });
    }
  }

  const ours = (id: string): AmqpMessage => ({
    body: Buffer.from('{"n":1}'),
    contentType: 'application/json',
    messageId: id,
    headers: { 'ce-specversion': '1.0', 'ce-id': id, 'ce-type': 'io.example.test', 'ce-source': '/test', 'content-type': 'application/json' },
  });

  const measured: Record<string, Partial<Record<Runner, number[]>>> = {};

  describe.each(['exponential', 'linear'] as const)('when the sink keeps answering 503 (%s backoff, retry 3 from PT0.1S)', (policy) => {
    const expected = policy === 'exponential' ? [200, 400, 800] : [100, 200, 300];

    it.each(runners)('then %s retries after backoffDelay × 2^n or × n, n = 1…3, and then dead-letters', async (runner) => {
      await start(runner, { parallelism: 1, retry: 3, backoffPolicy: policy, backoffDelayMs: 100 });
      status = 503;
      await broker.publish('mp3', ours('retry-1'));
      await eventually(async () => ((await broker.depth('mp3.dlq')) === 1 ? true : undefined), 15_000, 'the dead letter');
      expect(requests).toHaveLength(4);
      const gaps = requests.slice(1).map((r, i) => r.at - requests[i]!.at);
      // Loose: other tests share the two cores.
      gaps.forEach((gap, i) => expect(gap, `retry ${i + 1}: ${gaps.join(', ')} ms`).toBeGreaterThanOrEqual(expected[i]! - 20));
      gaps.forEach((gap, i) => expect(gap, `retry ${i + 1}: ${gaps.join(', ')} ms`).toBeLessThan(expected[i]! + 400));
      (measured[policy] ??= {})[runner] = gaps;
    });

    it('then the stand-in\'s waits are the adapter\'s', () => {
      const { 'stand-in': ours, adapter } = measured[policy] ?? {};
      expect(ours && adapter, 'both runs above passed').toBeTruthy();
      ours!.forEach((gap, i) => expect(Math.abs(gap - adapter![i]!), `stand-in ${ours!.join(', ')} vs adapter ${adapter!.join(', ')} ms`).toBeLessThan(150 + expected[i]! / 4));
    });
  });

  const inFlight: Partial<Record<Runner, { open: number; ready: number }>> = {};

  it.each(runners)('when the sink is slow and parallelism is 2, then %s keeps 2 requests in flight and takes every message off the queue (prefetch 100)', async (runner) => {
    await start(runner, { parallelism: 2, retry: 0, backoffPolicy: 'exponential', backoffDelayMs: 100 });
    held = [];
    for (let i = 0; i < 12; i++) await broker.publish('mp3', ours(`slow-${i}`));
    await eventually(async () => (open === 2 && (await broker.depth('mp3')) === 0 ? true : undefined), 10_000, '2 requests in flight and none ready');
    await new Promise((r) => setTimeout(r, 500)); // would a third request come?
    inFlight[runner] = { open, ready: await broker.depth('mp3') };
    expect(inFlight[runner]).toEqual({ open: 2, ready: 0 });
    // Let them all through: each message exactly once, none dead-lettered.
    const release = held;
    held = undefined;
    for (const answer of release) answer();
    await eventually(async () => (requests.length === 12 && open === 0 ? true : undefined), 15_000, 'all 12 delivered');
    expect(new Set(requests.map((r) => r.headers['ce-id'])).size).toBe(12);
    await new Promise((r) => setTimeout(r, 300));
    expect(await broker.depth('mp3.dlq')).toBe(0);
  });

  it('when both ran the slow sink, then their in-flight and ready counts are the same', () => {
    expect(inFlight['stand-in']).toBeDefined();
    expect(inFlight['stand-in']).toEqual(inFlight.adapter);
  });

  it.each(runners)('when %s is stopped with 2 requests in flight and 10 messages prefetched, then every message is back in the queue or in the dead-letter queue', async (runner) => {
    const parallelism = 2;
    await start(runner, { parallelism, retry: 3, backoffPolicy: 'exponential', backoffDelayMs: 100 });
    held = [];
    for (let i = 0; i < 10; i++) await broker.publish('mp3', ours(`stop-${i}`));
    await eventually(async () => (open === parallelism && (await broker.depth('mp3')) === 0 ? true : undefined), 10_000, '2 requests in flight and none ready');
    await running!.stop(); // SIGTERM for the adapter
    running = undefined;
    await eventually(async () => ((await broker.depth('mp3')) + (await broker.depth('mp3.dlq')) === 10 ? true : undefined), 10_000, 'every message returned or dead-lettered');
    // The adapter nacks the requests it cancels (and up to parallelism + 1 more its workers hold) without
    // requeue while its connection closes: usually the close wins and all ten come back, sometimes those
    // are dead-lettered. The stand-in always gives them back.
    if (runner === 'stand-in') expect(await broker.depth('mp3')).toBe(10);
    else expect(await broker.depth('mp3.dlq')).toBeLessThanOrEqual(10);
  });

  const traced: Partial<Record<Runner, http.IncomingHttpHeaders>> = {};

  it.each(runners)('when an event carries ce-traceparent and a bare traceparent header, then %s delivers the first as the traceparent extension and drops the second', async (runner) => {
    await start(runner, { parallelism: 1, retry: 0, backoffPolicy: 'exponential', backoffDelayMs: 100 });
    const message = ours('traced-1');
    message.headers['ce-traceparent'] = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';
    message.headers['ce-tracestate'] = 'vendor=1';
    message.headers.traceparent = '00-11111111111111111111111111111111-2222222222222222-01';
    await broker.publish('mp3', message);
    await eventually(async () => (requests.length === 1 ? true : undefined), 10_000, 'the delivery');
    expect(requests[0]!.headers).toMatchObject({ 'ce-traceparent': '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01', 'ce-tracestate': 'vendor=1' });
    expect(JSON.stringify(requests[0]!.headers)).not.toContain('1111111111');
    traced[runner] = requests[0]!.headers;
  });

  it('when both delivered the traced event, then their trace headers are the same', () => {
    const pick = (h: http.IncomingHttpHeaders | undefined) => Object.fromEntries(Object.entries(h ?? {}).filter(([k]) => k.includes('trace')));
    expect(traced['stand-in']).toBeDefined();
    expect(pick(traced['stand-in'])).toEqual(pick(traced.adapter));
  });

  const wrapped: Partial<Record<Runner, http.IncomingHttpHeaders>> = {};

  it.each(runners)('when a plain message and an invalid CloudEvent arrive, then %s wraps the first and dead-letters the second without a request', async (runner) => {
    await start(runner, { parallelism: 1, retry: 2, backoffPolicy: 'exponential', backoffDelayMs: 100 });
    await broker.publish('mp3', { ...ours('no-type'), headers: { 'ce-specversion': '1.0', 'ce-id': 'no-type', 'ce-source': '/test' } });
    await broker.publish('mp3', { body: Buffer.from('{"plain":true}'), contentType: 'application/json', messageId: 'plain-1', headers: { foo: 'bar' }, timestamp: 1_790_000_000 });
    await eventually(async () => (requests.length === 1 && (await broker.depth('mp3.dlq')) === 1 ? true : undefined), 10_000, 'one request and one dead letter');
    await new Promise((r) => setTimeout(r, 300));
    expect(requests).toHaveLength(1);
    const [only] = requests;
    expect(only!.body).toBe('{"plain":true}');
    expect(only!.headers).toMatchObject({
      'ce-specversion': '1.0', 'ce-id': 'plain-1', 'ce-type': 'dev.knative.rabbitmq.event', 'ce-subject': 'plain-1',
      'ce-source': '/apis/v1/namespaces/video2mp3/rabbitmqsources/mp3#mp3', 'ce-time': '2026-09-21T14:13:20Z',
      'content-type': 'application/json', 'kn-namespace': 'video2mp3',
    });
    expect(only!.headers).not.toHaveProperty('ce-foo');
    wrapped[runner] = only!.headers;
  });

  it('when both wrapped the plain message, then they sent the same CloudEvent attributes', () => {
    const pick = (h: http.IncomingHttpHeaders | undefined) => Object.fromEntries(Object.entries(h ?? {}).filter(([k]) => k.startsWith('ce-') || k === 'content-type' || k === 'kn-namespace'));
    expect(wrapped['stand-in']).toBeDefined();
    expect(pick(wrapped['stand-in'])).toEqual(pick(wrapped.adapter));
  });
});
