// A few-hundred-MB video through a single multipart POST and through tus, to an upload function running
// as its own process: its memory must not grow with the file (the framework buffers nothing, the
// store writes in a small window), and the job converts from disk to an MP3 as long as the video. The video is made here with native ffmpeg (test/support/video.ts).
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { getDb } from '../lib/storage/db';
import { getBroker } from '../lib/messaging/queue';
import { reconcile } from '../lib/pipeline/reconcile';
import { readFixture } from './fixtures';
import { freePort } from './support/net';
import { backends, eventually, newUser, startStack, videoForm, type Stack, type TestUser } from './support/stack';
import { tusUpload } from './support/tus';
import { makeRawVideo } from './support/video';

const root = path.resolve(__dirname, '..');
const mb = 1024 * 1024;
/** How much the receiving process's RSS may rise during an upload: far below the file's size. */
const allowedGrowth = 100 * mb;

/** 640×360 raw frames: ~8.6 MB a second of video. */
const seconds = 30;
let video: string;
let size = 0;
let digest = '';

beforeAll(() => {
  video = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'large-upload-')), 'big.mkv');
  makeRawVideo(video, seconds);
  size = fs.statSync(video).size;
  expect(size).toBeGreaterThan(200 * mb);
  const hash = createHash('sha256');
  const fd = fs.openSync(video, 'r');
  const buf = Buffer.alloc(8 * mb);
  for (let n = fs.readSync(fd, buf); n > 0; n = fs.readSync(fd, buf)) hash.update(buf.subarray(0, n));
  fs.closeSync(fd);
  digest = hash.digest('hex');
}, 120_000);
afterAll(() => fs.rmSync(path.dirname(video), { recursive: true, force: true }));

/** Samples a process's resident memory until stopped; resolves with the highest value seen. */
function sampleRss(pid: number) {
  let peak = 0;
  const read = () => {
    const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
    peak = Math.max(peak, Number(/VmRSS:\s+(\d+) kB/.exec(status)?.[1] ?? 0) * 1024);
  };
  read();
  const timer = setInterval(read, 50);
  return { stop: () => { clearInterval(timer); read(); return peak; } };
}

describe.each(backends())('a 200+ MB upload on $name backends', ({ env }) => {
  let stack: Stack;
  let user: TestUser;
  let child: ChildProcess;
  let url: string;

  beforeAll(async () => {
    stack = await startStack(env, { sources: 'video' });
    await (await getBroker()).purge('video');
    user = await newUser(stack);
    const port = await freePort();
    child = spawn(process.execPath, ['--import', 'tsx', path.join(root, 'test/support/serve-function.ts'), 'upload'], {
      cwd: root,
      env: { ...process.env, ...env, PORT: String(port), DATA_DIR: stack.config.dataDir, LOG_LEVEL: 'warn', DOWNLOAD_URL: stack.config.downloadUrl, MAX_JOBS_IN_FLIGHT: '1000' },
      stdio: ['ignore', 'inherit', 'inherit'],
    });
    url = `http://127.0.0.1:${port}`;
    await eventually(async () => (await fetch(`${url}/healthz`).then((r) => r.ok, () => false)) || undefined, 20_000, 'the upload process');
    // Warm up both paths so the baseline includes loaded code and open connections.
    expect((await fetch(`${url}/`, { method: 'POST', headers: user.auth, body: videoForm(readFixture('mp4'), 'warm.mp4') })).status).toBe(202);
    expect((await tusUpload(readFixture('mp4'), { endpoint: `${url}/files`, token: user.token })).jobId).toBeDefined();
  }, 60_000);
  afterAll(async () => {
    child.kill('SIGKILL');
    await (await getBroker()).purge('video');
    await stack.close();
  });

  const expectConverted = async (jobId: string) => {
    const job = await (await getDb())('jobs').where({ id: jobId }).first();
    expect({ ...job, video_bytes: Number(job.video_bytes) }).toMatchObject({ video_bytes: size, video_sha256: digest, content_type: 'video/matroska' });
    // On the embedded backends the upload process's queue is its own, in its memory: the event reaches
    // this process's converter as after that process restarted, through the reconciler publishing
    // every unfinished job again (lib/pipeline/reconcile.ts).
    if (!env.AMQP_URL) await reconcile({ db: await getDb(), broker: await getBroker(), config: stack.config }, { restarted: true });
    const done = await eventually(async () => {
      const status = (await (await fetch(`${stack.url}/download/jobs/${jobId}`, { headers: user.auth })).json()) as { status: string; mp3?: { durationSeconds: number } };
      return status.status === 'done' || status.status === 'failed' ? status : undefined;
    }, 120_000, `job ${jobId} to end`);
    expect(done.status).toBe('done');
    expect(Math.abs(done.mp3!.durationSeconds - seconds)).toBeLessThan(0.1);
    // Removed again through the API, so the next test's store is as small as this one's was.
    expect((await fetch(`${stack.url}/download/jobs/${jobId}`, { method: 'DELETE', headers: user.auth })).status).toBe(204);
  };

  it('when it is one multipart POST, then the server\'s memory does not grow with it, and its MP3 lasts as long as the video', async () => {
    const sampler = sampleRss(child.pid!);
    const baseline = sampler.stop();
    const during = sampleRss(child.pid!);
    const form = new FormData();
    form.append('file', await fs.openAsBlob(video, { type: 'video/x-matroska' }), 'big.mkv');
    const res = await fetch(`${url}/`, { method: 'POST', headers: user.auth, body: form });
    const peak = during.stop();
    expect(res.status).toBe(202);
    await expectConverted(((await res.json()) as { jobId: string }).jobId);
    expect(peak - baseline, `RSS ${Math.round(baseline / mb)} → ${Math.round(peak / mb)} MB for a ${Math.round(size / mb)} MB file`).toBeLessThan(allowedGrowth);
  }, 300_000);

  it('when it goes through tus in one PATCH, then the server\'s memory does not grow with it, and its MP3 lasts as long as the video', async () => {
    const baseline = sampleRss(child.pid!).stop();
    const during = sampleRss(child.pid!);
    const done = await tusUpload(fs.readFileSync(video), { endpoint: `${url}/files`, token: user.token, filename: 'big.mkv' });
    const peak = during.stop();
    await expectConverted(done.jobId!);
    expect(peak - baseline, `RSS ${Math.round(baseline / mb)} → ${Math.round(peak / mb)} MB for a ${Math.round(size / mb)} MB file`).toBeLessThan(allowedGrowth);
  }, 300_000);
});
