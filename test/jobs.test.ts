// Upload → job → blob → `video` message, and the download function, through the HTTP boundary on
// the embedded backends and on MariaDB + FerretDB + RabbitMQ.
import { createHash } from 'node:crypto';
import jwt from 'jsonwebtoken';
import { MongoClient } from 'mongodb';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { getBlobs } from '../lib/storage/blobs';
import { getDb } from '../lib/storage/db';
import { eventTypes } from '../lib/messaging/events';
import { loadLinkSecret } from '../lib/auth/keys';
import { mintDownloadLink } from '../lib/auth/links';
import { getBroker } from '../lib/messaging/queue';
import { toCloudEventRequest } from '../lib/messaging/source';
import { readFixture } from './fixtures';
import { startProxy } from './support/proxy';
import { backends, newUser, startStack, videoForm, type Stack, type TestUser } from './support/stack';

const clip = readFixture('mp4');
type Body = FormData | Buffer | string;

const form = videoForm;

describe.each(backends())('uploads and downloads on $name backends', ({ name, env }) => {
  let stack: Stack;
  let alice: TestUser;
  let bob: TestUser;

  beforeAll(async () => {
    stack = await startStack({ ...env, MAX_UPLOAD_BYTES: String(200 * 1024) });
    await (await getBroker()).purge('video');
    alice = await newUser(stack);
    bob = await newUser(stack);
  });
  afterAll(() => stack.close());

  const upload = (user: TestUser, body: Body, headers: Record<string, string> = {}, query = '') =>
    fetch(`${stack.url}/upload/${query}`, { method: 'POST', headers: { ...user.auth, ...headers }, body });
  const get = (user: TestUser | undefined, p: string, headers: Record<string, string> = {}) =>
    fetch(`${stack.url}/download${p}`, { headers: { ...(user?.auth ?? {}), ...headers } });
  const jobCount = async (user: TestUser) => Number((await (await getDb())('jobs').where({ owner_id: user.id }).count({ n: '*' }))[0]!.n);

  /** Takes the job's message off `video` and delivers it to convert as the RabbitMQ source would. */
  async function convertQueued(jobId: string) {
    const broker = await getBroker();
    const d = (await broker.get('video'))!;
    expect(d.message.messageId).toBe(`${jobId}.uploaded`);
    const req = toCloudEventRequest(d.message, { queue: 'video' });
    const res = await fetch(`${stack.internalUrl}/convert/`, { method: 'POST', headers: req.headers, body: req.body });
    expect(res.status).toBe(200);
    d.ack();
    await (await getBroker()).purge('mp3');
  }

  async function doneJob(user: TestUser, filename = 'holiday clip.mp4') {
    const res = await upload(user, form(clip, filename));
    expect(res.status).toBe(202);
    const { jobId } = (await res.json()) as { jobId: string };
    await convertQueued(jobId);
    return jobId;
  }

  it('when a video is uploaded as multipart, then 202, a queued job, the stored blob and a `video` message with the Knative headers', async () => {
    const res = await upload(alice, form(clip, 'My Clip.mp4', { bitrate: '128', title: 'Song' }));
    expect(res.status).toBe(202);
    const body = (await res.json()) as { jobId: string; status: string; statusUrl: string };
    expect(body).toEqual({ jobId: expect.stringMatching(/^[A-Za-z0-9_-]{22}$/), status: 'queued', statusUrl: `${stack.config.downloadUrl}/jobs/${body.jobId}` });
    expect(res.headers.get('location')).toBe(body.statusUrl);

    const row = await (await getDb())('jobs').where({ id: body.jobId }).first();
    expect(row).toMatchObject({ owner_id: alice.id, owner_email: alice.email, status: 'queued', filename: 'My Clip.mp4', content_type: 'video/mp4', video_bytes: clip.length, attempts: 0 });
    expect(JSON.parse(row.options)).toEqual({ bitrate: 128, title: 'Song' });

    const blob = await (await getBlobs()).stat('videos', row.video_blob_id);
    expect(blob).toMatchObject({ size: clip.length, owner: alice.id, filename: 'My Clip.mp4', sha256: createHash('sha256').update(clip).digest('hex') });

    const d = (await (await getBroker()).get('video'))!;
    d.ack();
    expect(d.message).toMatchObject({ contentType: 'application/json', messageId: `${body.jobId}.uploaded` });
    expect(d.message.headers).toMatchObject({
      'ce-specversion': '1.0', 'ce-id': `${body.jobId}.uploaded`, 'ce-type': eventTypes.videoUploaded, 'ce-source': '/video2mp3', 'content-type': 'application/json',
    });
    if (name === 'services') expect(d.persistent).toBe(true);
    expect(JSON.parse(d.message.body.toString())).toEqual({
      jobId: body.jobId, owner: alice.id, email: alice.email, filename: 'My Clip.mp4', videoBlobId: row.video_blob_id, options: { bitrate: 128, title: 'Song' },
    });

    const status = await get(alice, `/jobs/${body.jobId}`);
    expect(status.status).toBe(200);
    expect(await status.json()).toMatchObject({ jobId: body.jobId, status: 'queued', filename: 'My Clip.mp4' });
  });

  it('when a raw video body is sent with X-Filename and query options, then it is accepted with those options', async () => {
    const res = await upload(alice, clip, { 'content-type': 'application/octet-stream', 'x-filename': 'raw.mp4' }, '?quality=4&channels=1&start=0.5&end=2');
    expect(res.status).toBe(202);
    const { jobId } = (await res.json()) as { jobId: string };
    const row = await (await getDb())('jobs').where({ id: jobId }).first();
    expect(JSON.parse(row.options)).toEqual({ quality: 4, channels: 1, start: 0.5, end: 2 });
    (await (await getBroker()).get('video'))!.ack();
  });

  const rejected: [string, number, () => [Body, Record<string, string>, string]][] = [
    ['bitrate out of range', 400, () => [form(clip, 'a.mp4', { bitrate: '999' }), {}, '']],
    ['quality out of range', 400, () => [form(clip, 'a.mp4'), {}, '?quality=12']],
    ['an invalid sample rate', 400, () => [form(clip, 'a.mp4', { sampleRate: '12345' }), {}, '']],
    ['three channels', 400, () => [form(clip, 'a.mp4', { channels: '3' }), {}, '']],
    ['end before start', 400, () => [form(clip, 'a.mp4', { start: '5', end: '2' }), {}, '']],
    ['both bitrate and quality', 400, () => [form(clip, 'a.mp4', { bitrate: '128', quality: '2' }), {}, '']],
    ['an empty file', 400, () => [form(Buffer.alloc(0), 'a.mp4'), {}, '']],
    ['a text file named .mp4', 415, () => [form(readFixture('text'), 'a.mp4'), {}, '']],
    ['a PNG claiming to be video', 415, () => [form(readFixture('png'), 'a.mp4', {}, 'video/mp4'), {}, '']],
    ['a JSON body without a url (JSON is a URL import)', 400, () => ['{"file":"x"}', { 'content-type': 'application/json' }, '']],
    ['a plain-text body', 415, () => ['file=x', { 'content-type': 'text/plain' }, '']],
    ['a raw body without a filename', 400, () => [clip, { 'content-type': 'video/mp4' }, '']],
    ['a form without a file', 400, () => [(() => { const f = new FormData(); f.append('bitrate', '128'); return f; })(), {}, '']],
    ['two files', 400, () => [(() => { const f = form(clip, 'a.mp4'); f.append('file2', new Blob([clip]), 'b.mp4'); return f; })(), {}, '']],
    ['a body over MAX_UPLOAD_BYTES', 413, () => [form(Buffer.concat([clip, Buffer.alloc(2 * 1024 * 1024)]), 'big.mp4'), {}, '']],
  ];

  it.each(rejected)('when the upload has %s, then a JSON %i error and nothing is stored or queued', async (_label, status, make) => {
    const before = await jobCount(alice);
    const depth = await (await getBroker()).depth('video');
    const [body, headers, query] = make();
    const res = await upload(alice, body, headers, query);
    expect(res.status).toBe(status);
    expect(await res.json()).toEqual({ error: { code: expect.any(String), message: expect.any(String) } });
    expect(await jobCount(alice)).toBe(before);
    expect(await (await getBroker()).depth('video')).toBe(depth);
  });

  it('when there is no valid token, then upload and every download route answer 401', async () => {
    expect((await fetch(`${stack.url}/upload/`, { method: 'POST', body: form(clip, 'a.mp4') })).status).toBe(401);
    const forged = { authorization: `Bearer ${jwt.sign({ email: alice.email }, 'secret', { subject: alice.id })}` };
    expect((await fetch(`${stack.url}/upload/`, { method: 'POST', headers: forged, body: form(clip, 'a.mp4') })).status).toBe(401);
    for (const p of ['/jobs', '/jobs/abc', '/jobs/abc/mp3']) expect((await get(undefined, p)).status).toBe(401);
  });

  it('when someone asks for another user\'s job, or an unknown or malformed id, then 404 every time', async () => {
    const res = await upload(alice, form(clip, 'private.mp4'));
    const { jobId } = (await res.json()) as { jobId: string };
    (await (await getBroker()).get('video'))!.ack();
    for (const p of [`/jobs/${jobId}`, `/jobs/${jobId}/mp3`]) {
      const r = await get(bob, p);
      expect(r.status).toBe(404);
      expect(await r.json()).toEqual({ error: { code: 'not_found', message: 'job not found' } });
    }
    expect((await fetch(`${stack.url}/download/jobs/${jobId}`, { method: 'DELETE', headers: bob.auth })).status).toBe(404);
    expect((await get(alice, `/jobs/${jobId}`)).status).toBe(200);
    for (const id of ['AAAAAAAAAAAAAAAAAAAAAA', 'not-an-id', '%2e%2e%2f%2e%2e%2fetc', 'x'.repeat(500), "1' OR '1'='1"]) {
      expect((await get(alice, `/jobs/${id}`)).status).toBe(404);
    }
  });

  it('when the job is not done, then its MP3 is 409', async () => {
    const res = await upload(alice, form(clip, 'pending.mp4'));
    const { jobId } = (await res.json()) as { jobId: string };
    (await (await getBroker()).get('video'))!.ack();
    const mp3 = await get(alice, `/jobs/${jobId}/mp3`);
    expect(mp3.status).toBe(409);
    expect(((await mp3.json()) as { error: { code: string } }).error.code).toBe('conflict');
  });

  it('when a user lists jobs, then only theirs, newest first, in pages', async () => {
    const carol = await newUser(stack);
    const ids = [];
    for (let i = 0; i < 3; i++) {
      const res = await upload(carol, form(clip, `c${i}.mp4`));
      ids.push(((await res.json()) as { jobId: string }).jobId);
      (await (await getBroker()).get('video'))!.ack();
      await new Promise((r) => setTimeout(r, 5));
    }
    const first = (await (await get(carol, '/jobs?limit=2')).json()) as { jobs: { jobId: string }[]; nextCursor: string };
    expect(first.jobs.map((j) => j.jobId)).toEqual([ids[2], ids[1]]);
    const second = (await (await get(carol, `/jobs?limit=2&cursor=${first.nextCursor}`)).json()) as { jobs: { jobId: string }[]; nextCursor: null };
    expect(second).toEqual({ jobs: [expect.objectContaining({ jobId: ids[0] })], nextCursor: null });
    expect((await get(carol, '/jobs?limit=0')).status).toBe(400);
    expect((await get(carol, '/jobs?cursor=garbage')).status).toBe(400);
  });

  describe('a converted job', () => {
    let jobId: string;
    /** The whole MP3, read straight from the blob store: each case compares against it on its own. */
    let stored: Buffer;

    beforeAll(async () => {
      jobId = await doneJob(alice, 'vidéo été 日本.mp4');
      const row = await (await getDb())('jobs').where({ id: jobId }).first();
      stored = await (await getBlobs()).readAll('mp3s', row.mp3_blob_id);
    });

    it('when its status is read, then done with the MP3 size, duration and URL', async () => {
      const body = (await (await get(alice, `/jobs/${jobId}`)).json()) as Record<string, unknown>;
      expect(body).toMatchObject({ jobId, status: 'done', mp3: { size: expect.any(Number), durationSeconds: expect.any(Number), url: `${stack.config.downloadUrl}/jobs/${jobId}/mp3` } });
    });

    it('when the MP3 is downloaded, then audio/mpeg with length, ETag, ranges and an RFC 6266 file name', async () => {
      const res = await get(alice, `/jobs/${jobId}/mp3`);
      expect(res.status).toBe(200);
      const mp3 = Buffer.from(await res.arrayBuffer());
      expect(mp3).toEqual(stored);
      expect(res.headers.get('content-type')).toBe('audio/mpeg');
      expect(Number(res.headers.get('content-length'))).toBe(mp3.length);
      expect(res.headers.get('accept-ranges')).toBe('bytes');
      expect(res.headers.get('etag')).toBe(`"${createHash('sha256').update(mp3).digest('hex')}"`);
      const disposition = res.headers.get('content-disposition')!;
      expect(disposition).toMatch(/^attachment; filename="vid\?o \?t\? \?\?\.mp3"; filename\*=UTF-8''vid%C3%A9o%20%C3%A9t%C3%A9%20%E6%97%A5%E6%9C%AC\.mp3$/);
      expect(mp3.subarray(0, 3).toString('latin1') === 'ID3' || (mp3[0] === 0xff && (mp3[1]! & 0xe0) === 0xe0)).toBe(true);
    });

    it('when a range is asked for, then 206 with exactly those bytes; a bad range is 416; a matching ETag is 304', async () => {
      const mp3 = stored;
      const part = await get(alice, `/jobs/${jobId}/mp3`, { range: 'bytes=100-199' });
      expect(part.status).toBe(206);
      expect(part.headers.get('content-range')).toBe(`bytes 100-199/${mp3.length}`);
      expect(Buffer.from(await part.arrayBuffer())).toEqual(mp3.subarray(100, 200));
      const tail = await get(alice, `/jobs/${jobId}/mp3`, { range: 'bytes=-50' });
      expect(Buffer.from(await tail.arrayBuffer())).toEqual(mp3.subarray(mp3.length - 50));
      const bad = await get(alice, `/jobs/${jobId}/mp3`, { range: `bytes=${mp3.length + 10}-` });
      expect(bad.status).toBe(416);
      expect(bad.headers.get('content-range')).toBe(`bytes */${mp3.length}`);
      const etag = (await get(alice, `/jobs/${jobId}/mp3`, { range: 'bytes=0-0' })).headers.get('etag')!;
      expect((await get(alice, `/jobs/${jobId}/mp3`, { 'if-none-match': etag })).status).toBe(304);
    });

    it('when the signed link is used without a token, then it downloads; tampered, expired or for a deleted job it does not', async () => {
      const link = mintDownloadLink(jobId);
      const res = await fetch(link.url);
      expect(res.status).toBe(200);
      expect(Buffer.from(await res.arrayBuffer())).toEqual(stored);

      const [h, p, s] = link.token.split('.');
      const otherJob = Buffer.from(JSON.stringify({ ...JSON.parse(Buffer.from(p!, 'base64url').toString()), sub: 'AAAAAAAAAAAAAAAAAAAAAA' })).toString('base64url');
      expect((await fetch(`${stack.config.downloadUrl}/links/${h}.${otherJob}.${s}`)).status).toBe(404);
      expect((await fetch(`${stack.config.downloadUrl}/links/${link.token.slice(0, -3)}abc`)).status).toBe(404);
      expect((await fetch(`${stack.config.downloadUrl}/links/garbage`)).status).toBe(404);
      const expired = jwt.sign({ exp: Math.floor(Date.now() / 1000) - 10 }, loadLinkSecret(stack.config), { algorithm: 'HS256', subject: jobId, audience: 'video2mp3-download-link', issuer: 'video2mp3' });
      const gone = await fetch(`${stack.config.downloadUrl}/links/${expired}`);
      expect(gone.status).toBe(410);
      expect(((await gone.json()) as { error: { code: string } }).error.code).toBe('link_expired');
      const accessToken = await fetch(`${stack.config.downloadUrl}/links/${alice.token}`);
      expect(accessToken.status).toBe(404);
    });

    it('when the job is deleted, then 204, the job is gone and both blobs are removed', async () => {
      const row = await (await getDb())('jobs').where({ id: jobId }).first();
      const other = await doneJob(bob);
      const del = await fetch(`${stack.url}/download/jobs/${jobId}`, { method: 'DELETE', headers: alice.auth });
      expect(del.status).toBe(204);
      expect((await get(alice, `/jobs/${jobId}`)).status).toBe(404);
      expect(await (await getBlobs()).stat('mp3s', row.mp3_blob_id)).toBeUndefined();
      if (row.video_blob_id) expect(await (await getBlobs()).stat('videos', row.video_blob_id)).toBeUndefined();
      expect((await fetch(mintDownloadLink(jobId).url)).status).toBe(404);
      expect((await get(bob, `/jobs/${other}/mp3`)).status).toBe(200);
    });
  });
});

const services = backends().find((b) => b.name === 'services');

describe.runIf(services)('when the broker fails during uploads (real RabbitMQ behind a proxy)', () => {
  let stack: Stack;
  let user: TestUser;
  let proxy: Awaited<ReturnType<typeof startProxy>>;
  let mongo: MongoClient;

  beforeAll(async () => {
    const amqp = new URL(services!.env.AMQP_URL!);
    proxy = await startProxy({ host: amqp.hostname, port: Number(amqp.port || 5672) });
    amqp.host = `127.0.0.1:${proxy.port}`;
    stack = await startStack({ ...services!.env, AMQP_URL: amqp.toString() });
    user = await newUser(stack);
    mongo = new MongoClient(services!.env.MONGODB_URI!);
  });
  afterAll(async () => {
    await stack.close();
    await proxy.close();
    await mongo.close();
  });

  const uploadClip = () => fetch(`${stack.url}/upload/`, { method: 'POST', headers: user.auth, body: form(clip, 'a.mp4') });
  const videos = () => mongo.db().collection('videos.files').countDocuments({ 'metadata.owner': user.id });

  it('when the broker is down, then 503 with Retry-After, and no job or video is left behind', async () => {
    expect((await uploadClip()).status).toBe(202);
    const jobsBefore = await (await getDb())('jobs').where({ owner_id: user.id }).count({ n: '*' });
    const videosBefore = await videos();
    await proxy.down();
    const res = await uploadClip();
    expect(res.status).toBe(503);
    expect(res.headers.get('retry-after')).toBeTruthy();
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe('unavailable');
    expect(await (await getDb())('jobs').where({ owner_id: user.id }).count({ n: '*' })).toEqual(jobsBefore);
    expect(await videos()).toBe(videosBefore);
  });

  it('when the broker comes back (its connections were cut), then the next upload succeeds without a restart', async () => {
    await proxy.up();
    const res = await uploadClip();
    expect(res.status).toBe(202);
    const { jobId } = (await res.json()) as { jobId: string };
    const seen = [];
    for (let d = await (await getBroker()).get('video'); d; d = await (await getBroker()).get('video')) {
      seen.push(d.message.messageId);
      d.ack();
    }
    expect(seen).toContain(`${jobId}.uploaded`);
  });
});
