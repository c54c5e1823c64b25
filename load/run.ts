// One load run against the deployment of load/cluster.ts: what the users do, what is measured, and the
// invariants that must hold however many replicas serve them.
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { startCluster, type Cluster } from './cluster';
import { downloadMp3, passwordBurst, Recorder, signUp, uploadPost, uploadTus, waitForJob, type JobEnd, type User } from './clients';

export interface LoadOptions {
  replicas: number;
  /** Users uploading a batch each; half by multipart POST, half by tus. */
  users: number;
  batch: number;
  /** Users whose every job names a webhook receiver that always fails. */
  hostileWebhookUsers: number;
  /** Concurrent wrong passwords fired at one account. */
  passwordBurst: number;
  /** The whole run's bound, setup excluded. */
  timeLimitSeconds: number;
  log?: (line: string) => void;
}

export interface Invariant { name: string; held: boolean; detail: string }

export interface LoadResult {
  options: LoadOptions;
  jobs: { accepted: number; done: number; failed: number; perMinute: number; seconds: number };
  api: { label: string; count: number; p50: number; p99: number; non2xx: number }[];
  queueWait: { user: string; kind: string; jobs: number; p50: number; p99: number }[];
  mailDelay: { p50: number; p99: number };
  waits429: { count: number; seconds: number };
  invariants: Invariant[];
}

export function percentile(values: number[], p: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;
}

const video = () => fs.readFileSync(path.resolve(__dirname, '../test/fixtures/h264-aac.mp4'));

/** A webhook receiver that answers every delivery 500, counting them. */
async function failingReceiver(): Promise<{ url: string; hits: () => number; close(): Promise<void> }> {
  let hits = 0;
  const server = http.createServer((req, res) => { hits++; req.resume(); res.writeHead(500).end('no'); });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook`,
    hits: () => hits,
    close: () => new Promise<void>((resolve) => { server.closeAllConnections(); server.close(() => resolve()); }),
  };
}

/** The most jobs one owner had converting, and queued or converting, over the run (sampled from the database). */
function sampleInFlight(cluster: Cluster) {
  const max = { converting: 0, open: 0 };
  let stopped = false;
  const loop = (async () => {
    while (!stopped) {
      // The functions migrate at their first database use: until then there is no jobs table to read.
      const rows = (await cluster.db('jobs').select('owner_id')
        .sum({ converting: cluster.db.raw("CASE WHEN status = 'converting' THEN 1 ELSE 0 END") })
        .sum({ open: cluster.db.raw("CASE WHEN status IN ('queued', 'converting') THEN 1 ELSE 0 END") })
        .groupBy('owner_id')
        .catch(() => [])) as { converting: unknown; open: unknown }[];
      for (const r of rows) {
        max.converting = Math.max(max.converting, Number(r.converting));
        max.open = Math.max(max.open, Number(r.open));
      }
      await new Promise((r) => setTimeout(r, 200));
    }
  })();
  return { max, stop: async () => { stopped = true; await loop; } };
}

export async function runLoad(options: LoadOptions): Promise<LoadResult> {
  const log = options.log ?? (() => {});
  const receiver = await failingReceiver();
  const cluster = await startCluster({
    replicas: options.replicas,
    overrides: {
      // Every load user signs up from 127.0.0.1; the signup limit is tested on its own (test/security.test.ts).
      SIGNUP_MAX_PER_HOUR: '100000',
      // The hostile users' receiver listens on loopback, which the callback guard refuses by default.
      WEBHOOK_ALLOW_PRIVATE: 'true',
    },
  }, log);
  const sampler = sampleInFlight(cluster);
  const rec = new Recorder(Date.now() + options.timeLimitSeconds * 1000);
  try {
    const clip = video();
    const run = `${process.pid}-${Date.now().toString(36)}`;
    const kinds: ('post' | 'tus' | 'webhook')[] = [
      ...Array.from({ length: options.users }, (_, i) => (i % 2 === 0 ? 'post' as const : 'tus' as const)),
      ...Array.from({ length: options.hostileWebhookUsers }, () => 'webhook' as const),
    ];
    const users = await Promise.all(kinds.map((_, i) => signUp(rec, cluster.url.auth, `load-${run}-${i}@example.com`)));
    const victim = await signUp(rec, cluster.url.auth, `victim-${run}@example.com`);
    log(`${users.length} users signed up; uploading ${options.batch} videos each`);

    const ends: (JobEnd & { user: number })[] = [];
    const firstAccept = Date.now();
    const burst = passwordBurst(rec, cluster.url.auth, victim.email, options.passwordBurst);
    await Promise.all(users.map(async (user: User, u) => {
      const kind = kinds[u]!;
      const waits: Promise<void>[] = [];
      for (let i = 0; i < options.batch; i++) {
        const filename = `load-${u}-${i}.mp4`;
        const jobId = kind === 'tus'
          ? await uploadTus(rec, cluster.url.upload, user, clip, filename, 8 * 1024)
          : await uploadPost(rec, cluster.url.upload, user, clip, filename, kind === 'webhook' ? { callbackUrl: receiver.url } : {});
        const accepted = Date.now();
        waits.push(waitForJob(rec, cluster.url.download, user, jobId, accepted).then(async (end) => {
          ends.push({ ...end, user: u });
          if (end.status === 'done') await downloadMp3(rec, cluster.url.download, user, jobId);
        }));
      }
      await Promise.all(waits);
    }));
    const statuses = await burst;
    const lastEnd = Math.max(...ends.map((e) => e.ended));
    log(`${ends.length} jobs ended; waiting for the mail of each`);

    const doneJobs = ends.filter((e) => e.status === 'done');
    const mailsOf = (jobId: string) => cluster.smtp.received.filter((m) => m.parsed.text?.includes(jobId));
    const mailDeadline = Math.min(rec.deadline, Date.now() + 60_000);
    while (Date.now() < mailDeadline && ends.some((e) => mailsOf(e.jobId).length === 0)) await new Promise((r) => setTimeout(r, 250));
    await new Promise((r) => setTimeout(r, 2000)); // a duplicate would arrive now
    await sampler.stop();

    const accepted = users.length * options.batch;
    const mp3Counts = await Promise.all(ends.map((e) => cluster.mongo.db().collection('mp3s.files').countDocuments({ _id: e.jobId as never })));
    const mailCounts = ends.map((e) => mailsOf(e.jobId).length);
    const mailTimes = new Map(cluster.smtp.received.map((m) => [m, m.parsed.date?.getTime() ?? NaN]));
    const mailDelays = doneJobs.filter((e) => kinds[e.user] !== 'webhook').flatMap((e) => mailsOf(e.jobId).map((m) => (mailTimes.get(m)! - e.ended) / 1000)).filter(Number.isFinite);
    const { quotas, login } = cluster.config;
    const unauthorized = statuses.filter((s) => s === 401).length;

    const invariants: Invariant[] = [
      { name: 'no job lost', held: ends.length === accepted && doneJobs.length === accepted, detail: `${accepted} accepted, ${doneJobs.length} done, ${ends.length - doneJobs.length} failed` },
      { name: 'one MP3 per job', held: mp3Counts.every((n, i) => n === (ends[i]!.status === 'done' ? 1 : 0)), detail: `MP3s stored per done job: ${[...new Set(mp3Counts)].join(', ')}` },
      { name: 'one mail per job', held: mailCounts.every((n) => n === 1), detail: `mails per job: ${[...new Set(mailCounts)].join(', ')}` },
      { name: `no user converting more than MAX_JOBS_IN_FLIGHT (${quotas.jobsInFlight})`, held: sampler.max.converting <= quotas.jobsInFlight, detail: `most seen: ${sampler.max.converting}` },
      { name: `no user with more than MAX_JOBS_QUEUED (${quotas.jobsQueued}) jobs queued or converting`, held: sampler.max.open <= quotas.jobsQueued, detail: `most seen: ${sampler.max.open}` },
      { name: `login throttle held (LOGIN_MAX_FAILURES ${login.maxFailures})`, held: unauthorized <= login.maxFailures, detail: `${options.passwordBurst} wrong passwords at once: ${unauthorized} × 401, ${statuses.filter((s) => s === 429).length} × 429` },
      { name: 'no 5xx answered to a client', held: rec.samples.every((s) => s.status < 500 || s.status === 503), detail: `${rec.samples.filter((s) => s.status >= 500).length} of ${rec.samples.length} answers were 5xx` },
    ];

    const labels = [...new Set(rec.samples.map((s) => s.label))];
    const seconds = (lastEnd - firstAccept) / 1000;
    return {
      options,
      jobs: { accepted, done: doneJobs.length, failed: ends.length - doneJobs.length, perMinute: (doneJobs.length / seconds) * 60, seconds },
      api: labels.map((label) => {
        const of = rec.samples.filter((s) => s.label === label);
        return { label, count: of.length, p50: percentile(of.map((s) => s.ms), 50), p99: percentile(of.map((s) => s.ms), 99), non2xx: of.filter((s) => s.status >= 300).length };
      }),
      queueWait: users.map((_, u) => {
        const waits = ends.filter((e) => e.user === u).map((e) => ((e.started ?? e.ended) - e.accepted) / 1000);
        return { user: `user ${u}`, kind: kinds[u]!, jobs: waits.length, p50: percentile(waits, 50), p99: percentile(waits, 99) };
      }),
      mailDelay: { p50: percentile(mailDelays, 50), p99: percentile(mailDelays, 99) },
      waits429: { count: rec.waits.count, seconds: rec.waits.ms / 1000 },
      invariants,
    };
  } catch (err) {
    throw new Error(`${(err as Error).message}\n\nThe functions' last log lines:\n${cluster.logs()}`, { cause: err });
  } finally {
    await sampler.stop();
    await cluster.close();
    await receiver.close();
  }
}
