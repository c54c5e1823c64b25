// Fair scheduling and atomic quotas (docs/scheduling.md): bursts of parallel uploads at two upload
// replicas (separate processes on one database) cannot pass MAX_JOBS_QUEUED, by POST or by tus; at
// most MAX_JOBS_IN_FLIGHT of a user's jobs have their turn at once; another user's upload is not
// queued behind a batch; a `video` event for a job whose turn has not come converts nothing; and two
// deliveries of one job do not convert it twice.
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { getBroker, type Consumer } from '../lib/messaging/queue';
import { startSource } from '../lib/messaging/source';
import { findJob } from '../lib/pipeline/jobs';
import { videoUploadedOf } from '../lib/pipeline/scheduling';
import { getDb } from '../lib/storage/db';
import { readFixture } from './fixtures';
import { toHttp } from './support/events';
import { freePort } from './support/net';
import { backends, eventually, newUser, startStack, videoForm, type Stack, type TestUser } from './support/stack';

const root = path.resolve(__dirname, '..');
const clip = readFixture('mp4');

interface Row { id: string; status: string; released_at: unknown; attempts: unknown }
const rowsOf = async (owner: string): Promise<Row[]> => (await getDb())('jobs').where({ owner_id: owner }).select('id', 'status', 'released_at', 'attempts');
const unfinished = (rows: Row[]) => rows.filter((r) => r.status === 'queued' || r.status === 'converting');
const released = (rows: Row[]) => unfinished(rows).filter((r) => r.released_at !== null);

/** A tus creation (no bytes yet), as tus-js-client sends it. */
const tusCreate = (url: string, user: TestUser, name: string) => fetch(`${url}/files`, {
  method: 'POST',
  headers: { ...user.auth, 'Tus-Resumable': '1.0.0', 'Upload-Length': String(clip.length), 'Upload-Metadata': `filename ${Buffer.from(name).toString('base64')}` },
});
const tusFinish = (url: string, user: TestUser, location: string) => fetch(new URL(location, url), {
  method: 'PATCH',
  headers: { ...user.auth, 'Tus-Resumable': '1.0.0', 'Upload-Offset': '0', 'Content-Type': 'application/offset+octet-stream' },
  body: clip,
});

describe.each(backends())('quotas under bursts at two upload replicas on $name backends', ({ env }) => {
  const limits = { MAX_JOBS_QUEUED: '3', MAX_JOBS_IN_FLIGHT: '1' };
  let stack: Stack;
  const replicas: ChildProcess[] = [];
  const urls: string[] = [];

  beforeAll(async () => {
    stack = await startStack({ ...env, ...limits }); // no converter: accepted jobs stay unfinished
    if (env.AMQP_URL) await (await getBroker()).purge('video');
    for (let i = 0; i < 2; i++) {
      const port = await freePort();
      replicas.push(spawn(process.execPath, ['--import', 'tsx', path.join(root, 'test/support/serve-function.ts'), 'upload'], {
        cwd: root,
        env: { ...process.env, ...env, ...limits, PORT: String(port), DATA_DIR: stack.config.dataDir, LOG_LEVEL: 'warn', DOWNLOAD_URL: stack.config.downloadUrl },
        stdio: ['ignore', 'inherit', 'inherit'],
      }));
      urls.push(`http://127.0.0.1:${port}`);
    }
    for (const url of urls) await eventually(async () => (await fetch(`${url}/healthz`).then((r) => r.ok, () => false)) || undefined, 30_000, 'an upload replica');
  }, 60_000);
  afterAll(async () => {
    for (const child of replicas) child.kill('SIGKILL');
    if (env.AMQP_URL) await (await getBroker()).purge('video');
    await stack.close();
  });

  it('when 10 POSTs arrive at once, alternating between the replicas, then exactly MAX_JOBS_QUEUED are accepted and one has its turn', async () => {
    const user = await newUser(stack);
    const responses = await Promise.all(Array.from({ length: 10 }, (_, i) =>
      fetch(`${urls[i % 2]}/`, { method: 'POST', headers: user.auth, body: videoForm(clip, `burst ${i}.mp4`) })));
    const statuses = responses.map((r) => r.status).sort();
    expect(statuses).toEqual([202, 202, 202, 429, 429, 429, 429, 429, 429, 429]);
    for (const res of responses.filter((r) => r.status === 429)) {
      expect(Number(res.headers.get('retry-after'))).toBeGreaterThan(0);
      expect(((await res.json()) as { error: { message: string } }).error.message).toMatch(/3 jobs waiting or converting \(MAX_JOBS_QUEUED\)/);
    }
    const rows = await rowsOf(user.id);
    expect(unfinished(rows)).toHaveLength(3);
    expect(released(rows)).toHaveLength(1); // MAX_JOBS_IN_FLIGHT
  });

  it('when 6 tus uploads are created at once across the replicas and then finished, then only MAX_JOBS_QUEUED become jobs', async () => {
    const user = await newUser(stack);
    const created = await Promise.all(Array.from({ length: 6 }, (_, i) => tusCreate(urls[i % 2]!, user, `tus ${i}.mp4`)));
    expect(created.map((r) => r.status).sort()).toEqual([201, 201, 201, 429, 429, 429]);
    const refused = created.find((r) => r.status === 429)!;
    expect(Number(refused.headers.get('retry-after'))).toBeGreaterThan(0);
    expect(((await refused.json()) as { error: { message: string } }).error.message).toMatch(/MAX_JOBS_QUEUED/);

    const locations = created.filter((r) => r.status === 201).map((r) => r.headers.get('location')!);
    const finished = await Promise.all(locations.map((location, i) => tusFinish(urls[(i + 1) % 2]!, user, location)));
    expect(finished.map((r) => r.status)).toEqual([204, 204, 204]);
    const rows = await rowsOf(user.id);
    expect(unfinished(rows)).toHaveLength(3);
    expect(released(rows)).toHaveLength(1);
    // The places are taken: neither a new upload nor a POST gets in.
    expect((await tusCreate(urls[0]!, user, 'one more.mp4')).status).toBe(429);
    expect((await fetch(`${urls[1]}/`, { method: 'POST', headers: user.auth, body: videoForm(clip, 'one more.mp4') })).status).toBe(429);
  });
});

describe.each(backends())('turns on $name backends', ({ env }) => {
  let stack: Stack;
  let source: Consumer | undefined;

  beforeAll(async () => {
    stack = await startStack({ ...env, MAX_JOBS_IN_FLIGHT: '3' }); // the video source is started by each test
    if (env.AMQP_URL) await (await getBroker()).purge('video');
  });
  afterAll(async () => {
    await source?.stop();
    if (env.AMQP_URL) await (await getBroker()).purge('video');
    await stack.close();
  });

  const startConverting = async () => {
    source = await startSource(await getBroker(), { ...stack.config.sources.video, queue: 'video', sink: `${stack.internalUrl}/convert/` });
  };
  const post = (user: TestUser, name: string) => fetch(`${stack.url}/upload/`, { method: 'POST', headers: user.auth, body: videoForm(clip, name) });
  const postEvent = async (jobId: string) => {
    const event = videoUploadedOf((await findJob(await getDb(), jobId))!);
    const res = await fetch(`${stack.internalUrl}/convert/`, { method: 'POST', ...toHttp(event) });
    return ((await res.json()) as { outcome: string }).outcome;
  };

  it('when one user queues 12 and another then uploads 1, then the other\'s starts in the first round, and the first never has more than 3 turns', async () => {
    const [a, b] = [await newUser(stack), await newUser(stack)];
    const batch = await Promise.all(Array.from({ length: 12 }, (_, i) => post(a, `batch ${i}.mp4`)));
    expect(batch.map((r) => r.status)).toEqual(batch.map(() => 202));
    const single = await post(b, 'single.mp4');
    expect(single.status).toBe(202);
    const { jobId } = (await single.json()) as { jobId: string };
    expect(released(await rowsOf(a.id))).toHaveLength(3);

    // A forged or repeated event for one of the batch's waiting jobs converts nothing and loses nothing.
    const waiting = unfinished(await rowsOf(a.id)).find((r) => r.released_at === null)!;
    expect(await postEvent(waiting.id)).toBe('not-its-turn');
    expect((await findJob(await getDb(), waiting.id))!).toMatchObject({ status: 'queued', releasedAt: null, attempts: 0 });

    await startConverting();
    let most = 0;
    let batchLeft = -1;
    await eventually(async () => {
      const rows = await rowsOf(a.id);
      most = Math.max(most, released(rows).length);
      if (batchLeft < 0 && (await findJob(await getDb(), jobId))!.status === 'done') batchLeft = unfinished(rows).length;
      return unfinished(rows).length === 0 && batchLeft >= 0 ? true : undefined;
    }, 120_000, 'the batch and the single upload to be done');
    expect(most).toBeLessThanOrEqual(3);
    // It was published behind at most the batch's 3 turns, so the source's 4 slots took it in the first round.
    expect(batchLeft).toBeGreaterThanOrEqual(12 - 2 * 3);
    expect((await rowsOf(a.id)).map((r) => r.status)).toEqual(batch.map(() => 'done'));
    expect((await findJob(await getDb(), waiting.id))!.attempts).toBe(1);
  });

  it('when one job\'s event is delivered twice at once, then it is converted once: the second finds it claimed', async () => {
    await source?.stop();
    source = undefined;
    const user = await newUser(stack);
    const res = await post(user, 'twice.mp4');
    const { jobId } = (await res.json()) as { jobId: string };
    const outcomes = await Promise.all([postEvent(jobId), postEvent(jobId)]);
    expect(outcomes.sort()).toEqual(['claimed', 'converted']);
    expect(await findJob(await getDb(), jobId)).toMatchObject({ status: 'done', attempts: 1 });
  });

  it('when a delivery finds a claim that stopped being renewed, then it is a 503 to retry, and once the claim lapses the job converts', async () => {
    const user = await newUser(stack);
    const { jobId } = (await (await post(user, 'abandoned.mp4')).json()) as { jobId: string };
    const db = await getDb();
    // What a converter killed mid-job leaves: converting, its claim unrenewed for most of the lease.
    await db('jobs').where({ id: jobId }).update({ status: 'converting', claim_token: 'dead', claim_expires_at: Date.now() + 2000 });
    const event = videoUploadedOf((await findJob(db, jobId))!);
    const res = await fetch(`${stack.internalUrl}/convert/`, { method: 'POST', ...toHttp(event) });
    expect(res.status).toBe(503);
    expect(await findJob(db, jobId)).toMatchObject({ status: 'converting', attempts: 0 });
    await db('jobs').where({ id: jobId }).update({ claim_expires_at: Date.now() - 1 });
    expect(await postEvent(jobId)).toBe('converted');
  });
});
