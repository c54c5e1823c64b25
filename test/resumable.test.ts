// Resumable uploads (tus 1.0) through the real upload function, driven by tus-js-client and by hand
// where a test needs a request no well-behaved client sends.
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { getBlobs } from '../lib/storage/blobs';
import { getDb } from '../lib/storage/db';
import { sweepExpired } from '../lib/pipeline/retention';
import { getBroker } from '../lib/messaging/queue';
import { readFixture } from './fixtures';
import { freePort } from './support/net';
import { backends, eventually, newUser, startStack, type Stack, type TestUser } from './support/stack';
import { tusUpload } from './support/tus';

const root = path.resolve(__dirname, '..');
const clip = fs.readFileSync(path.join(root, 'test/fixtures/long-5min.mp4')); // 944 kB, a real video
const tusHeaders = (user: TestUser, more: Record<string, string> = {}) => ({ ...user.auth, 'Tus-Resumable': '1.0.0', ...more });
const meta = (fields: Record<string, string>) => Object.entries(fields).map(([k, v]) => `${k} ${Buffer.from(v).toString('base64')}`).join(',');
const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

describe.each(backends())('resumable uploads on $name backends', ({ env }) => {
  let stack: Stack;
  let alice: TestUser;
  let bob: TestUser;
  const files = () => `${stack.url}/upload/files`;

  beforeAll(async () => {
    stack = await startStack({ ...env, MAX_UPLOAD_BYTES: String(4 * 1024 * 1024) });
    [alice, bob] = await Promise.all([newUser(stack), newUser(stack)]);
  });
  afterAll(async () => {
    await (await getBroker()).purge('video');
    await stack.close();
  });

  const create = (user: TestUser, length: number, metadata = meta({ filename: 'a.mp4' })) =>
    fetch(files(), { method: 'POST', headers: tusHeaders(user, { 'Upload-Length': String(length), 'Upload-Metadata': metadata }) });

  it('when OPTIONS is asked, then it advertises tus 1.0, the extensions and Tus-Max-Size', async () => {
    const res = await fetch(files(), { method: 'OPTIONS' });
    expect(res.status).toBe(204);
    expect(res.headers.get('tus-version')).toContain('1.0.0');
    expect(res.headers.get('tus-extension')!.split(',')).toEqual(expect.arrayContaining(['creation', 'creation-with-upload', 'termination', 'expiration']));
    expect(res.headers.get('tus-max-size')).toBe(String(4 * 1024 * 1024));
  });

  it('when tus-js-client uploads a video, then the final PATCH names the job, which is queued with the same bytes', async () => {
    const done = await tusUpload(clip, { endpoint: files(), token: alice.token, filename: 'Lecture.mp4', metadata: { bitrate: '128' }, chunkSize: 300 * 1024 });
    expect(done.jobId).toMatch(/^[A-Za-z0-9_-]{22}$/);
    expect(done.jobUrl).toBe(`${stack.config.downloadUrl}/jobs/${done.jobId}`);
    const view = await fetch(done.jobUrl!, { headers: alice.auth });
    expect(await view.json()).toMatchObject({ jobId: done.jobId, status: 'queued', filename: 'Lecture.mp4' });
    const job = await (await getDb())('jobs').where({ id: done.jobId }).first();
    expect(JSON.parse(job.options)).toEqual({ bitrate: 128 });
    expect(job.video_sha256).toBe(sha256(clip));
    expect(sha256(await (await getBlobs()).readAll('videos', job.video_blob_id))).toBe(sha256(clip));
  });

  it('when the client aborts at 40 %, then a new client resumes from the stored URL and finishes', async () => {
    const first = await tusUpload(clip, { endpoint: files(), token: alice.token, chunkSize: 100 * 1024, abortAt: (f) => f >= 0.4 });
    expect(first.aborted).toBe(true);
    const head = await fetch(first.url, { method: 'HEAD', headers: tusHeaders(alice) });
    const offset = Number(head.headers.get('upload-offset'));
    expect(offset).toBeGreaterThan(0.3 * clip.length);
    expect(offset).toBeLessThan(clip.length);
    const resumed = await tusUpload(clip, { uploadUrl: first.url, token: alice.token, chunkSize: 100 * 1024 });
    expect(resumed.jobId).toBeDefined();
    const job = await (await getDb())('jobs').where({ id: resumed.jobId }).first();
    expect(job.video_sha256).toBe(sha256(clip));
  });

  it('when the final PATCH is sent again, then the same job is named and no second event is published', async () => {
    await (await getBroker()).purge('video');
    const created = await create(alice, clip.length);
    const url = new URL(created.headers.get('location')!, files()).toString();
    const patch = () => fetch(url, { method: 'PATCH', headers: tusHeaders(alice, { 'Upload-Offset': '0', 'Content-Type': 'application/offset+octet-stream' }), body: clip });
    const first = await patch();
    expect(first.status).toBe(204);
    const jobId = first.headers.get('upload-job-id');
    const again = await fetch(url, { method: 'PATCH', headers: tusHeaders(alice, { 'Upload-Offset': String(clip.length), 'Content-Type': 'application/offset+octet-stream' }), body: '' });
    expect(again.status).toBe(204);
    expect(again.headers.get('upload-job-id')).toBe(jobId);
    const broker = await getBroker();
    const seen: string[] = [];
    for (let d = await broker.get('video'); d; d = await broker.get('video')) {
      seen.push(d.message.messageId);
      d.ack();
    }
    expect(seen).toEqual([`${jobId}.uploaded`]);
  });

  it('when a PATCH names the wrong offset, then 409 and nothing changes', async () => {
    const created = await create(alice, clip.length);
    const url = new URL(created.headers.get('location')!, files()).toString();
    const res = await fetch(url, { method: 'PATCH', headers: tusHeaders(alice, { 'Upload-Offset': '1000', 'Content-Type': 'application/offset+octet-stream' }), body: clip.subarray(1000, 2000) });
    expect(res.status).toBe(409);
    expect(((await res.json()) as { error: { code: string } }).error.code).toBeDefined();
    const head = await fetch(url, { method: 'HEAD', headers: tusHeaders(alice) });
    expect(head.headers.get('upload-offset')).toBe('0');
  });

  it.each([
    ['an Upload-Length over MAX_UPLOAD_BYTES', 413, String(5 * 1024 * 1024), meta({ filename: 'a.mp4' })],
    ['a bad option in Upload-Metadata', 400, '1000', meta({ filename: 'a.mp4', bitrate: '1000' })],
    ['both bitrate and quality', 400, '1000', meta({ filename: 'a.mp4', bitrate: '128', quality: '2' })],
    ['no filename', 400, '1000', meta({ quality: '2' })],
  ])('when the creation has %s, then %i before any byte', async (_label, status, length, metadata) => {
    const res = await fetch(files(), { method: 'POST', headers: tusHeaders(alice, { 'Upload-Length': length, 'Upload-Metadata': metadata }) });
    expect(res.status).toBe(status);
    expect(res.headers.get('content-type')).toMatch(/application\/json/);
    expect(((await res.json()) as { error: { message: string } }).error.message).toBeTruthy();
  });

  it('when another user asks for an upload, then 404 for HEAD, PATCH and DELETE, and a request without a token is 401', async () => {
    const created = await create(alice, clip.length);
    const url = new URL(created.headers.get('location')!, files()).toString();
    expect((await fetch(url, { method: 'HEAD', headers: tusHeaders(bob) })).status).toBe(404);
    expect((await fetch(url, { method: 'PATCH', headers: tusHeaders(bob, { 'Upload-Offset': '0', 'Content-Type': 'application/offset+octet-stream' }), body: clip })).status).toBe(404);
    expect((await fetch(url, { method: 'DELETE', headers: tusHeaders(bob) })).status).toBe(404);
    expect((await fetch(url, { method: 'HEAD', headers: { 'Tus-Resumable': '1.0.0' } })).status).toBe(401);
    expect((await fetch(url, { method: 'HEAD', headers: tusHeaders(alice) })).headers.get('upload-offset')).toBe('0');
  });

  it('when the bytes are not a video, then the last PATCH is 415 and the upload and its bytes are gone', async () => {
    const text = Buffer.from('just some text, not a video at all\n'.repeat(100));
    const created = await create(alice, text.length, meta({ filename: 'notes.mp4' }));
    const url = new URL(created.headers.get('location')!, files()).toString();
    const id = url.split('/').pop()!;
    const res = await fetch(url, { method: 'PATCH', headers: tusHeaders(alice, { 'Upload-Offset': '0', 'Content-Type': 'application/offset+octet-stream' }), body: text });
    expect(res.status).toBe(415);
    expect((await fetch(url, { method: 'HEAD', headers: tusHeaders(alice) })).status).toBe(404);
    expect(await (await getBlobs()).storedBytes('videos', id)).toBe(0);
    expect(await (await getDb())('jobs').where({ id }).first()).toBeUndefined();
  });

  it('when an unfinished upload is terminated, then its bytes are deleted', async () => {
    const created = await create(alice, clip.length);
    const url = new URL(created.headers.get('location')!, files()).toString();
    const id = url.split('/').pop()!;
    await fetch(url, { method: 'PATCH', headers: tusHeaders(alice, { 'Upload-Offset': '0', 'Content-Type': 'application/offset+octet-stream' }), body: clip.subarray(0, 300_000) });
    expect(await (await getBlobs()).storedBytes('videos', id)).toBe(300_000);
    expect((await fetch(url, { method: 'DELETE', headers: tusHeaders(alice) })).status).toBe(204);
    expect(await (await getBlobs()).storedBytes('videos', id)).toBe(0);
    expect((await fetch(url, { method: 'HEAD', headers: tusHeaders(alice) })).status).toBe(404);
  });
});

describe.each(backends())('resumable uploads that outlive things on $name backends', ({ env }) => {
  let stack: Stack | undefined;
  let child: ChildProcess | undefined;
  afterEach(async () => {
    child?.kill('SIGKILL');
    child = undefined;
    await stack?.close();
    stack = undefined;
  });

  it('when an upload is left unfinished past UPLOAD_EXPIRY_SECONDS, then it answers 410, and after the sweep 404 with its bytes gone', async () => {
    stack = await startStack({ ...env, UPLOAD_EXPIRY_SECONDS: '1' });
    const user = await newUser(stack);
    const created = await fetch(`${stack.url}/upload/files`, { method: 'POST', headers: tusHeaders(user, { 'Upload-Length': String(clip.length), 'Upload-Metadata': meta({ filename: 'a.mp4' }), 'Content-Type': 'application/offset+octet-stream' }), body: clip.subarray(0, 200_000) });
    expect(created.status).toBe(201);
    const url = new URL(created.headers.get('location')!, stack.url).toString();
    const id = url.split('/').pop()!;
    expect(await (await getBlobs()).storedBytes('videos', id)).toBe(200_000);
    await new Promise((r) => setTimeout(r, 1500));
    expect((await fetch(url, { method: 'HEAD', headers: tusHeaders(user) })).status).toBe(410);
    const swept = await sweepExpired({ db: await getDb(), blobs: await getBlobs(), config: stack.config });
    expect(swept.uploads).toBeGreaterThanOrEqual(1);
    expect((await fetch(url, { method: 'HEAD', headers: tusHeaders(user) })).status).toBe(404);
    expect(await (await getBlobs()).storedBytes('videos', id)).toBe(0);
  });

  it('when the receiving process is killed (-9) mid-upload, then another process reports the stored offset and the client resumes there', async () => {
    stack = await startStack(env);
    const user = await newUser(stack);
    const port = await freePort();
    child = spawn(process.execPath, ['--import', 'tsx', path.join(root, 'test/support/serve-function.ts'), 'upload'], {
      cwd: root,
      env: { ...process.env, ...env, PORT: String(port), DATA_DIR: stack.config.dataDir, LOG_LEVEL: 'warn', DOWNLOAD_URL: stack.config.downloadUrl },
      stdio: ['ignore', 'inherit', 'inherit'],
    });
    const other = `http://127.0.0.1:${port}`;
    await eventually(async () => (await fetch(`${other}/healthz`).then((r) => r.ok, () => false)) || undefined, 20_000, 'the upload process');

    const video = Buffer.concat([clip, clip, clip, clip]); // sniffs as the MP4 it starts with; only stored here
    let killedAt = 0;
    const first = tusUpload(video, {
      endpoint: `${other}/files`,
      token: user.token,
      chunkSize: 512 * 1024,
      retryDelays: null,
      abortAt: (f) => {
        if (f >= 0.4 && !killedAt) {
          killedAt = f;
          child!.kill('SIGKILL');
        }
        return false;
      },
    });
    await expect(first).rejects.toThrow();
    expect(killedAt).toBeGreaterThan(0);
    const id = (await (await getDb())('uploads').where({ owner_id: user.id }).first()).id as string;
    const url = `${stack.url}/upload/files/${id}`;
    const head = await fetch(url, { method: 'HEAD', headers: tusHeaders(user) });
    expect(head.status).toBe(200);
    const offset = Number(head.headers.get('upload-offset'));
    expect(offset).toBeGreaterThan(0);
    expect(offset).toBeLessThan(video.length);
    const resumed = await tusUpload(video, { uploadUrl: url, token: user.token, chunkSize: 512 * 1024 });
    const job = await (await getDb())('jobs').where({ id: resumed.jobId }).first();
    expect(job).toMatchObject({ id, video_bytes: video.length, video_sha256: sha256(video) });
    expect(sha256(await (await getBlobs()).readAll('videos', id))).toBe(sha256(video));
    await (await getBroker()).purge('video');
  });

  it('when a small video goes through tus in one creation-with-upload-less PATCH, then the job records its sniffed type, size and hash', async () => {
    stack = await startStack(env);
    const user = await newUser(stack);
    const mp4 = readFixture('mp4');
    const done = await tusUpload(mp4, { endpoint: `${stack.url}/upload/files`, token: user.token });
    const job = await (await getDb())('jobs').where({ id: done.jobId }).first();
    expect(job).toMatchObject({ content_type: 'video/mp4', video_bytes: mp4.length, video_sha256: sha256(mp4) });
    await (await getBroker()).purge('video');
  });
});
