// Webhooks: an upload with a callbackUrl gets one signed POST when its job ends (Standard Webhooks
// headers, HMAC-SHA256 with the user's secret from /auth/webhook-secret), retried while the receiver
// fails, once however often the event is redelivered; private targets refused unless allowed.
import { createHmac, timingSafeEqual } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import Ajv2020 from 'ajv/dist/2020';
import addFormats from 'ajv-formats';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isPrivateAddress, parseCallbackUrl } from '../lib/core/callback-url';
import { readFixture } from './fixtures';
import { eventually, newUser, startStack, videoForm, type Stack, type TestUser } from './support/stack';

// The body as docs/openapi.json describes it (webhooks.jobOutcome → WebhookEvent).
const ajv = new Ajv2020({ strict: false });
addFormats(ajv);
ajv.addSchema(JSON.parse(fs.readFileSync(path.join(__dirname, '../docs/openapi.json'), 'utf8')) as object, 'openapi.json');
const validateEvent = ajv.getSchema('openapi.json#/components/schemas/WebhookEvent')!;

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
        res.writeHead(answers.shift() ?? 200).end();
      });
    });
    await new Promise<void>((resolve) => receiver.listen(0, '127.0.0.1', resolve));
    receiverUrl = `http://127.0.0.1:${(receiver.address() as { port: number }).port}`;
    stack = await startStack({ WEBHOOK_ALLOW_PRIVATE: 'true', MP3_SOURCE_BACKOFF_DELAY: 'PT0.1S' }, { sources: true });
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

  it('when the receiver fails twice, then the webhook is retried until it lands, and then never sent again', async () => {
    answers.push(503, 500);
    const jobId = await upload('mp4', '/retry');
    const deliveries = () => received.filter((r) => r.headers['webhook-id'] === `${jobId}.succeeded`);
    await eventually(async () => (deliveries().length >= 3 ? true : undefined), 60_000, 'three attempts');
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
