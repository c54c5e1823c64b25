// The reconciler through convert's /maintenance route: events lost on the way (purged here, as a
// dead-lettering outage or a dying process loses them) are published again from what the database says,
// on the embedded backends and on MariaDB + FerretDB + RabbitMQ.
import fs from 'node:fs';
import path from 'node:path';
import { HTTP } from 'cloudevents';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { maintenanceTick } from '../lib/messaging/events';
import { getBroker } from '../lib/messaging/queue';
import { startSource } from '../lib/messaging/source';
import { getDb } from '../lib/storage/db';
import { readFixture } from './fixtures';
import { startSmtp, type SmtpServer } from './support-smtp';
import { backends, eventually, newUser, startStack, videoForm, type Stack, type TestUser } from './support/stack';

describe.each(backends())('the reconciler on $name backends', ({ name, env }) => {
  let stack: Stack;
  let smtp: SmtpServer | undefined;
  let user: TestUser;

  beforeAll(async () => {
    if (name === 'services') smtp = await startSmtp();
    stack = await startStack({ ...env, ...(smtp ? { SMTP_URL: smtp.url } : {}), RECONCILE_AFTER_SECONDS: '1' });
    for (const q of ['video', 'mp3', 'video.dlq', 'mp3.dlq'] as const) await (await getBroker()).purge(q);
    user = await newUser(stack);
  });
  afterAll(async () => {
    await stack.close();
    await smtp?.close();
  });

  const tick = async (type?: string) => {
    const message = HTTP.binary(maintenanceTick());
    const headers = { ...(message.headers as Record<string, string>), ...(type ? { 'ce-type': type } : {}) };
    const res = await fetch(`${stack.internalUrl}/convert/maintenance`, { method: 'POST', headers, body: message.body as string });
    return { status: res.status, body: (await res.json()) as { reconciled: { conversions: number; outcomes: number; notifications: number; redriven: number } } };
  };
  const startVideoSource = async () => stack.sources.push(await startSource(await getBroker(), { ...stack.config.sources.video, queue: 'video', sink: `${stack.internalUrl}/convert/` }));
  const startMp3Source = async () => stack.sources.push(await startSource(await getBroker(), { ...stack.config.sources.mp3, queue: 'mp3', sink: `${stack.internalUrl}/notify/` }));
  const stopSources = async () => { await Promise.all(stack.sources.splice(0).map((s) => s.stop())); };
  const upload = async () => {
    const res = await fetch(`${stack.url}/upload/`, { method: 'POST', headers: user.auth, body: videoForm(readFixture('mp4'), 'clip.mp4') });
    expect(res.status).toBe(202);
    return ((await res.json()) as { jobId: string }).jobId;
  };
  const status = async (jobId: string) =>
    ((await (await fetch(`${stack.url}/download/jobs/${jobId}`, { headers: user.auth })).json()) as { status: string }).status;
  const mailsAbout = (jobId: string): number => {
    if (smtp) return smtp.received.filter((m) => m.parsed.text?.includes(jobId)).length;
    const outbox = path.join(stack.config.dataDir, 'outbox');
    return fs.existsSync(outbox) ? fs.readdirSync(outbox).filter((f) => f.includes(jobId)).length : 0;
  };
  const settle = () => new Promise((r) => setTimeout(r, 1100)); // past RECONCILE_AFTER_SECONDS

  it('when a job\'s video event is lost, then a tick publishes it again and the job ends done with one email', async () => {
    await stopSources();
    const jobId = await upload();
    await (await getBroker()).purge('video');
    await settle();
    const { status: code, body } = await tick();
    expect(code).toBe(200);
    expect(body.reconciled.conversions).toBeGreaterThanOrEqual(1);
    expect(await (await getBroker()).depth('video')).toBeGreaterThanOrEqual(1);
    await startVideoSource();
    await startMp3Source();
    await eventually(async () => ((await status(jobId)) === 'done' ? true : undefined), 30_000, 'the job to be done');
    await eventually(async () => (mailsAbout(jobId) === 1 ? true : undefined), 20_000, 'the email');
  });

  /** A job converted with notify's source stopped, whose outcome event is then taken off `mp3`. */
  async function doneJobWithLostOutcome(): Promise<string> {
    await stopSources();
    await startVideoSource();
    const jobId = await upload();
    await eventually(async () => ((await status(jobId)) === 'done' ? true : undefined), 30_000, 'the job to be done');
    await eventually(async () => ((await (await getBroker()).depth('mp3')) >= 1 ? true : undefined), 5000, 'the outcome event');
    await (await getBroker()).purge('mp3');
    return jobId;
  }

  it('when an outcome event is lost before notify got it, then a tick publishes it again and one email is sent', async () => {
    const jobId = await doneJobWithLostOutcome();
    await settle();
    expect((await tick()).body.reconciled.notifications).toBeGreaterThanOrEqual(1);
    await startMp3Source();
    await eventually(async () => (mailsAbout(jobId) === 1 ? true : undefined), 20_000, 'the email');
  });

  it('when convert crashed between recording the outcome and publishing it, then a tick publishes it', async () => {
    const jobId = await doneJobWithLostOutcome();
    // The state such a crash leaves: done, never published.
    await (await getDb())('jobs').where({ id: jobId }).update({ published_at: null });
    await settle();
    expect((await tick()).body.reconciled.outcomes).toBeGreaterThanOrEqual(1);
    await startMp3Source();
    await eventually(async () => (mailsAbout(jobId) === 1 ? true : undefined), 20_000, 'the email');
  });

  it('when every job has moved and every email is out, then a tick (also as a PingSource event) re-publishes nothing', async () => {
    await eventually(async () => ((await (await getBroker()).depth('mp3')) === 0 ? true : undefined), 20_000, 'mp3 to drain');
    await settle();
    for (const type of [undefined, 'dev.knative.sources.ping']) {
      const { status: code, body } = await tick(type);
      expect(code).toBe(200);
      expect(body.reconciled).toEqual({ imports: 0, conversions: 0, outcomes: 0, notifications: 0, turns: 0, redriven: 0 });
    }
  });

  it('when everything has settled, then each job was mailed exactly once despite the re-published events', async () => {
    const jobs = await (await getDb())('jobs').select('id').where({ owner_id: user.id });
    expect(jobs.length).toBe(3);
    for (const { id } of jobs) expect(mailsAbout(id as string)).toBe(1);
  });

  it('when the tick is not a CloudEvent, then it is a 400 and nothing runs', async () => {
    const res = await fetch(`${stack.internalUrl}/convert/maintenance`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' });
    expect(res.status).toBe(400);
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe('bad_request');
  });

  it('when an outage dead-lettered events, then a tick re-drives the unfinished job\'s, drops the finished job\'s and keeps a malformed one', async () => {
    await stopSources();
    const broker = await getBroker();
    const [unfinished, finished] = [await upload(), await upload()];
    await broker.publish('video', { body: Buffer.from('not json'), contentType: 'application/json', messageId: 'poison', headers: { 'ce-specversion': '1.0', 'ce-id': 'poison', 'ce-type': 'io.github.video2mp3.video.uploaded', 'ce-source': '/x', 'content-type': 'application/json' } });
    for (let i = 0; i < 3; i++) (await broker.get('video'))!.deadLetter(); // as the source does after its last retry
    await eventually(async () => ((await broker.depth('video.dlq')) === 3 ? true : undefined), 5000, 'three dead letters');
    const db = await getDb();
    await db('jobs').where({ id: finished }).update({ status: 'done' });
    await db('jobs').where({ id: unfinished }).update({ updated_at: Date.now() + 60_000 }); // not for its age: for its dead letter
    const { body } = await tick();
    expect(body.reconciled).toMatchObject({ conversions: 0, redriven: 1 });
    expect(await broker.depth('video')).toBe(1);
    expect(await broker.depth('video.dlq')).toBe(1);
    const kept = (await broker.get('video.dlq'))!;
    expect(kept.message.messageId).toBe('poison');
    kept.ack();
    await startVideoSource();
    await eventually(async () => ((await status(unfinished)) === 'done' ? true : undefined), 30_000, 'the re-driven job to be done');
    await db('jobs').where({ id: finished }).delete();
  });
});
