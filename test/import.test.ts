// Import from a URL: POST /upload/ with {"url": …} streams a file from a loopback server (allowed
// here by IMPORT_ALLOW_PRIVATE=127.0.0.1 only) into storage and converts it; progress shows as
// `importing`; every failure is a 4xx before the job exists or a failed job after, and leaves no
// video behind; private addresses, and redirects to them, are refused.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { closeClients } from '../lib/core/clients';
import { getBroker } from '../lib/messaging/queue';
import { createJob, newJobId } from '../lib/pipeline/jobs';
import { reconcile } from '../lib/pipeline/reconcile';
import { getBlobs, newBlobId } from '../lib/storage/blobs';
import { getDb } from '../lib/storage/db';
import { readFixture } from './fixtures';
import { backends, eventually, newUser, startStack, type Stack, type TestUser } from './support/stack';

const clip = readFixture('mp4');
const limit = 200 * 1024;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The remote web server: a video, slow and stalling ones, redirects, errors. */
function startOrigin(): Promise<{ url: string; close(): Promise<void> }> {
  const padded = Buffer.concat([clip, Buffer.alloc(100 * 1024)]); // sniffed as MP4, more than the sniff window
  const server = http.createServer((req, res) => {
    const url = new URL(req.url!, 'http://x');
    const n = Number(url.searchParams.get('n') ?? 0);
    void (async () => {
      switch (url.pathname) {
        case '/video': return res.writeHead(200, { 'content-type': 'video/mp4', 'content-length': clip.length, 'content-disposition': 'attachment; filename="Guest lecture.mp4"' }).end(clip);
        case '/slow': {
          // The sniff window at once (the import is answered 202 after it), the rest over ~3 s.
          res.writeHead(200, { 'content-length': padded.length });
          res.write(padded.subarray(0, 70 * 1024));
          for (let i = 70 * 1024; i < padded.length; i += 8192) {
            await sleep(400);
            res.write(padded.subarray(i, i + 8192));
          }
          return res.end();
        }
        case '/stall': return res.writeHead(200, { 'content-length': padded.length + 10_000 }).write(padded); // then nothing
        case '/endless': {
          res.writeHead(200, { 'content-type': 'video/mp4' }); // chunked: no length to refuse it by
          res.write(clip);
          for (let sent = clip.length; sent <= limit + 65536 && !res.destroyed; sent += 65536) res.write(Buffer.alloc(65536));
          return res.end();
        }
        case '/huge': return res.writeHead(200, { 'content-length': limit + 1 }).end();
        case '/text': return res.writeHead(200, { 'content-type': 'video/mp4' }).end('just some text, not a video at all');
        case '/missing': return res.writeHead(404).end('no');
        case '/hop': return res.writeHead(302, { location: n > 0 ? `/hop?n=${n - 1}` : '/video' }).end();
        case '/to': return res.writeHead(301, { location: url.searchParams.get('target')! }).end();
        default: return res.writeHead(500).end();
      }
    })();
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve({
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: () => new Promise((r) => { server.closeAllConnections(); server.close(() => r()); }),
  })));
}

describe.each(backends())('imports from a URL on $name backends', ({ env }) => {
  let stack: Stack;
  let origin: Awaited<ReturnType<typeof startOrigin>>;
  let user: TestUser;

  beforeAll(async () => {
    origin = await startOrigin();
    stack = await startStack({ ...env, IMPORT_ALLOW_PRIVATE: '127.0.0.1', IMPORT_IDLE_TIMEOUT_SECONDS: '1', MAX_UPLOAD_BYTES: String(limit), MAX_JOBS_IN_FLIGHT: '50' }, { sources: true });
    user = await newUser(stack);
  });
  afterAll(async () => {
    await stack.close();
    await origin.close();
  });

  const importUrl = (body: unknown, u = user) =>
    fetch(`${stack.url}/upload/`, { method: 'POST', headers: { ...u.auth, 'content-type': 'application/json' }, body: typeof body === 'string' ? body : JSON.stringify(body) });
  const job = async (id: string) => (await (await fetch(`${stack.url}/download/jobs/${id}`, { headers: user.auth })).json()) as Record<string, unknown>;
  const settled = (id: string) => eventually(async () => {
    const j = await job(id);
    return ['done', 'failed'].includes(j.status as string) ? j : undefined;
  }, 60_000, 'the job to end');
  const storedVideos = async (owner: string) => (await (await getDb())('jobs').where({ owner_id: owner }).whereNotNull('video_blob_id')).length;

  it('when a video URL is imported, then 202, the job imports, converts, and the MP3 downloads', async () => {
    const res = await importUrl({ url: `${origin.url}/video`, bitrate: 64, title: 'Imported' });
    expect(res.status).toBe(202);
    const { jobId, status } = (await res.json()) as { jobId: string; status: string };
    expect(status).toBe('importing');
    const done = await settled(jobId);
    expect(done).toMatchObject({ status: 'done', filename: 'Guest lecture.mp4' });
    const row = await (await getDb())('jobs').where({ id: jobId }).first();
    expect([Number(row.video_bytes), JSON.parse(row.options)]).toEqual([clip.length, { bitrate: 64, title: 'Imported' }]);
    const mp3 = await fetch(`${stack.url}/download/jobs/${jobId}/mp3`, { headers: user.auth });
    expect(mp3.status).toBe(200);
    expect((await mp3.arrayBuffer()).byteLength).toBeGreaterThan(1000);
  });

  it('when the server sends slowly, then the job shows `importing` with a percentage and the bytes so far', async () => {
    const { jobId } = (await (await importUrl({ url: `${origin.url}/slow` })).json()) as { jobId: string };
    const seen = await eventually(async () => {
      const j = await job(jobId);
      return j.status === 'importing' && (j.progress as number) > 0 ? j : undefined;
    }, 10_000, 'import progress');
    expect(seen.progress).toBeLessThan(100);
    expect(seen.importedBytes).toBeGreaterThan(0);
    expect(await settled(jobId)).toMatchObject({ status: 'done' });
  });

  it.each([
    ['a redirect chain (5 hops)', '/hop?n=4', 'done'],
  ])('when the URL is %s, then it is followed', async (_what, path, status) => {
    const { jobId } = (await (await importUrl({ url: `${origin.url}${path}` })).json()) as { jobId: string };
    expect(await settled(jobId)).toMatchObject({ status });
  });

  it.each([
    ['answers 404', () => `${origin.url}/missing`, 400, /answered 404/],
    ['is not a video', () => `${origin.url}/text`, 415, /not a video/],
    ['announces more than the size limit', () => `${origin.url}/huge`, 413, /limit/],
    ['redirects more than 5 times', () => `${origin.url}/hop?n=5`, 400, /more than 5 redirects/],
    ['redirects to another loopback address', () => `${origin.url}/to?target=${encodeURIComponent(`http://127.0.0.2:${new URL(origin.url).port}/video`)}`, 400, /private addresses are not allowed/],
    ['redirects to localhost', () => `${origin.url}/to?target=${encodeURIComponent(`http://localhost:${new URL(origin.url).port}/video`)}`, 400, /private addresses are not allowed/],
    ['redirects to the cloud metadata address', () => `${origin.url}/to?target=${encodeURIComponent('http://169.254.169.254/latest/meta-data/')}`, 400, /private addresses are not allowed/],
    ['refuses connections', () => 'http://127.0.0.1:1/video', 400, /refused the connection/],
    ['is not http(s)', () => 'ftp://example.com/video.mp4', 400, /http or https/],
    ['carries credentials', () => `http://user:pw@127.0.0.1:${new URL(origin.url).port}/video`, 400, /credentials/],
  ])('when the URL %s, then a 4xx naming the problem, and no job or video is left', async (_what, url, status, message) => {
    const someone = await newUser(stack);
    const res = await importUrl({ url: url() }, someone);
    expect(res.status).toBe(status);
    expect(((await res.json()) as { error: { message: string } }).error.message).toMatch(message);
    expect((await (await getDb())('jobs').where({ owner_id: someone.id })).length).toBe(0);
  });

  it.each([
    ['no url', {}, /url: required/],
    ['a bad option', { url: 'https://example.com/v.mp4', bitrate: 7 }, /bitrate/],
    ['malformed JSON', '{"url": ', /not valid JSON/],
    ['not an object', '["https://example.com/v.mp4"]', /JSON object/],
  ])('when the body has %s, then 400', async (_what, body, message) => {
    const res = await importUrl(body);
    expect(res.status).toBe(400);
    expect(((await res.json()) as { error: { message: string } }).error.message).toMatch(message);
  });

  it.each([
    ['stops sending', '/stall', /sent nothing for 1 s/],
    ['sends more than the size limit without announcing it', '/endless', /larger than the limit/],
  ])('when the server %s after the import started, then the job fails with that reason and its partial video is removed', async (_what, path, message) => {
    const someone = await newUser(stack);
    const res = await importUrl({ url: `${origin.url}${path}` }, someone);
    expect(res.status).toBe(202);
    const { jobId } = (await res.json()) as { jobId: string };
    const blobId = (await (await getDb())('jobs').where({ id: jobId }).first()).video_blob_id as string;
    const failed = await eventually(async () => {
      const row = await (await getDb())('jobs').where({ id: jobId }).first();
      return row.status === 'failed' ? row : undefined;
    }, 20_000, 'the import to fail');
    expect(failed.error).toMatch(message);
    expect(failed.video_blob_id).toBeNull();
    expect(await storedVideos(someone.id)).toBe(0);
    expect(await (await getBlobs()).storedBytes('videos', blobId)).toBe(0);
    expect(await (await getBlobs()).stat('videos', blobId)).toBeUndefined();
  });
});

describe('imports cut short by the instance stopping', () => {
  let stack: Stack;
  let origin: Awaited<ReturnType<typeof startOrigin>>;
  beforeAll(async () => {
    origin = await startOrigin();
    stack = await startStack({ IMPORT_ALLOW_PRIVATE: '127.0.0.1', MAX_UPLOAD_BYTES: String(limit) });
  });
  afterAll(async () => {
    await stack.close();
    await origin.close();
  });

  it('when the instance shuts down mid-import (SIGTERM closes the clients), then the job fails saying so and its partial video is gone', async () => {
    const user = await newUser(stack);
    const res = await fetch(`${stack.url}/upload/`, { method: 'POST', headers: { ...user.auth, 'content-type': 'application/json' }, body: JSON.stringify({ url: `${origin.url}/slow` }) });
    expect(res.status).toBe(202);
    const { jobId } = (await res.json()) as { jobId: string };
    const blobId = (await (await getDb())('jobs').where({ id: jobId }).first()).video_blob_id as string;
    await closeClients(); // what the shutdown handler runs (lib/http/serve.ts listen) before the process exits
    const row = await (await getDb())('jobs').where({ id: jobId }).first(); // the clients reopen on use
    expect(row).toMatchObject({ status: 'failed', error: 'the service stopped during the import; import the URL again', video_blob_id: null });
    expect(await (await getBlobs()).storedBytes('videos', blobId)).toBe(0);
  });

  it('when an import\'s process died without a word, then the reconciler fails the job once its clock has stopped', async () => {
    const user = await newUser(stack);
    const db = await getDb();
    const id = newJobId();
    await createJob(db, { id, ownerId: user.id, ownerEmail: user.email, filename: 'x.mp4', contentType: 'video/mp4', options: {}, videoBlobId: newBlobId(), videoBytes: 0, videoSha256: '' }, 'importing');
    const deps = { db, broker: await getBroker(), config: stack.config };
    expect((await reconcile(deps)).imports).toBe(0); // still within RECONCILE_AFTER_SECONDS: maybe alive
    await db('jobs').where({ id }).update({ updated_at: Date.now() - stack.config.maintenance.reconcileAfterMs - 1000 });
    expect((await reconcile(deps)).imports).toBe(1);
    expect(await db('jobs').where({ id }).first()).toMatchObject({ status: 'failed', error: expect.stringMatching(/import was interrupted/) });
  });
});

describe('imports in the owner\'s queue (lib/pipeline/scheduling.ts)', () => {
  let stack: Stack;
  let origin: Awaited<ReturnType<typeof startOrigin>>;
  beforeAll(async () => {
    origin = await startOrigin();
    stack = await startStack({ IMPORT_ALLOW_PRIVATE: '127.0.0.1', IMPORT_IDLE_TIMEOUT_SECONDS: '1', MAX_UPLOAD_BYTES: String(limit), MAX_JOBS_QUEUED: '2' }, { sources: true });
  });
  afterAll(async () => {
    await stack.close();
    await origin.close();
  });

  it('when importing jobs fill MAX_JOBS_QUEUED, then another import is 429 before anything is fetched; once they fail their places are free, and an import then converts', async () => {
    const user = await newUser(stack);
    const importUrl = (path: string) => fetch(`${stack.url}/upload/`, { method: 'POST', headers: { ...user.auth, 'content-type': 'application/json' }, body: JSON.stringify({ url: `${origin.url}${path}` }) });
    const stalled = await Promise.all([importUrl('/stall'), importUrl('/stall')]);
    expect(stalled.map((r) => r.status)).toEqual([202, 202]);
    const refused = await importUrl('/video');
    expect(refused.status).toBe(429);
    expect(Number(refused.headers.get('retry-after'))).toBeGreaterThan(0);
    expect(((await refused.json()) as { error: { message: string } }).error.message).toMatch(/MAX_JOBS_QUEUED/);
    const db = await getDb();
    await eventually(async () => (await db('jobs').where({ owner_id: user.id, status: 'failed' })).length === 2 || undefined, 20_000, 'the stalled imports to fail');
    const accepted = await importUrl('/video');
    expect(accepted.status).toBe(202);
    const { jobId } = (await accepted.json()) as { jobId: string };
    const done = await eventually(async () => {
      const row = await db('jobs').where({ id: jobId }).first();
      return ['done', 'failed'].includes(row.status as string) ? row : undefined;
    }, 60_000, 'the imported job to end');
    expect(done).toMatchObject({ status: 'done' });
    expect(done.released_at).not.toBeNull(); // its turn came through the scheduler once its bytes were in
  });
});

describe('imports with the default settings', () => {
  let stack: Stack;
  let user: TestUser;
  beforeAll(async () => {
    stack = await startStack({});
    user = await newUser(stack);
  });
  afterAll(() => stack.close());

  it.each([
    'http://127.0.0.1:9/video.mp4',
    'http://localhost:9/video.mp4',
    'http://[::1]:9/video.mp4',
    'http://10.0.0.1/video.mp4',
    'http://169.254.169.254/latest/meta-data/',
    'http://[::ffff:192.168.1.1]/video.mp4',
    'http://[64:ff9b::a9fe:a9fe]/latest/meta-data/', // NAT64 form of 169.254.169.254
  ])('when the URL is the private address %s, then 400 before anything is fetched', async (url) => {
    const res = await fetch(`${stack.url}/upload/`, { method: 'POST', headers: { ...user.auth, 'content-type': 'application/json' }, body: JSON.stringify({ url }) });
    expect(res.status).toBe(400);
    expect(((await res.json()) as { error: { message: string } }).error.message).toMatch(/^url: loopback, link-local and private addresses are not allowed/);
  });
});
