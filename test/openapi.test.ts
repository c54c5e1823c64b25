// docs/openapi.json against the running service: every answer the tests provoke must be a documented
// status of its operation, with a documented content type, and its JSON body must validate against
// the documented schema (ajv, JSON Schema 2020-12 as OpenAPI 3.1 uses). Every operation must be
// exercised, so a route added without its description fails here too.
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import Ajv2020 from 'ajv/dist/2020';
import addFormats from 'ajv-formats';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { conversionFailed, maintenanceTick, videoUploaded } from '../lib/messaging/events';
import { mintDownloadLink } from '../lib/auth/links';
import { readFixture } from './fixtures';
import { toHttp } from './support/events';
import { freePort } from './support/net';
import { eventually, newUser, startStack, videoForm, type Stack, type TestUser } from './support/stack';
import { makeTaggedMp3s, storeDoneJob } from './support/tagged-mp3';

interface Operation {
  responses: Record<string, ResponseDoc | { $ref: string }>;
}
interface ResponseDoc {
  content?: Record<string, { schema: object }>;
  headers?: Record<string, { required?: boolean }>;
}
type Doc = { openapi: string; paths: Record<string, Record<string, Operation>>; components: { responses: Record<string, ResponseDoc> } };

const docFile = path.join(__dirname, '../docs/openapi.json');
const doc = JSON.parse(fs.readFileSync(docFile, 'utf8')) as Doc;
const ajv = new Ajv2020({ strict: false, allErrors: true });
addFormats(ajv);
ajv.addSchema(doc, 'openapi.json');

const methods = ['get', 'post', 'put', 'patch', 'delete', 'head', 'options'];
const operations = Object.entries(doc.paths).flatMap(([p, item]) => Object.keys(item).filter((m) => methods.includes(m)).map((m) => `${m.toUpperCase()} ${p}`));
const covered = new Set<string>();
const pointer = (...parts: string[]) => parts.map((p) => p.replace(/~/g, '~0').replace(/\//g, '~1')).join('/');

/** Checks one real answer against the operation `METHOD /template`; returns the parsed JSON body. */
async function conforms(operation: string, res: Response): Promise<unknown> {
  const [method, template] = operation.split(' ') as [string, string];
  const op = doc.paths[template]?.[method.toLowerCase()];
  expect(op, `${operation} is not in the document`).toBeDefined();
  covered.add(operation);
  const status = String(res.status);
  let response = op!.responses[status];
  expect(response, `${operation} answered ${status}, which the document does not list`).toBeDefined();
  let at = `openapi.json#/${pointer('paths', template, method.toLowerCase(), 'responses', status)}`;
  if ('$ref' in response!) {
    const name = response.$ref.split('/').at(-1)!;
    at = `openapi.json#/${pointer('components', 'responses', name)}`;
    response = doc.components.responses[name]!;
  }
  const text = await res.text();
  const mediaType = res.headers.get('content-type')?.split(';')[0]?.trim();
  if (!response.content) {
    expect(text, `${operation} ${status} has a body the document does not describe`).toBe('');
    return undefined;
  }
  expect(Object.keys(response.content), `${operation} ${status}: content type ${mediaType}`).toContain(mediaType);
  for (const [name, header] of Object.entries(response.headers ?? {})) {
    if (header.required) expect(res.headers.get(name), `${operation} ${status}: header ${name}`).not.toBeNull();
  }
  if (mediaType !== 'application/json') return text;
  const body = JSON.parse(text) as unknown;
  const validate = ajv.getSchema(`${at}/${pointer('content', 'application/json', 'schema')}`)!;
  expect(validate(body), `${operation} ${status}: ${ajv.errorsText(validate.errors)} in ${text}`).toBe(true);
  return body;
}

describe('the OpenAPI document', () => {
  let stack: Stack;
  let user: TestUser;
  let doneJob: string;
  let origin: http.Server;
  const call = (p: string, init?: RequestInit) => fetch(`${stack.url}${p}`, init);
  // convert and notify listen on the stack's loopback-only port (as with npm start).
  const callInternal = (p: string, init?: RequestInit) => fetch(`${stack.internalUrl}${p}`, init);
  const json = (body: unknown) => ({ method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });

  beforeAll(async () => {
    stack = await startStack({ MAX_UPLOAD_BYTES: '100000', IMPORT_ALLOW_PRIVATE: '127.0.0.1', WEBHOOK_ALLOW_PRIVATE: 'true' }, { sources: true });
    user = await newUser(stack);
    origin = http.createServer((_req, res) => res.writeHead(200).end(readFixture('mp4')));
    await new Promise<void>((r) => origin.listen(0, '127.0.0.1', r));
  });
  afterAll(async () => {
    await stack.close();
    origin.close();
  });

  it('when it is read, then it is OpenAPI 3.1 and its schemas compile', () => {
    expect(doc.openapi).toMatch(/^3\.1\./);
    for (const op of operations) {
      const [method, template] = op.split(' ') as [string, string];
      for (const [status, r] of Object.entries(doc.paths[template]![method.toLowerCase()]!.responses)) {
        const schema = 'content' in r ? r.content?.['application/json']?.schema : undefined;
        if (schema) expect(ajv.getSchema(`openapi.json#/${pointer('paths', template, method.toLowerCase(), 'responses', status, 'content', 'application/json', 'schema')}`), `${op} ${status}`).toBeTypeOf('function');
      }
    }
  });

  it('when the stack serves /openapi.json and /healthz, then both are as described', async () => {
    expect(await conforms('GET /openapi.json', await call('/openapi.json'))).toEqual(doc);
    await conforms('GET /healthz', await call('/healthz'));
  });

  it('when auth is called, then every answer is as described', async () => {
    const email = `oa_${randomBytes(4).toString('hex')}@example.com`;
    await conforms('POST /auth/signup', await call('/auth/signup', json({ email, password: 'long enough pw' })));
    await conforms('POST /auth/signup', await call('/auth/signup', json({ email, password: 'long enough pw' }))); // 409
    await conforms('POST /auth/signup', await call('/auth/signup', json({ email: 'nope', password: 'x' }))); // 400
    await conforms('POST /auth/signup', await call('/auth/signup', { method: 'POST', body: 'text' })); // 415
    await conforms('POST /auth/login', await call('/auth/login', json({ email, password: 'long enough pw' })));
    await conforms('POST /auth/login', await call('/auth/login', json({ email, password: 'wrong password' }))); // 401
    await conforms('POST /auth/login', await call('/auth/login', { method: 'POST' })); // 400
    await conforms('POST /auth/validate', await call('/auth/validate', { method: 'POST', headers: user.auth }));
    await conforms('POST /auth/validate', await call('/auth/validate', { method: 'POST' })); // 401
    await conforms('GET /auth/.well-known/jwks.json', await call('/auth/.well-known/jwks.json'));
    await conforms('GET /auth/webhook-secret', await call('/auth/webhook-secret', { headers: user.auth }));
    await conforms('GET /auth/webhook-secret', await call('/auth/webhook-secret')); // 401
    await conforms('POST /auth/webhook-secret', await call('/auth/webhook-secret', { method: 'POST', headers: user.auth }));
  });

  it('when upload is called, then every answer is as described', async () => {
    // Its webhook goes to a port nobody listens on: the job's status then shows a failed attempt and the next one.
    const callbackUrl = `http://127.0.0.1:${await freePort()}/hook`;
    const accepted = (await conforms('POST /upload/', await call('/upload/', { method: 'POST', headers: user.auth, body: videoForm(readFixture('mp4'), 'clip.mp4', { bitrate: '128', callbackUrl }) }))) as { jobId: string };
    doneJob = accepted.jobId;
    await conforms('POST /upload/', await call('/upload/', { method: 'POST', headers: user.auth, body: videoForm(Buffer.alloc(0), 'empty.mp4') })); // 400
    await conforms('POST /upload/', await call('/upload/', { method: 'POST', body: videoForm(readFixture('mp4'), 'clip.mp4') })); // 401
    await conforms('POST /upload/', await call('/upload/', { method: 'POST', headers: user.auth, body: videoForm(readFixture('text'), 'a.txt', {}, 'text/plain') })); // 415
    await conforms('POST /upload/', await call('/upload/?filename=big.mp4', { method: 'POST', headers: { ...user.auth, 'content-type': 'video/mp4' }, body: Buffer.alloc(2 * 1024 * 1024) })); // 413
    const importing = { method: 'POST', headers: { ...user.auth, 'content-type': 'application/json' } };
    const imported = (await conforms('POST /upload/', await call('/upload/', { ...importing, body: JSON.stringify({ url: `http://127.0.0.1:${(origin.address() as AddressInfo).port}/v.mp4`, bitrate: 64 }) }))) as { jobId: string; status: string };
    expect(imported.status).toBe('importing');
    await conforms('POST /upload/', await call('/upload/', { ...importing, body: JSON.stringify({ url: 'http://10.0.0.1/v.mp4' }) })); // 400
    // tus discovery: this stack may or may not offer it; either answer must be described.
    const tus = await call('/upload/files', { method: 'OPTIONS' });
    await conforms('OPTIONS /upload/files', tus);
  });

  it('when tus is called, then every answer is as described', async () => {
    const clip = readFixture('mp4');
    const tusHeaders = (length: number, metadata: Record<string, string>) => ({
      ...user.auth,
      'tus-resumable': '1.0.0',
      'upload-length': String(length),
      'upload-metadata': Object.entries(metadata).map(([k, v]) => `${k} ${Buffer.from(v).toString('base64')}`).join(','),
    });
    const created = await call('/upload/files', { method: 'POST', headers: tusHeaders(clip.length, { filename: 'tus.mp4' }) });
    await conforms('POST /upload/files', created); // 201
    const location = created.headers.get('location')!;
    await conforms('POST /upload/files', await call('/upload/files', { method: 'POST', headers: tusHeaders(clip.length, { filename: 'tus.mp4', bitrate: '1000' }) })); // 400
    await conforms('POST /upload/files', await call('/upload/files', { method: 'POST', headers: { 'tus-resumable': '1.0.0', 'upload-length': '10' } })); // 401
    await conforms('POST /upload/files', await call('/upload/files', { method: 'POST', headers: tusHeaders(stack.config.limits.uploadBytes + 1, { filename: 'big.mp4' }) })); // 413
    const at = new URL(location, stack.url).pathname;
    await conforms('HEAD /upload/files/{uploadId}', await call(at, { method: 'HEAD', headers: { ...user.auth, 'tus-resumable': '1.0.0' } }));
    const patch = (offset: number, body: Buffer) => call(at, {
      method: 'PATCH',
      headers: { ...user.auth, 'tus-resumable': '1.0.0', 'upload-offset': String(offset), 'content-type': 'application/offset+octet-stream' },
      body,
    });
    await conforms('PATCH /upload/files/{uploadId}', await patch(5, clip)); // 409
    await conforms('PATCH /upload/files/{uploadId}', await patch(0, clip)); // 204, the job is queued
    await conforms('HEAD /upload/files/{uploadId}', await call('/upload/files/AAAAAAAAAAAAAAAAAAAAAA', { method: 'HEAD', headers: { ...user.auth, 'tus-resumable': '1.0.0' } })); // 404
    const doomed = await call('/upload/files', { method: 'POST', headers: tusHeaders(clip.length, { filename: 'gone.mp4' }) });
    const doomedAt = new URL(doomed.headers.get('location')!, stack.url).pathname;
    await conforms('DELETE /upload/files/{uploadId}', await call(doomedAt, { method: 'DELETE', headers: { ...user.auth, 'tus-resumable': '1.0.0' } }));
    await conforms('DELETE /upload/files/{uploadId}', await call(doomedAt, { method: 'DELETE', headers: { ...user.auth, 'tus-resumable': '1.0.0' } })); // 404
  });

  it('when download is called, then every answer is as described', async () => {
    await eventually(async () => ((await (await call(`/download/jobs/${doneJob}`, { headers: user.auth })).json()) as { status: string }).status === 'done' || undefined, 60_000, 'the job to be done');
    await conforms('GET /download/jobs', await call('/download/jobs?limit=5', { headers: user.auth }));
    await conforms('GET /download/jobs', await call('/download/jobs?cursor=nonsense', { headers: user.auth })); // 400
    await conforms('GET /download/jobs', await call('/download/jobs')); // 401
    const webhookTried = async () => ((await (await call(`/download/jobs/${doneJob}`, { headers: user.auth })).json()) as { webhook?: { attempts: number } }).webhook?.attempts === 1 || undefined;
    await eventually(webhookTried, 30_000, 'the webhook\'s first attempt');
    const job = (await conforms('GET /download/jobs/{id}', await call(`/download/jobs/${doneJob}`, { headers: user.auth }))) as { webhook: unknown };
    expect(job.webhook).toMatchObject({ state: 'pending', attempts: 1, nextAttemptAt: expect.any(String), lastError: expect.any(String) });
    await conforms('GET /download/jobs/{id}', await call('/download/jobs/AAAAAAAAAAAAAAAAAAAAAA', { headers: user.auth })); // 404
    const whole = await call(`/download/jobs/${doneJob}/mp3`, { headers: user.auth });
    const etag = whole.headers.get('etag')!;
    await conforms('GET /download/jobs/{id}/mp3', whole);
    await conforms('GET /download/jobs/{id}/mp3', await call(`/download/jobs/${doneJob}/mp3`, { headers: { ...user.auth, range: 'bytes=0-99' } })); // 206
    await conforms('GET /download/jobs/{id}/mp3', await call(`/download/jobs/${doneJob}/mp3`, { headers: { ...user.auth, 'if-none-match': etag } })); // 304
    await conforms('GET /download/jobs/{id}/mp3', await call(`/download/jobs/${doneJob}/mp3`, { headers: { ...user.auth, range: 'bytes=99999999-' } })); // 416
    await conforms('GET /download/jobs/{id}/mp3', await call(`/download/jobs/${doneJob}/mp3`)); // 401

    const link = mintDownloadLink(doneJob, stack.config);
    await conforms('GET /download/links/{token}', await call(new URL(link.url).pathname));
    const expired = mintDownloadLink(doneJob, { ...stack.config, links: { ...stack.config.links, ttlSeconds: -60 } });
    await conforms('GET /download/links/{token}', await call(new URL(expired.url).pathname)); // 410
    await conforms('GET /download/links/{token}', await call('/download/links/not.a.token')); // 404

    // A job the converter has not reached yet: stop the sources, upload, ask for its MP3.
    await Promise.all(stack.sources.map((s) => s.stop()));
    stack.sources = [];
    const queued = (await (await call('/upload/', { method: 'POST', headers: user.auth, body: videoForm(readFixture('mp4'), 'later.mp4') })).json()) as { jobId: string };
    await conforms('GET /download/jobs/{id}/mp3', await call(`/download/jobs/${queued.jobId}/mp3`, { headers: user.auth })); // 409
    await conforms('DELETE /download/jobs/{id}', await call(`/download/jobs/${queued.jobId}`, { method: 'DELETE', headers: user.auth }));
    await conforms('DELETE /download/jobs/{id}', await call(`/download/jobs/${queued.jobId}`, { method: 'DELETE', headers: user.auth })); // 404
  }, 90_000);

  it('when the podcast feed is called, then every answer is as described', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'oa-feed-'));
    const { tagged, bare } = makeTaggedMp3s(dir);
    fs.rmSync(dir, { recursive: true });
    const withTag = await storeDoneJob(user, tagged, 'tagged.mp4');
    const without = await storeDoneJob(user, bare, 'bare.mp4');
    await conforms('GET /download/feed', await call('/download/feed', { headers: user.auth })); // 404: none yet
    await conforms('DELETE /download/feed', await call('/download/feed', { method: 'DELETE', headers: user.auth })); // 404
    await conforms('POST /download/feed', await call('/download/feed', { method: 'POST' })); // 401
    await conforms('GET /download/feed', await call('/download/feed')); // 401
    await conforms('DELETE /download/feed', await call('/download/feed', { method: 'DELETE' })); // 401
    const { url } = (await conforms('POST /download/feed', await call('/download/feed', { method: 'POST', headers: user.auth }))) as { url: string };
    await conforms('GET /download/feed', await call('/download/feed', { headers: user.auth }));
    const feed = new URL(url).pathname;
    const rss = await call(feed);
    const etag = rss.headers.get('etag')!;
    expect(await conforms('GET /download/feed/{token}', rss)).toContain(`${withTag}.mp3`);
    await conforms('GET /download/feed/{token}', await call(feed, { headers: { 'if-none-match': etag } })); // 304
    await conforms('GET /download/feed/{token}', await call(`${feed.slice(0, -1)}!`)); // 404
    const episode = `${feed}/${withTag}.mp3`;
    await conforms('GET /download/feed/{token}/{jobId}.mp3', await call(episode));
    await conforms('GET /download/feed/{token}/{jobId}.mp3', await call(episode, { headers: { range: 'bytes=0-99' } })); // 206
    await conforms('GET /download/feed/{token}/{jobId}.mp3', await call(episode, { headers: { 'if-none-match': (await call(episode, { method: 'HEAD' })).headers.get('etag')! } })); // 304
    await conforms('GET /download/feed/{token}/{jobId}.mp3', await call(episode, { headers: { range: 'bytes=99999999-' } })); // 416
    await conforms('GET /download/feed/{token}/{jobId}.mp3', await call(`${feed}/AAAAAAAAAAAAAAAAAAAAAA.mp3`)); // 404
    await conforms('GET /download/feed/{token}/{jobId}/cover', await call(`${feed}/${withTag}/cover`));
    await conforms('GET /download/feed/{token}/{jobId}/cover', await call(`${feed}/${without}/cover`)); // 404
    const chapters = await call(`${feed}/${withTag}/chapters.json`);
    const validate = ajv.getSchema('openapi.json#/components/schemas/Chapters')!;
    expect(validate(JSON.parse(await chapters.clone().text())), ajv.errorsText(validate.errors)).toBe(true);
    await conforms('GET /download/feed/{token}/{jobId}/chapters.json', chapters);
    await conforms('GET /download/feed/{token}/{jobId}/chapters.json', await call(`${feed}/${without}/chapters.json`)); // 404
    await conforms('DELETE /download/feed', await call('/download/feed', { method: 'DELETE', headers: user.auth }));
    await conforms('GET /download/jobs/{id}/cover', await call(`/download/jobs/${withTag}/cover`, { headers: user.auth }));
    await conforms('GET /download/jobs/{id}/cover', await call(`/download/jobs/${without}/cover`, { headers: user.auth })); // 404
    await conforms('GET /download/jobs/{id}/cover', await call(`/download/jobs/${withTag}/cover`)); // 401
    expect(await conforms('GET /download/jobs/{id}/chapters', await call(`/download/jobs/${withTag}/chapters`, { headers: user.auth }))).toMatchObject({ chapters: [{ startTime: 0 }, { startTime: 1.5 }] });
    await conforms('GET /download/jobs/{id}/chapters', await call('/download/jobs/AAAAAAAAAAAAAAAAAAAAAA/chapters', { headers: user.auth })); // 404
    await conforms('GET /download/jobs/{id}/chapters', await call(`/download/jobs/${withTag}/chapters`)); // 401
  });

  it('when the event receivers are called, then every answer is as described', async () => {
    const data = { jobId: 'AAAAAAAAAAAAAAAAAAAAAB', owner: user.id, email: user.email, filename: 'x.mp4' };
    const video = toHttp(videoUploaded({ ...data, videoBlobId: 'none', options: {} }, 'oa-1'));
    await conforms('POST /convert/', await callInternal('/convert/', { method: 'POST', ...video })); // unknown job: done with it
    await conforms('POST /convert/', await callInternal('/convert/', json({ not: 'an event' }))); // 400
    const failed = toHttp(conversionFailed({ ...data, reason: 'corrupt', message: 'the file is damaged' }));
    await conforms('POST /notify/', await callInternal('/notify/', { method: 'POST', ...failed }));
    await conforms('POST /notify/', await callInternal('/notify/', json({ not: 'an event' }))); // 400
    await conforms('POST /notify/webhooks', await callInternal('/notify/webhooks', { method: 'POST', ...toHttp(maintenanceTick()) }));
    await conforms('POST /notify/webhooks', await callInternal('/notify/webhooks', json({ not: 'an event' }))); // 400
  });

  it('when all of the above ran, then every operation was exercised (tus ones only where tus is offered)', async () => {
    const tusOffered = (await call('/upload/files', { method: 'OPTIONS' })).headers.has('tus-resumable');
    const expected = operations.filter((op) => tusOffered || !op.includes('/upload/files') || op.startsWith('OPTIONS'));
    expect(expected.filter((op) => !covered.has(op))).toEqual([]);
  });
});
