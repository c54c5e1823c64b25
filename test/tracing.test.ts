// Traces: one upload is one trace from the upload request through the `video` event, the conversion, the
// `mp3` event, the email and the webhook, sent as OTLP/HTTP JSON to a plain loopback receiver; on the
// embedded backends and on MariaDB + FerretDB + RabbitMQ + SMTP, where the context crosses RabbitMQ as the
// events' ce-traceparent extension.
import { spawnSync } from 'node:child_process';
import http from 'node:http';
import type net from 'node:net';
import path from 'node:path';
import { Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { useLogDestination } from '../lib/core/log';
import { flushTracing, stopTracing } from '../lib/core/tracing';
import { getBroker } from '../lib/messaging/queue';
import { readFixture } from './fixtures';
import { startSmtp, type SmtpServer } from './support-smtp';
import { backends, eventually, newUser, startStack, videoForm, type Stack, type TestUser } from './support/stack';

interface OtlpSpan { traceId: string; spanId: string; parentSpanId?: string; name: string; kind: number }

/** An OTLP/HTTP receiver: what the exporter POSTs to /v1/traces, as JSON. */
let receiver: http.Server;
let endpoint: string;
const spans: OtlpSpan[] = [];
const otlpPaths: string[] = [];

// Every log line the stack writes, parsed, to find the trace ids in them.
const logLines: Record<string, unknown>[] = [];

beforeAll(async () => {
  receiver = http.createServer((req, res) => {
    let body = '';
    req.on('data', (c: Buffer) => { body += c.toString(); });
    req.on('end', () => {
      otlpPaths.push(`${req.method} ${req.url} ${req.headers['content-type']}`);
      const parsed = JSON.parse(body) as { resourceSpans: { scopeSpans: { spans: OtlpSpan[] }[] }[] };
      for (const rs of parsed.resourceSpans) for (const ss of rs.scopeSpans) spans.push(...ss.spans);
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    });
  });
  await new Promise<void>((resolve) => receiver.listen(0, '127.0.0.1', resolve));
  endpoint = `http://127.0.0.1:${(receiver.address() as net.AddressInfo).port}`;
  useLogDestination(new Writable({
    write(chunk: Buffer, _encoding, callback) {
      for (const line of chunk.toString().split('\n').filter(Boolean)) logLines.push(JSON.parse(line) as Record<string, unknown>);
      callback();
    },
  }) as never);
});
afterAll(async () => {
  await stopTracing();
  receiver.close();
});

describe.each(backends())('one upload is one trace on $name backends', ({ name, env }) => {
  let stack: Stack;
  let user: TestUser;
  let smtp: SmtpServer | undefined;
  let hooks: http.Server;
  let hooksUrl: string;
  let hooked = 0;

  beforeAll(async () => {
    hooks = http.createServer((req, res) => { hooked++; req.resume(); res.writeHead(204).end(); });
    await new Promise<void>((resolve) => hooks.listen(0, '127.0.0.1', resolve));
    hooksUrl = `http://127.0.0.1:${(hooks.address() as net.AddressInfo).port}/hook`;
    if (name === 'services') smtp = await startSmtp();
    stack = await startStack({
      ...env,
      ...(smtp ? { SMTP_URL: smtp.url } : {}),
      OTEL_EXPORTER_OTLP_ENDPOINT: endpoint,
      WEBHOOK_ALLOW_PRIVATE: 'true',
      LOG_LEVEL: 'info',
    }, { sources: true });
    for (const q of ['video', 'mp3', 'video.dlq', 'mp3.dlq'] as const) await (await getBroker()).purge(q);
    user = await newUser(stack);
  });
  afterAll(async () => {
    await stack.close();
    await smtp?.close();
    hooks.close();
  });

  it('when a video is uploaded with a callback URL, then upload, both events, the conversion, the email and the webhook are spans of one trace', async () => {
    await flushTracing();
    spans.length = 0; // this upload's spans only
    const mailsBefore = smtp?.received.length ?? 0;
    const hooksBefore = hooked;
    const res = await fetch(`${stack.url}/upload/`, { method: 'POST', headers: user.auth, body: videoForm(readFixture('mp4'), 'clip.mp4', { callbackUrl: hooksUrl }) });
    expect(res.status).toBe(202);
    const { jobId } = (await res.json()) as { jobId: string };
    await eventually(async () => (hooked > hooksBefore ? true : undefined), 60_000, 'the webhook');
    if (smtp) await eventually(async () => (smtp!.received.length > mailsBefore ? true : undefined), 30_000, 'the email');

    const expected = ['upload POST /', 'video publish', 'convert POST /', 'transcode', 'mp3 publish', 'notify POST *', 'send mail', 'webhook'];
    const trace = await eventually(async () => {
      await flushTracing();
      const upload = spans.find((s) => s.name === 'upload POST /' && spans.some((t) => t.traceId === s.traceId && t.name === 'webhook'));
      const all = upload && spans.filter((s) => s.traceId === upload.traceId);
      return all && expected.every((n) => all.some((s) => s.name === n)) ? all : undefined;
    }, 20_000, 'the whole trace at the receiver').catch((err: unknown) => {
      throw new Error(`${(err as Error).message}; received: ${spans.map((s) => `${s.name} ${s.traceId.slice(0, 6)}/${s.spanId.slice(0, 6)}<${(s.parentSpanId ?? '').slice(0, 6)}`).join(', ')}`);
    });

    const one = (spanName: string) => {
      const found = trace.filter((s) => s.name === spanName);
      expect(found, spanName).toHaveLength(1);
      return found[0]!;
    };
    const parentOf = (spanName: string) => trace.find((s) => s.spanId === one(spanName).parentSpanId)?.name;
    expect(one('upload POST /').parentSpanId || undefined).toBeUndefined(); // the trace starts at the upload
    expect(parentOf('video publish')).toBe('upload POST /');
    expect(parentOf('convert POST /')).toBe('video publish');
    expect(parentOf('transcode')).toBe('convert POST /');
    expect(parentOf('mp3 publish')).toBe('convert POST /');
    expect(parentOf('notify POST *')).toBe('mp3 publish');
    expect(parentOf('send mail')).toBe('notify POST *');
    expect(parentOf('webhook')).toBe('notify POST *');
    expect(one('upload POST /').kind).toBe(2); // SERVER
    expect(one('video publish').kind).toBe(4); // PRODUCER
    expect(otlpPaths.every((p) => p === 'POST /v1/traces application/json')).toBe(true);

    // The log lines of this job, from all three functions, carry the trace id.
    const lines = logLines.filter((l) => l.jobId === jobId);
    for (const msg of ['video queued', 'converted']) {
      expect(lines.find((l) => l.msg === msg), msg).toMatchObject({ traceId: trace[0]!.traceId, spanId: expect.any(String) });
    }
    expect(lines.find((l) => typeof l.msg === 'string' && l.msg.startsWith('email'))?.traceId).toBe(trace[0]!.traceId);
  });
});

describe('tracing off', () => {
  // prom-client itself requires @opentelemetry/api (its CPU counter can carry exemplars): only the API,
  // a few small modules. The SDK and the exporter are what tracing loads, and only when it is on.
  it('when OTEL_EXPORTER_OTLP_ENDPOINT is unset, then neither the OpenTelemetry SDK nor its exporter is loaded with the functions', () => {
    const root = path.resolve(__dirname, '..');
    const script = "require('./functions/all'); require('./lib/http/serve');" +
      "const loaded = Object.keys(require.cache); console.log(JSON.stringify({ sdk: loaded.filter((k) => /@opentelemetry\\/(?!api\\/)/.test(k)), prom: loaded.some((k) => k.includes('/prom-client/')) }))";
    const run = spawnSync(process.execPath, ['--import', 'tsx', '-e', script], { cwd: root, encoding: 'utf8', env: { PATH: process.env.PATH, LOG_LEVEL: 'silent' } });
    expect(run.status, run.stderr).toBe(0);
    expect(JSON.parse(run.stdout.trim().split('\n').at(-1)!)).toEqual({ sdk: [], prom: true }); // prom: the check sees node_modules at all
  });
});
