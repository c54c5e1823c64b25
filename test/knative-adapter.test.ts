// The pipeline as deployed, minus Kubernetes: the bundled functions (`node dist/<fn>/index.js`), each its
// own process configured from the manifests (test/support/manifests.ts), fed by two real Knative RabbitMQ
// receive adapters — `video` → convert and `mp3` → notify — on real MariaDB, FerretDB, RabbitMQ and an
// SMTP server. Each adapter gets the env of the receive-adapter Deployment that eventing-rabbitmq's
// controller made from knative/50-sources.yaml on the test control plane (test/support/knative-deployment.ts),
// with only the broker, vhost and sink URL replaced. Needs .bin/receive-adapter-v0.48.0
// (scripts/receive-adapter.sh) and the control plane (scripts/kube.sh, scripts/knative.sh); under CI
// their absence fails the run.
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { MongoClient } from 'mongodb';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { functionNames, loadConfig, type FunctionName } from '../lib/core/config';
import { eventTypes } from '../lib/messaging/events';
import { createBroker, type Broker } from '../lib/messaging/queue';
import { backoff } from '../lib/messaging/source';
import { readFixture, type FixtureName } from './fixtures';
import { startSmtp, type SmtpServer } from './support-smtp';
import { adapterAvailable, adapterBroker, startAdapter, type RunningAdapter } from './support/adapter';
import { ensureBundles, killBundles, startBundle, type RunningFunction } from './support/bundles';
import { controlPlaneAvailable } from './support/control-plane';
import { adapterDeployments, deployedAdapterEnv, type AdapterDeployments } from './support/knative-deployment';
import { functionEnv, sourceFor } from './support/manifests';
import { freePort } from './support/net';
import { backends, eventually, uniqueName, videoForm } from './support/stack';

const services = backends().find((b) => b.name === 'services');
const enabled = services !== undefined && adapterAvailable() && controlPlaneAvailable();

interface JobView { jobId: string; status: string; error?: string }

describe.runIf(enabled)('the bundled functions behind the real Knative RabbitMQ receive adapters', () => {
  let smtp: SmtpServer;
  let broker: Broker;
  let mongo: MongoClient;
  const ports = {} as Record<FunctionName, number>;
  const running = {} as Record<FunctionName, RunningFunction>;
  const adapters = {} as Record<'convert' | 'notify', RunningAdapter>;
  let local: Record<string, string>;
  let deployed: AdapterDeployments;

  const url = (fn: FunctionName) => `http://127.0.0.1:${ports[fn]}`;

  const startFunction = (fn: FunctionName): Promise<RunningFunction> =>
    startBundle(fn, ports[fn], functionEnv(fn, { ...local, PORT: String(ports[fn]) }));

  const startSourceFor = (fn: 'convert' | 'notify') =>
    startAdapter(deployedAdapterEnv(deployed, sourceFor(fn).metadata.name, { ...adapterBroker(services!.env.AMQP_URL!), sink: `${url(fn)}/` }));

  beforeAll(async () => {
    deployed = await adapterDeployments();
    ensureBundles();
    smtp = await startSmtp();
    const mongoUri = new URL(services!.env.MONGODB_URI!);
    mongoUri.pathname = `/${uniqueName('adapter')}`;
    const keys = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    for (const fn of functionNames) ports[fn] = await freePort();
    // What a cluster resolves differently: Secret values, and where each function is reached.
    local = {
      DATABASE_URL: services!.env.DATABASE_URL!,
      MONGODB_URI: mongoUri.toString(),
      AMQP_URL: services!.env.AMQP_URL!,
      SMTP_URL: smtp.url,
      JWT_PRIVATE_KEY: keys.privateKey.export({ format: 'pem', type: 'pkcs8' }).toString(),
      JWT_PUBLIC_KEY: keys.publicKey.export({ format: 'pem', type: 'spki' }).toString(),
      LINK_SECRET: randomBytes(32).toString('hex'),
      PUBLIC_URL: url('auth'),
      DOWNLOAD_URL: url('download'),
      LOG_LEVEL: 'warn',
      // Every case signs up from 127.0.0.1 and the burst case keeps 6 jobs in flight: the manifests'
      // abuse limits (tested on their own in security.test.ts) would refuse the test itself.
      SIGNUP_MAX_PER_HOUR: '1000',
      MAX_JOBS_IN_FLIGHT: '100',
    };
    broker = createBroker(loadConfig({ AMQP_URL: services!.env.AMQP_URL }));
    for (const q of ['video', 'mp3', 'video.dlq', 'mp3.dlq'] as const) await broker.purge(q);
    mongo = await MongoClient.connect(local.MONGODB_URI!);
    // One at a time: each runs the migrations on start, and they share two cores.
    for (const fn of functionNames) running[fn] = await startFunction(fn);
    adapters.convert = await startSourceFor('convert');
    adapters.notify = await startSourceFor('notify');
  }, 600_000);

  afterAll(async () => {
    await Promise.all(Object.values(adapters).map((a) => a.stop()));
    await Promise.all(Object.values(running).map((f) => f.stop()));
    killBundles();
    await mongo?.close();
    await broker?.close();
    await smtp?.close();
  });

  async function newUser() {
    const email = `${uniqueName('adapter')}@example.com`;
    const body = JSON.stringify({ email, password: 'correct horse battery' });
    const headers = { 'content-type': 'application/json' };
    expect((await fetch(`${url('auth')}/signup`, { method: 'POST', headers, body })).status).toBe(201);
    const { token } = (await (await fetch(`${url('auth')}/login`, { method: 'POST', headers, body })).json()) as { token: string };
    return { email, auth: { authorization: `Bearer ${token}` } };
  }

  async function upload(user: { auth: Record<string, string> }, fixture: FixtureName, filename: string): Promise<string> {
    const res = await fetch(`${url('upload')}/`, { method: 'POST', headers: user.auth, body: videoForm(readFixture(fixture), filename) });
    expect(res.status, await res.clone().text()).toBe(202);
    return ((await res.json()) as { jobId: string }).jobId;
  }

  const waitForEnd = (user: { auth: Record<string, string> }, jobId: string, ms = 60_000) => eventually(async () => {
    const view = (await (await fetch(`${url('download')}/jobs/${jobId}`, { headers: user.auth })).json()) as JobView;
    return view.status === 'done' || view.status === 'failed' ? view : undefined;
  }, ms, `job ${jobId} to end`);

  const mp3s = (jobId: string) => mongo.db().collection('mp3s.files').countDocuments({ _id: jobId as never });
  const emails = (jobId: string) => smtp.received.filter((m) => m.parsed.text?.includes(`File id: ${jobId}`));

  /** Waits until both queues are empty and nothing more arrives for a moment (duplicates would show up then). */
  async function settle() {
    await eventually(async () => ((await broker.depth('video')) + (await broker.depth('mp3')) === 0 ? true : undefined), 30_000, 'the queues to drain');
    await new Promise((r) => setTimeout(r, 1500));
  }

  it('when a valid and an invalid video are uploaded, then they end done and failed, with one MP3 and one email each', async () => {
    const user = await newUser();
    const good = await upload(user, 'mp4', 'good.mp4');
    const bad = await upload(user, 'no-audio', 'silent.mp4');
    expect((await waitForEnd(user, good)).status).toBe('done');
    const failed = await waitForEnd(user, bad);
    expect(failed).toMatchObject({ status: 'failed', error: expect.stringMatching(/no audio/i) });
    await eventually(async () => (emails(good).length > 0 && emails(bad).length > 0 ? true : undefined), 30_000, 'both emails');
    await settle();
    expect([await mp3s(good), await mp3s(bad)]).toEqual([1, 0]);
    expect(emails(good).map((m) => m.parsed.subject)).toEqual(['Your MP3 is ready: good.mp4']);
    expect(emails(bad).map((m) => m.parsed.subject)).toEqual([expect.stringMatching(/could not be converted/)]);
    expect(emails(good)[0]!.envelope.to).toEqual([user.email]);
    expect(await broker.depth('video.dlq') + await broker.depth('mp3.dlq')).toBe(0);
  });

  it('when poison messages arrive, then they land in the dead-letter queue and the next upload still converts', async () => {
    for (const q of ['video.dlq', 'mp3.dlq'] as const) await broker.purge(q);
    const user = await newUser();
    // A CloudEvent of ours whose data is not a job: convert answers 400, never retried.
    await broker.publish('video', {
      body: Buffer.from('{"jobId":"nope"}'), contentType: 'application/json', messageId: 'poison-data',
      headers: { 'ce-specversion': '1.0', 'ce-id': 'poison-data', 'ce-type': eventTypes.videoUploaded, 'ce-source': '/video2mp3', 'content-type': 'application/json' },
    });
    // Not even a valid CloudEvent (no type): the adapter nacks it without a request.
    await broker.publish('video', {
      body: Buffer.from('{}'), contentType: 'application/json', messageId: 'poison-event',
      headers: { 'ce-specversion': '1.0', 'ce-id': 'poison-event', 'ce-source': '/video2mp3' },
    });
    await eventually(async () => ((await broker.depth('video.dlq')) === 2 ? true : undefined), 20_000, 'two dead letters');
    const dead: string[] = [];
    for (let d = await broker.get('video.dlq'); d; d = await broker.get('video.dlq')) { dead.push(d.message.messageId); d.ack(); }
    expect(dead.sort()).toEqual(['poison-data', 'poison-event']);

    const jobId = await upload(user, 'webm', 'after-poison.webm');
    expect((await waitForEnd(user, jobId)).status).toBe('done');
    await eventually(async () => (emails(jobId).length === 1 ? true : undefined), 30_000, 'the email');
  });

  it('when an event larger than the receivers take arrives, then it is dead-lettered at once instead of retried through the source\'s window', async () => {
    for (const q of ['video.dlq', 'mp3.dlq'] as const) await broker.purge(q);
    const { delivery } = sourceFor('convert').spec;
    const policy = { backoffPolicy: delivery!.backoffPolicy ?? 'exponential', backoffDelayMs: Number(/PT([\d.]+)S/.exec(delivery!.backoffDelay!)![1]) * 1000 };
    const window = Array.from({ length: delivery!.retry! }, (_, i) => backoff(policy, i + 1)).reduce((a, b) => a + b, 0);
    await broker.publish('video', {
      body: Buffer.from(JSON.stringify({ jobId: 'big', padding: 'x'.repeat(1024 * 1024) })), contentType: 'application/json', messageId: 'too-big',
      headers: { 'ce-specversion': '1.0', 'ce-id': 'too-big', 'ce-type': eventTypes.videoUploaded, 'ce-source': '/video2mp3', 'content-type': 'application/json' },
    });
    // Retried (a 413), it would reach the dead-letter queue only after the whole window (127 s with the manifests' delivery).
    const dead = await eventually(() => broker.get('video.dlq'), window / 4, 'the dead letter');
    dead.ack();
    expect(dead.message.messageId).toBe('too-big');
  });

  it('when the same video event is delivered twice, then one MP3 and one email', async () => {
    const user = await newUser();
    await adapters.convert.stop(); // hold deliveries so both copies are queued
    const jobId = await upload(user, 'mkv', 'twice.mkv');
    const original = await eventually(() => broker.get('video'), 10_000, 'the video event');
    original.ack();
    await broker.publish('video', original.message);
    await broker.publish('video', original.message);
    adapters.convert = await startSourceFor('convert');
    expect((await waitForEnd(user, jobId)).status).toBe('done');
    await eventually(async () => (emails(jobId).length > 0 ? true : undefined), 30_000, 'the email');
    await settle();
    expect(await mp3s(jobId)).toBe(1);
    expect(emails(jobId)).toHaveLength(1);
    expect(await broker.depth('video.dlq')).toBe(0);
  });

  it('when convert is stopped mid-burst for a quarter of the retry window, then every job still ends done, once, with nothing dead-lettered', async () => {
    // The window the manifests allow a delivery: the waits before retries 1…retry (12.4 s for 5 from PT0.2S).
    const { delivery } = sourceFor('convert').spec;
    const policy = { backoffPolicy: delivery!.backoffPolicy ?? 'exponential', backoffDelayMs: Number(/PT([\d.]+)S/.exec(delivery!.backoffDelay!)![1]) * 1000 };
    const window = Array.from({ length: delivery!.retry! }, (_, i) => backoff(policy, i + 1)).reduce((a, b) => a + b, 0);
    const user = await newUser();
    const fixtures: FixtureName[] = ['mp4', 'mov', 'mkv', 'webm', 'flv', 'avi'];
    const jobs: string[] = [];
    const uploadNext = async () => { const f = fixtures[jobs.length]!; jobs.push(await upload(user, f, `burst-${jobs.length}.${f}`)); };
    await uploadNext();
    await uploadNext();
    await waitForEnd(user, jobs[0]!); // convert is at work…
    await running.convert.stop('SIGKILL'); // …when it goes away, and the rest of the burst arrives
    while (jobs.length < fixtures.length) await uploadNext();
    // The adapter has prefetched them (up to 100), so RabbitMQ shows none ready while convert is down.
    await eventually(async () => ((await broker.depth('video')) === 0 ? true : undefined), 5_000, 'the adapter to hold the burst');
    await new Promise((r) => setTimeout(r, window / 4));
    running.convert = await startFunction('convert');
    for (const jobId of jobs) expect((await waitForEnd(user, jobId, 60_000)).status, jobId).toBe('done');
    await eventually(async () => (jobs.every((j) => emails(j).length > 0) ? true : undefined), 30_000, 'every email');
    await settle();
    for (const jobId of jobs) {
      expect(await mp3s(jobId), jobId).toBe(1);
      expect(emails(jobId), jobId).toHaveLength(1);
    }
    expect(await broker.depth('video.dlq')).toBe(0);
  }, 120_000);
});
