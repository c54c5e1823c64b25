// Single-request uploads are streamed, never buffered whole: over the limit the client still reads a
// JSON 413 (Node fetch, as a user's script would send it), and a body cut short leaves nothing behind.
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MongoClient } from 'mongodb';
import { getDb } from '../lib/storage/db';
import { getBroker } from '../lib/messaging/queue';
import { readFixture } from './fixtures';
import { startProxy } from './support/proxy';
import { backends, newUser, startStack, videoForm, type Stack, type TestUser } from './support/stack';

const limit = 1024 * 1024;
const clip = readFixture('mp4');
/** A body that sniffs as the clip and goes on with `size` bytes in all. */
const videoOf = (size: number) => Buffer.concat([clip, Buffer.alloc(Math.max(0, size - clip.length), 7)]);

/** The bytes as a stream with no length: fetch sends it chunked. */
const chunked = (data: Buffer) => new ReadableStream<Uint8Array>({
  start(controller) {
    for (let i = 0; i < data.length; i += 64 * 1024) controller.enqueue(data.subarray(i, i + 64 * 1024));
    controller.close();
  },
});

describe.each(backends())('streamed single-request uploads on $name backends', ({ name, env }) => {
  let stack: Stack;
  let user: TestUser;

  beforeAll(async () => {
    stack = await startStack({ ...env, MAX_UPLOAD_BYTES: String(limit) });
    await (await getBroker()).purge('video');
    user = await newUser(stack);
  });
  afterAll(async () => {
    await (await getBroker()).purge('video');
    await stack.close();
  });

  /** What the store and the database hold: no job, no blob, no stray file may appear from a refused upload. */
  async function leftovers() {
    const jobs = await (await getDb())('jobs').where({ owner_id: user.id });
    if (name === 'embedded') {
      const dir = path.join(stack.config.dataDir, 'blobs', 'videos');
      return { jobs: jobs.length, blobs: fs.existsSync(dir) ? fs.readdirSync(dir).length : 0 };
    }
    const client = new MongoClient(env.MONGODB_URI!);
    try {
      const chunks = await client.db().collection('videos.chunks').countDocuments({});
      return { jobs: jobs.length, blobs: chunks };
    } finally {
      await client.close();
    }
  }

  const post = (body: RequestInit["body"], headers: Record<string, string> = {}, query = '') =>
    fetch(`${stack.url}/upload/${query}`, { method: 'POST', headers: { ...user.auth, ...headers }, body, duplex: 'half' } as RequestInit);

  it.each([
    ['a raw body with a Content-Length over the limit', () => post(videoOf(3 * limit), { 'content-type': 'video/mp4', 'x-filename': 'big.mp4' })],
    ['a chunked raw body over the limit', () => post(chunked(videoOf(3 * limit)), { 'content-type': 'video/mp4', 'x-filename': 'big.mp4' })],
    ['a multipart body far over the limit', () => post(videoForm(videoOf(5 * limit), 'big.mp4'))],
    ['a multipart body whose file is just over the limit', () => post(videoForm(videoOf(limit + 1), 'big.mp4'))],
  ])('when %s is sent, then fetch reads a JSON 413 naming the configured limit, and nothing is kept', async (_label, send) => {
    const before = await leftovers();
    const res = await send();
    expect(res.status).toBe(413);
    const body = (await res.json()) as { error: { code: string; message: string } };
    expect(body.error.code).toBe('too_large');
    expect(body.error.message).toContain(`${limit} bytes`);
    expect(await leftovers()).toEqual(before);
  });

  it('when a file of exactly the limit is sent, then it is accepted', async () => {
    const res = await post(videoForm(videoOf(limit), 'exact.mp4'));
    expect(res.status).toBe(202);
  });

  it('when the client goes away mid-body, then no job, no blob and no stray file are left', async () => {
    const before = await leftovers();
    for (const kind of ['raw', 'multipart'] as const) {
      await new Promise<void>((resolve) => {
        const boundary = 'xyzzy';
        const head = kind === 'raw' ? clip : Buffer.concat([Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="cut.mp4"\r\nContent-Type: video/mp4\r\n\r\n`), clip]);
        const req = http.request(`${stack.url}/upload/`, {
          method: 'POST',
          headers: {
            ...user.auth,
            'content-type': kind === 'raw' ? 'video/mp4' : `multipart/form-data; boundary=${boundary}`,
            'x-filename': 'cut.mp4',
            'content-length': String(limit - 1000),
          },
        });
        req.on('error', () => resolve());
        req.write(head);
        req.write(Buffer.alloc(300_000, 1), () => setTimeout(() => { req.destroy(); resolve(); }, 300));
      });
    }
    await new Promise((r) => setTimeout(r, 500));
    expect(await leftovers()).toEqual(before);
  });
});

// The idle limit on an upload's body is on the client: when the store is what is slow, the server has
// paused the socket itself and must not answer 408, nor drop the connection while it stores the last
// bytes after the body has all arrived. GridFS here goes through a proxy that passes the writes at
// ~1 MB/s, so each 4 MB batch of chunks keeps the body waiting far past the 1 s limit.
describe.runIf(backends().some((b) => b.name === 'services'))('an upload to a slow store', () => {
  let stack: Stack;
  let user: TestUser;
  let proxy: Awaited<ReturnType<typeof startProxy>>;

  beforeAll(async () => {
    const { env } = backends().find((b) => b.name === 'services')!;
    const mongo = new URL(env.MONGODB_URI!);
    proxy = await startProxy({ host: mongo.hostname, port: Number(mongo.port) });
    mongo.port = String(proxy.port);
    stack = await startStack({ ...env, MONGODB_URI: mongo.toString(), REQUEST_TIMEOUT_SECONDS: '1' });
    user = await newUser(stack);
    proxy.rate = 1024 * 1024;
  });
  afterAll(async () => {
    await stack.close();
    await proxy.close();
  });

  it('when the store takes longer than the idle limit to take the bytes, then the upload still succeeds, answered 202 (the client was never idle)', async () => {
    const body = videoOf(10 * 1024 * 1024);
    const res = await fetch(`${stack.url}/upload/`, { method: 'POST', headers: { ...user.auth, 'content-type': 'video/mp4', 'x-filename': 'slow-store.mp4' }, body });
    expect(res.status, await res.clone().text()).toBe(202);
    const { jobId } = (await res.json()) as { jobId: string };
    const job = await (await getDb())('jobs').where({ id: jobId }).first();
    expect(Number(job.video_bytes)).toBe(body.length);
  }, 60_000);
});
