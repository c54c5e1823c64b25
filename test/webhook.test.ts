// Webhooks: an upload with a callbackUrl gets one signed POST when its job ends (Standard Webhooks
// headers, HMAC-SHA256 with the user's secret from /auth/webhook-secret), retried on the webhook tick
// while the receiver fails, up to the schedule's end, once however often the event is redelivered;
// private targets refused unless allowed; a failing or silent receiver holds no one else's email.
import { createHmac, timingSafeEqual } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import Ajv2020 from 'ajv/dist/2020';
import addFormats from 'ajv-formats';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isPrivateAddress, parseCallbackUrl } from '../lib/core/callback-url';
import { maintenanceTick } from '../lib/messaging/events';
import { getBroker } from '../lib/messaging/queue';
import { startSource } from '../lib/messaging/source';
import { getDb } from '../lib/storage/db';
import { readFixture } from './fixtures';
import { toHttp } from './support/events';
import { freePort } from './support/net';
import { backends, eventually, newUser, startStack, videoForm, type Stack, type TestUser } from './support/stack';

// The body as docs/openapi.json describes it (webhooks.jobOutcome → WebhookEvent).
const ajv = new Ajv2020({ strict: false });
addFormats(ajv);
ajv.addSchema(JSON.parse(fs.readFileSync(path.join(__dirname, '../docs/openapi.json'), 'utf8')) as object, 'openapi.json');
const validateEvent = ajv.getSchema('openapi.json#/components/schemas/WebhookEvent')!;

interface JobView { status: string; webhook?: { state: string; attempts: number; nextAttemptAt?: string; lastResponseStatus?: number; lastError?: string } }

const jobOf = async (stack: Stack, user: TestUser, jobId: string) => (await (await fetch(`${stack.url}/download/jobs/${jobId}`, { headers: user.auth })).json()) as JobView;

/** One webhook tick, as the PingSource (or npm start's timer) sends it; resolves when its attempts are made. */
async function tick(stack: Stack): Promise<Record<string, number>> {
  const res = await fetch(`${stack.internalUrl}/notify/webhooks`, { method: 'POST', ...toHttp(maintenanceTick()) });
  expect(res.status).toBe(200);
  return ((await res.json()) as { webhooks: Record<string, number> }).webhooks;
}

interface Received {
  headers: http.IncomingHttpHeaders;
  body: string;
}

/** The verification a receiver does (the README's snippet): constant-time compare of v1 signatures. */
function verify(secret: string, headers: http.IncomingHttpHeaders, body: string): boolean {
  const id = headers['webhook-id'] as string;
  const timestamp = headers['webhook-timestamp'] as string;
  if (Math.abs(Date.now() / 1000 - Number(timestamp)) > 300) return false;
  const key = Buffer.from(secret.split('_')[1]!, 'base64');
  const expected = createHmac('sha256', key).update(`${id}.${timestamp}.${body}`).digest();
  return (headers['webhook-signature'] as string).split(' ').some((s) => {
    const [version, sig] = s.split(',');
    const given = Buffer.from(sig ?? '', 'base64');
    return version === 'v1' && given.length === expected.length && timingSafeEqual(given, expected);
  });
}

describe('webhooks', () => {
  let stack: Stack;
  let receiver: http.Server;
  let receiverUrl: string;
  let user: TestUser;
  let secret: string;
  const received: Received[] = [];
  /** Status codes the receiver answers, in turn; 200 once used up. */
  const answers: number[] = [];

  beforeAll(async () => {
    receiver = http.createServer((req, res) => {
      let body = '';
      req.on('data', (c: Buffer) => { body += c.toString(); });
      req.on('end', () => {
        received.push({ headers: req.headers, body });
        res.writeHead(req.url === '/down' ? 503 : answers.shift() ?? 200).end();
      });
    });
    await new Promise<void>((resolve) => receiver.listen(0, '127.0.0.1', resolve));
    receiverUrl = `http://127.0.0.1:${(receiver.address() as { port: number }).port}`;
    // Two retries, each due at once: the ticks this test sends decide when they happen.
    stack = await startStack({ WEBHOOK_ALLOW_PRIVATE: 'true', WEBHOOK_RETRY_SCHEDULE: '0s,0s' }, { sources: true });
    user = await newUser(stack);
  });
  afterAll(async () => {
    await stack.close();
    receiver.close();
  });

  const upload = async (fixture: 'mp4' | 'no-audio', path: string) => {
    const res = await fetch(`${stack.url}/upload/`, { method: 'POST', headers: user.auth, body: videoForm(readFixture(fixture), `${fixture}.mp4`, { callbackUrl: `${receiverUrl}${path}` }) });
    expect(res.status).toBe(202);
    return ((await res.json()) as { jobId: string }).jobId;
  };

  it('when a user asks for their webhook secret, then the same one comes back until they rotate it', async () => {
    const get = async (method: string) => {
      const res = await fetch(`${stack.url}/auth/webhook-secret`, { method, headers: user.auth });
      expect(res.status).toBe(200);
      return ((await res.json()) as { webhookSecret: string }).webhookSecret;
    };
    const first = await get('GET');
    expect(first).toMatch(/^whsec_[A-Za-z0-9+/]{43}=$/);
    expect(await get('GET')).toBe(first);
    secret = await get('POST');
    expect(secret).not.toBe(first);
    expect(await get('GET')).toBe(secret);
    expect((await fetch(`${stack.url}/auth/webhook-secret`)).status).toBe(401);
  });

  it('when a job with a callbackUrl is done, then one signed POST carries its id, status and MP3', async () => {
    const jobId = await upload('mp4', '/done');
    const hook = await eventually(async () => received.find((r) => r.headers['webhook-id'] === `${jobId}.succeeded`), 60_000, 'the webhook');
    expect(verify(secret, hook.headers, hook.body)).toBe(true);
    expect(verify(secret, hook.headers, hook.body.replace('done', 'dome'))).toBe(false);
    const body = JSON.parse(hook.body) as Record<string, unknown>;
    expect(validateEvent(body), ajv.errorsText(validateEvent.errors)).toBe(true);
    expect(body).toMatchObject({ type: 'job.done', jobId, status: 'done', filename: 'mp4.mp4', mp3: { url: `${stack.config.downloadUrl}/jobs/${jobId}/mp3` } });
    const link = (body.mp3 as { link: string }).link;
    const mp3 = await fetch(link);
    expect(mp3.status).toBe(200);
    expect(mp3.headers.get('content-type')).toBe('audio/mpeg');
  });

  it('when a job fails, then the webhook says why', async () => {
    const jobId = await upload('no-audio', '/failed');
    const hook = await eventually(async () => received.find((r) => r.headers['webhook-id'] === `${jobId}.failed`), 60_000, 'the webhook');
    expect(verify(secret, hook.headers, hook.body)).toBe(true);
    expect(validateEvent(JSON.parse(hook.body)), ajv.errorsText(validateEvent.errors)).toBe(true);
    expect(JSON.parse(hook.body)).toMatchObject({ type: 'job.failed', jobId, status: 'failed', error: expect.stringMatching(/no audio/) });
  });

  it('when the receiver fails, then notify makes one attempt and each retry is made by a tick until it lands, and then never again', async () => {
    answers.push(503, 500);
    const jobId = await upload('mp4', '/retry');
    const deliveries = () => received.filter((r) => r.headers['webhook-id'] === `${jobId}.succeeded`);
    await eventually(async () => ((await jobOf(stack, user, jobId)).webhook?.attempts === 1 || undefined), 60_000, 'the first attempt');
    expect((await jobOf(stack, user, jobId)).webhook).toEqual({ state: 'pending', attempts: 1, nextAttemptAt: expect.any(String), lastAttemptAt: expect.any(String), lastResponseStatus: 503, lastError: 'the receiver answered 503' });
    await new Promise((r) => setTimeout(r, 500));
    expect(deliveries()).toHaveLength(1); // nothing retries inside notify's request
    await tick(stack);
    expect(deliveries()).toHaveLength(2);
    expect((await jobOf(stack, user, jobId)).webhook).toMatchObject({ state: 'pending', attempts: 2, lastResponseStatus: 500 });
    await tick(stack);
    expect(deliveries()).toHaveLength(3);
    const delivered = (await jobOf(stack, user, jobId)).webhook!;
    expect(delivered).toMatchObject({ state: 'delivered', attempts: 3, lastResponseStatus: 200 });
    expect(delivered).not.toHaveProperty('nextAttemptAt');
    expect(delivered).not.toHaveProperty('lastError');
    await tick(stack);
    // The same event delivered again (a broker redelivery): no fourth POST.
    const { conversionSucceeded, toAmqp } = await import('../lib/messaging/events');
    const job = (await (await fetch(`${stack.url}/download/jobs/${jobId}`, { headers: user.auth })).json()) as { mp3: { size: number; durationSeconds: number } };
    const { toCloudEventRequest } = await import('../lib/messaging/source');
    const event = conversionSucceeded({ jobId, owner: user.id, email: user.email, filename: 'mp4.mp4', mp3BlobId: jobId, durationSeconds: job.mp3.durationSeconds, bytes: job.mp3.size });
    const req = toCloudEventRequest(toAmqp(event), { queue: 'mp3' });
    const again = await fetch(`${stack.internalUrl}/notify/`, { method: 'POST', headers: req.headers, body: req.body });
    expect(again.status).toBe(200);
    expect(await again.json()).toMatchObject({ webhook: 'duplicate' });
    await new Promise((r) => setTimeout(r, 500));
    expect(deliveries()).toHaveLength(3);
    expect(new Set(deliveries().map((d) => d.headers['webhook-id'])).size).toBe(1); // one id: receivers can dedupe too
  });

  it.each([
    ['http://127.0.0.1/hook'],
    ['http://localhost:8080/hook'],
    ['http://10.1.2.3/hook'],
    ['http://169.254.169.254/latest/meta-data'],
    ['http://[::1]/hook'],
    ['http://[::ffff:192.168.0.1]/hook'],
    ['ftp://example.com/hook'],
    ['http://user:pw@example.com/hook'],
  ])('when the callbackUrl is %s and private targets are not allowed, then it is refused', (url) => {
    expect(() => parseCallbackUrl(url, { allowPrivate: false })).toThrow(/callbackUrl:/);
  });

  it('when an address is public, then it is allowed; private ranges are not', () => {
    expect(parseCallbackUrl('https://hooks.example.com/x', { allowPrivate: false })).toBe('https://hooks.example.com/x');
    expect(isPrivateAddress('93.184.216.34')).toBe(false);
    expect(isPrivateAddress('2606:2800:220:1::1')).toBe(false);
    for (const a of ['172.20.0.1', '100.64.0.1', 'fd00::1', 'fe80::1', '0.0.0.0']) expect(isPrivateAddress(a), a).toBe(true);
  });

  it('when an upload gives a malformed callbackUrl, then 400 names it', async () => {
    const res = await fetch(`${stack.url}/upload/`, { method: 'POST', headers: user.auth, body: videoForm(readFixture('mp4'), 'x.mp4', { callbackUrl: 'not a url' }) });
    expect(res.status).toBe(400);
    expect(((await res.json()) as { error: { message: string } }).error.message).toMatch(/^callbackUrl:/);
  });
});

describe.each(backends())('webhook retries on $name backends', ({ env }) => {
  let stack: Stack;
  let down: http.Server;
  const seen: string[] = [];

  beforeAll(async () => {
    down = http.createServer((req, res) => { seen.push(String(req.headers['webhook-id'])); req.resume(); res.writeHead(503).end(); });
    await new Promise<void>((resolve) => down.listen(0, '127.0.0.1', resolve));
    stack = await startStack({ ...env, WEBHOOK_ALLOW_PRIVATE: 'true', WEBHOOK_RETRY_SCHEDULE: '0s,0s' }, { sources: true });
  });
  afterAll(async () => {
    await stack.close();
    down.close();
  });

  it('when the receiver keeps failing, then it gives up at the schedule\'s end, every attempt recorded, and ticks at once (as from several replicas) never make one attempt twice', async () => {
    const user = await newUser(stack);
    const callbackUrl = `http://127.0.0.1:${(down.address() as { port: number }).port}/down`;
    const res = await fetch(`${stack.url}/upload/`, { method: 'POST', headers: user.auth, body: videoForm(readFixture('mp4'), 'a.mp4', { callbackUrl }) });
    const { jobId } = (await res.json()) as { jobId: string };
    const attempts = () => seen.filter((id) => id === `${jobId}.succeeded`).length;
    await eventually(async () => ((await jobOf(stack, user, jobId)).webhook?.attempts === 1 || undefined), 60_000, 'the first attempt');
    for (let i = 0; i < 3; i++) await Promise.all([tick(stack), tick(stack), tick(stack), tick(stack)]);
    expect(attempts()).toBe(3); // the first, then the schedule's two retries
    const failed = (await jobOf(stack, user, jobId)).webhook!;
    expect(failed).toMatchObject({ state: 'failed', attempts: 3, lastResponseStatus: 503, lastError: 'the receiver answered 503' });
    expect(failed).not.toHaveProperty('nextAttemptAt');
    const rows = await (await getDb())('webhook_attempts').where({ job_id: jobId }).orderBy('attempt');
    expect(rows.map((a: Record<string, unknown>) => [Number(a.attempt), Number(a.response_status), a.error, Number(a.finished_at) >= Number(a.started_at)]))
      .toEqual([1, 2, 3].map((n) => [n, 503, 'the receiver answered 503', true]));
    await tick(stack);
    expect(attempts()).toBe(3);
  });
});

describe('webhooks beside other users\' mail', () => {
  let stack: Stack;
  let failing: http.Server;
  let silent: http.Server;
  const hits = { failing: 0, silent: 0 };

  beforeAll(async () => {
    failing = http.createServer((req, res) => { hits.failing++; req.resume(); res.writeHead(500).end(); });
    silent = http.createServer((req) => { hits.silent++; req.resume(); }); // accepts, reads, never answers
    for (const s of [failing, silent]) await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve));
    // One retry, an hour later: within this test only notify's own attempts can happen.
    stack = await startStack({ WEBHOOK_ALLOW_PRIVATE: 'true', WEBHOOK_RETRY_SCHEDULE: '1h' }, { sources: true });
  });
  afterAll(async () => {
    await stack.close();
    for (const s of [failing, silent]) {
      s.closeAllConnections();
      s.close();
    }
  });

  it('when one user\'s receivers fail, refuse or never answer, then another user\'s email waits at most one attempt\'s timeout per job ahead of it, and no attempt is repeated in the delivery slot', async () => {
    const mp3Source = stack.sources.pop()!; // hold the outcomes, so the hostile user's are queued ahead
    await mp3Source.stop();
    const [hostile, other] = [await newUser(stack), await newUser(stack)];
    const upload = async (user: TestUser, fields: Record<string, string>) => {
      const res = await fetch(`${stack.url}/upload/`, { method: 'POST', headers: user.auth, body: videoForm(readFixture('mp4'), 'a.mp4', fields) });
      expect(res.status).toBe(202);
      const { jobId } = (await res.json()) as { jobId: string };
      await eventually(async () => ((await jobOf(stack, user, jobId)).status === 'done' || undefined), 60_000, 'the conversion');
      return jobId;
    };
    const port = (s: http.Server) => (s.address() as { port: number }).port;
    const hooks = [`http://127.0.0.1:${port(failing)}/a`, `http://127.0.0.1:${port(failing)}/b`, `http://127.0.0.1:${await freePort()}/refused`, `http://127.0.0.1:${port(silent)}/x`];
    const hostileJobs = [];
    for (const callbackUrl of hooks) hostileJobs.push(await upload(hostile, { callbackUrl }));
    const otherJob = await upload(other, {});

    const started = Date.now();
    stack.sources.push(await startSource(await getBroker(), { ...stack.config.sources.mp3, queue: 'mp3', sink: `${stack.internalUrl}/notify/` }));
    const outbox = path.join(stack.config.dataDir, 'outbox');
    await eventually(async () => (fs.existsSync(outbox) && fs.readdirSync(outbox).some((f) => f.includes(otherJob)) ? true : undefined), 60_000, 'the other user\'s email');
    const waited = Date.now() - started;
    // The bound: each job ahead holds the slot for its email and at most one attempt's timeout.
    expect(waited).toBeLessThan(hooks.length * stack.config.webhooks.timeoutMs + 5000);
    expect(hits).toEqual({ failing: 2, silent: 1 });
    for (const jobId of hostileJobs) {
      const { webhook } = await jobOf(stack, hostile, jobId);
      expect(webhook).toMatchObject({ state: 'pending', attempts: 1, lastError: expect.any(String) });
      const due = Date.parse(webhook!.nextAttemptAt!) - Date.now();
      expect(due).toBeGreaterThan(55 * 60_000); // the schedule's hour
    }
    // Nothing is due for an hour: a tick makes no attempt.
    expect(await tick(stack)).toEqual({ delivered: 0, scheduled: 0, failed: 0, duplicate: 0 });
    expect(hits).toEqual({ failing: 2, silent: 1 });
  }, 180_000);
});
