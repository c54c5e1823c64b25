// The event path end to end: upload → `video` → the local RabbitMQ-source stand-in → convert →
// MP3 + `mp3` event, on the embedded backends and on MariaDB + FerretDB + RabbitMQ.
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { parseBuffer } from 'music-metadata';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { getBlobs } from '../lib/storage/blobs';
import { getDb } from '../lib/storage/db';
import { eventTypes } from '../lib/messaging/events';
import { getBroker, type Delivery } from '../lib/messaging/queue';
import { startPing } from '../lib/messaging/ping';
import { startSource } from '../lib/messaging/source';
import { fixtures, readFixture } from './fixtures';
import { startProxy } from './support/proxy';
import { freePort } from './support/net';
import { backends, eventually, newUser, startStack, videoForm, type Stack, type TestUser } from './support/stack';

interface JobView {
  jobId: string;
  status: string;
  error?: string;
  mp3?: { size: number; durationSeconds: number; url: string };
}

async function uploadFile(stack: Stack, user: TestUser, file: Buffer, filename: string, fields: Record<string, string> = {}) {
  const res = await fetch(`${stack.url}/upload/`, { method: 'POST', headers: user.auth, body: videoForm(file, filename, fields) });
  expect(res.status).toBe(202);
  return ((await res.json()) as { jobId: string }).jobId;
}

async function waitForEnd(stack: Stack, user: TestUser, jobId: string, ms = 60_000): Promise<JobView> {
  return eventually(async () => {
    const view = (await (await fetch(`${stack.url}/download/jobs/${jobId}`, { headers: user.auth })).json()) as JobView;
    return view.status === 'done' || view.status === 'failed' ? view : undefined;
  }, ms, `job ${jobId} to end`);
}

async function downloadMp3(stack: Stack, user: TestUser, jobId: string) {
  const res = await fetch(`${stack.url}/download/jobs/${jobId}/mp3`, { headers: user.auth });
  expect(res.status).toBe(200);
  const mp3 = Buffer.from(await res.arrayBuffer());
  return { mp3, meta: await parseBuffer(mp3, { mimeType: 'audio/mpeg' }, { duration: true }) };
}

/** Every message waiting on `mp3` (about one job, if given), acknowledged. */
async function drainMp3(jobId?: string): Promise<Delivery[]> {
  const broker = await getBroker();
  const all: Delivery[] = [];
  for (let d = await broker.get('mp3'); d; d = await broker.get('mp3')) {
    d.ack();
    all.push(d);
  }
  return jobId ? all.filter((d) => JSON.parse(d.message.body.toString()).jobId === jobId) : all;
}

const ok = fixtures.filter((f) => f.expect === 'ok');
const failing = fixtures.filter((f) => f.expect === 'no-audio' || (f.expect === 'corrupt' && f.name !== 'empty'));

describe.each(backends())('conversion through the event path on $name backends', ({ env }) => {
  let stack: Stack;
  let user: TestUser;

  beforeAll(async () => {
    stack = await startStack(env, { sources: 'video' });
    for (const q of ['video', 'mp3', 'video.dlq', 'mp3.dlq'] as const) await (await getBroker()).purge(q);
    user = await newUser(stack);
  });
  afterAll(() => stack.close());

  it.each(ok.map((f) => [f.name, f] as const))('when a %s video is uploaded, then the job ends done and its MP3 lasts as long as the source', async (_name, fixture) => {
    const jobId = await uploadFile(stack, user, readFixture(fixture.name), fixture.file);
    const view = await waitForEnd(stack, user, jobId);
    expect(view).toMatchObject({ status: 'done', mp3: { size: expect.any(Number) } });
    const { meta, mp3 } = await downloadMp3(stack, user, jobId);
    expect(view.mp3!.size).toBe(mp3.length);
    // Decoded with music-metadata (an independent MP3 parser), within 0.1 s of the source.
    expect(Math.abs(meta.format.duration! - fixture.durationSeconds)).toBeLessThanOrEqual(0.1);
    expect(Math.abs(view.mp3!.durationSeconds - fixture.durationSeconds)).toBeLessThanOrEqual(0.1);
    expect(meta.format.numberOfChannels).toBe(fixture.audioChannels);
    expect(meta.common.title).toBe(fixture.file.replace(/\.\w+$/, '')); // the default ID3 title

    // After `done`, convert publishes the outcome and then deletes the source video.
    const row = await eventually(async () => {
      const r = await (await getDb())('jobs').where({ id: jobId }).first();
      return r.video_blob_id === null ? r : undefined;
    }, 10_000, 'the source video to be deleted');
    expect(row).toMatchObject({ status: 'done', attempts: 1 });
    expect(Number(row.conversion_ms)).toBeGreaterThan(0);
    const events = await drainMp3(jobId);
    expect(events.map((e) => e.message.headers['ce-type'])).toEqual([eventTypes.conversionSucceeded]);
    expect(JSON.parse(events[0]!.message.body.toString())).toMatchObject({ jobId, owner: user.id, email: user.email, filename: fixture.file, bytes: mp3.length });
  });

  it('when options are given, then the MP3 has that bitrate, sample rate, channels, span and title', async () => {
    const jobId = await uploadFile(stack, user, readFixture('mp4'), 'opts.mp4', { bitrate: '128', sampleRate: '22050', channels: '1', start: '0.5', end: '2.5', title: 'Über <title>' });
    expect((await waitForEnd(stack, user, jobId)).status).toBe('done');
    const { meta } = await downloadMp3(stack, user, jobId);
    expect(meta.format).toMatchObject({ bitrate: 128_000, sampleRate: 22050, numberOfChannels: 1 });
    expect(Math.abs(meta.format.duration! - 2)).toBeLessThanOrEqual(0.1);
    expect(meta.common.title).toBe('Über <title>');
    await drainMp3();
  });

  it.each(failing.map((f) => [f.name, f] as const))('when the upload is %s, then the job fails with a message, once, with no retry loop', async (_name, fixture) => {
    const jobId = await uploadFile(stack, user, readFixture(fixture.name), fixture.file);
    const view = await waitForEnd(stack, user, jobId);
    expect(view.status).toBe('failed');
    expect(view.error).toMatch(/\w+ \w+/);
    if (fixture.expect === 'no-audio') expect(view.error).toMatch(/no audio/i);
    await new Promise((r) => setTimeout(r, 300)); // a retry loop would show up as more attempts or events
    const row = await (await getDb())('jobs').where({ id: jobId }).first();
    expect(row.attempts).toBeLessThanOrEqual(1);
    const events = await drainMp3(jobId);
    expect(events.map((e) => e.message.headers['ce-type'])).toEqual([eventTypes.conversionFailed]);
    expect(JSON.parse(events[0]!.message.body.toString())).toMatchObject({ jobId, message: view.error });
    expect(await (await getBroker()).depth('video.dlq')).toBe(0);
  });

  it('when the same event is delivered twice, then one MP3 and one conversion.succeeded', async () => {
    const broker = await getBroker();
    const source = stack.sources[0]!;
    await source.stop(); // hold deliveries so both copies are queued
    const jobId = await uploadFile(stack, user, readFixture('webm'), 'twice.webm');
    const original = (await broker.get('video'))!;
    original.ack();
    await broker.publish('video', original.message);
    await broker.publish('video', original.message);
    stack.sources[0] = await startSource(broker, { ...stack.config.sources.video, parallelism: 2, queue: 'video', sink: `${stack.internalUrl}/convert/` });
    expect((await waitForEnd(stack, user, jobId)).status).toBe('done');
    await eventually(async () => ((await broker.depth('video')) === 0 ? true : undefined));
    await new Promise((r) => setTimeout(r, 1500)); // let the second delivery finish
    const events = await drainMp3(jobId);
    expect(events.map((e) => e.message.headers['ce-type'])).toEqual([eventTypes.conversionSucceeded]);
    const row = await (await getDb())('jobs').where({ id: jobId }).first();
    expect(row.mp3_blob_id).toBe(jobId);
    expect(await (await getBlobs()).stat('mp3s', jobId)).toMatchObject({ size: Number(row.mp3_bytes) });
  });

  it('when a malformed event arrives, then convert answers 400 and the source dead-letters it instead of retrying', async () => {
    const broker = await getBroker();
    await broker.publish('video', { body: Buffer.from('{"jobId":1}'), contentType: 'application/json', messageId: 'bad-1', headers: { 'ce-specversion': '1.0', 'ce-id': 'bad-1', 'ce-type': eventTypes.videoUploaded, 'ce-source': '/x', 'content-type': 'application/json' } });
    await eventually(async () => ((await broker.depth('video.dlq')) === 1 ? true : undefined), 10_000, 'dead letter');
    const dead = (await broker.get('video.dlq'))!;
    dead.ack();
    expect(dead.message.messageId).toBe('bad-1');
  });

  it.each(['convert', 'notify'])('when an event larger than 1 MiB reaches %s, then it answers 400 (which the source does not retry), not 413 (which it does)', async (fn) => {
    const res = await fetch(`${stack.internalUrl}/${fn}/`, {
      method: 'POST',
      headers: { 'ce-specversion': '1.0', 'ce-id': 'big-1', 'ce-type': eventTypes.videoUploaded, 'ce-source': '/video2mp3', 'content-type': 'application/json' },
      body: JSON.stringify({ jobId: 'x', padding: 'x'.repeat(1024 * 1024) }),
    });
    expect(res.status).toBe(400);
    expect(await res.json()).toEqual({ error: { code: 'too_large', message: expect.stringContaining('the event is larger than the limit of 1048576 bytes') } });
  });
});

const services = backends().find((b) => b.name === 'services');

describe.runIf(services)('conversion when things break (real services)', () => {
  let stack: Stack | undefined;
  let child: ChildProcess | undefined;
  afterEach(async () => {
    child?.kill('SIGKILL');
    await stack?.close();
    stack = undefined;
  });

  it('when storage is down during a conversion, then convert answers 503, the source retries, and the job completes once it is back', async () => {
    const mongo = new URL(services!.env.MONGODB_URI!);
    const proxy = await startProxy({ host: mongo.hostname, port: Number(mongo.port) });
    mongo.host = `127.0.0.1:${proxy.port}`;
    stack = await startStack({ ...services!.env, MONGODB_URI: mongo.toString(), VIDEO_SOURCE_RETRY: '10', VIDEO_SOURCE_BACKOFF_DELAY: 'PT0.5S' });
    await (await getBroker()).purge('video');
    const user = await newUser(stack);
    const jobId = await uploadFile(stack, user, readFixture('mp4'), 'retry.mp4');
    await proxy.down();
    const statuses: number[] = [];
    const server = stack.internalServer;
    server.on('request', (req, res) => { if (req.headers['ce-type']) res.on('finish', () => statuses.push(res.statusCode)); });
    stack.sources.push(await startSource(await getBroker(), { ...stack.config.sources.video, retry: 10, backoffDelayMs: 500, queue: 'video', sink: `${stack.internalUrl}/convert/` }));
    await eventually(async () => (statuses.includes(503) ? true : undefined), 30_000, 'a 503');
    const row = await (await getDb())('jobs').where({ id: jobId }).first();
    expect(row.status).not.toBe('failed');
    await proxy.up();
    expect((await waitForEnd(stack, user, jobId)).status).toBe('done');
    await eventually(async () => (statuses.at(-1) === 200 ? true : undefined), 10_000, 'a 200');
    expect(statuses.filter((x) => x !== 503)).toEqual([200]);
    await proxy.close();
    await drainMp3();
  });

  it('when the converter is killed mid-job, then its claim lapses, the maintenance tick re-drives the job and it completes', async () => {
    const env = { ...services!.env, CONVERT_LEASE_SECONDS: '2' };
    stack = await startStack(env);
    await (await getBroker()).purge('video');
    const user = await newUser(stack);
    const port = await freePort();
    const root = path.resolve(__dirname, '..');
    const startConverter = () => spawn(process.execPath, ['--import', 'tsx', path.join(root, 'test/support/serve-function.ts'), 'convert'], {
      cwd: root,
      env: { ...process.env, ...env, PORT: String(port), DATA_DIR: stack!.config.dataDir, LOG_LEVEL: 'warn' },
      stdio: ['ignore', 'inherit', 'inherit'],
    });
    child = startConverter();
    await eventually(async () => (await fetch(`http://127.0.0.1:${port}/healthz`).then((r) => r.ok, () => false)) || undefined, 20_000, 'converter up');

    const jobId = await uploadFile(stack, user, fs.readFileSync(path.join(root, 'test/fixtures/long-5min.mp4')), 'long.mp4');
    stack.sources.push(await startSource(await getBroker(), { ...stack.config.sources.video, retry: 8, backoffDelayMs: 500, queue: 'video', sink: `http://127.0.0.1:${port}/` }));
    await eventually(async () => {
      const row = await (await getDb())('jobs').where({ id: jobId }).first();
      return row.status === 'converting' && row.attempts === 1 ? true : undefined;
    }, 20_000, 'conversion to start');
    child.kill('SIGKILL');
    await new Promise((r) => child!.once('exit', r));
    expect((await (await getDb())('jobs').where({ id: jobId }).first()).status).toBe('converting');

    // The source's retry finds the dead converter's claim still held and converts nothing (a duplicate
    // must not convert the job twice at once); once the claim has lapsed, the tick re-drives the job.
    child = startConverter();
    stack.sources.push(startPing({ sink: `http://127.0.0.1:${port}/maintenance`, intervalMs: 1000 }));
    const view = await waitForEnd(stack, user, jobId, 90_000);
    expect(view.status).toBe('done');
    expect(view.mp3!.durationSeconds).toBeCloseTo(300, 0);
    const row = await (await getDb())('jobs').where({ id: jobId }).first();
    expect(row.attempts).toBe(2);
    const events: Delivery[] = [];
    await eventually(async () => (events.push(...(await drainMp3(jobId))) > 0 ? true : undefined), 10_000, 'the outcome event');
    await new Promise((r) => setTimeout(r, 500));
    events.push(...(await drainMp3(jobId)));
    expect(events.map((e) => e.message.headers['ce-type'])).toEqual([eventTypes.conversionSucceeded]);
  }, 150_000); // two converter starts, each warming its instances, on a shared machine
});
