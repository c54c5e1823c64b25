// `npm run bench -- --large`: a ≥ 2 GB video (made here with native ffmpeg) uploaded to the upload
// function's built bundle running as its own process, once with tus-js-client and once as one streamed
// POST, printing the upload throughput and the server's peak RSS during each. Embedded backends by
// default; with DATABASE_URL, MONGODB_URI and AMQP_URL set, the same against those services as well.
// Then the same video end to end on `npm start`: an interrupted and resumed tus upload, converted, the
// MP3 downloaded. Big files live in BENCH_DIR (default the system temp dir) and are deleted at the end.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { Upload } from 'tus-js-client';
import { signAccessToken } from '../lib/auth/tokens';
import { loadConfig } from '../lib/core/config';
import { imageBundle, imageRuntime, removeImageBundles } from './image';

const root = path.resolve(__dirname, '..');
const NATIVE_FFMPEG = process.env.FFMPEG ?? '/usr/bin/ffmpeg';
const mb = 1024 * 1024;

/** 1280×720 raw frames in Matroska: ~35 MB per second of video, quick to make, sniffed as video/matroska. */
export function makeVideo(file: string, seconds: number): number {
  const made = spawnSync(NATIVE_FFMPEG, [
    '-v', 'error', '-y', '-f', 'lavfi', '-i', 'testsrc=size=1280x720:rate=25', '-f', 'lavfi', '-i', 'sine=frequency=440:sample_rate=48000',
    '-t', String(seconds), '-c:v', 'rawvideo', '-pix_fmt', 'yuv420p', '-c:a', 'pcm_s16le', file,
  ], { encoding: 'utf8' });
  if (made.status !== 0) throw new Error(`ffmpeg failed: ${made.stderr}`);
  return fs.statSync(file).size;
}

function rssOf(pid: number): number {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+) kB/.exec(status)?.[1] ?? 0) * 1024;
}

/** Runs `work` while sampling `pid`'s RSS every 50 ms; returns its duration and the peak. */
async function measured(pid: number, work: () => Promise<void>): Promise<{ seconds: number; peakRss: number; baseRss: number }> {
  const baseRss = rssOf(pid);
  let peakRss = baseRss;
  const timer = setInterval(() => { peakRss = Math.max(peakRss, rssOf(pid)); }, 50);
  const started = performance.now();
  try {
    await work();
  } finally {
    clearInterval(timer);
  }
  return { seconds: (performance.now() - started) / 1000, peakRss: Math.max(peakRss, rssOf(pid)), baseRss };
}

function tus(file: string, size: number, endpoint: string, token: string): Promise<string> {
  return new Promise((resolve, reject) => {
    let jobId = '';
    const upload = new Upload(fs.createReadStream(file), {
      endpoint,
      uploadSize: size,
      chunkSize: 64 * mb,
      headers: { Authorization: `Bearer ${token}` },
      metadata: { filename: 'bench.mkv' },
      retryDelays: [0, 1000],
      storeFingerprintForResuming: false,
      onAfterResponse: (_req, res) => { jobId = res.getHeader('Upload-Job-Id') ?? jobId; },
      onSuccess: () => (jobId ? resolve(jobId) : reject(new Error('no Upload-Job-Id on the last PATCH'))),
      onError: reject,
    });
    upload.start();
  });
}

function post(file: string, size: number, url: string, token: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, {
      method: 'POST',
      headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'video/x-matroska', 'Content-Length': String(size), 'X-Filename': 'bench.mkv' },
    }, (res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.on('end', () => (res.statusCode === 202 ? resolve((JSON.parse(body) as { jobId: string }).jobId) : reject(new Error(`${res.statusCode} ${body}`))));
    });
    req.on('error', reject);
    pipeline(fs.createReadStream(file, { highWaterMark: mb }), req).catch(reject);
  });
}

/**
 * The "done when" on `npm start` (the whole pipeline in one process, on the backends of `env`): the
 * video through tus-js-client, cut off once ~40 % has been sent and resumed by a new client from the
 * upload's URL, until its job is done; then the MP3 is downloaded and its duration compared with the
 * video's. Prints what a user waits for: the upload, and the time from the last byte to the MP3.
 */
async function endToEnd(file: string, size: number, videoSeconds: number, dir: string, env: Record<string, string>): Promise<Record<string, unknown>> {
  const port = 20_000 + Math.floor(Math.random() * 20_000);
  fs.mkdirSync(dir, { recursive: true });
  const dataDir = path.join(dir, 'data-npm-start');
  const child = spawn('npm', ['start'], {
    cwd: root,
    env: { PATH: process.env.PATH, HOME: process.env.HOME ?? '/tmp', ...env, PORT: String(port), DATA_DIR: dataDir, LOG_LEVEL: 'warn' },
    stdio: ['ignore', 'ignore', 'inherit'],
    detached: true,
  });
  const base = `http://127.0.0.1:${port}`;
  try {
    for (let i = 0; !(await fetch(`${base}/healthz`).then((r) => r.ok, () => false)); i++) {
      if (i > 600) throw new Error('npm start did not come up');
      await new Promise((r) => setTimeout(r, 100));
    }
    const credentials = { email: `bench-${Date.now()}@example.com`, password: 'a long enough password' };
    const json = { 'content-type': 'application/json' };
    const signup = await fetch(`${base}/auth/signup`, { method: 'POST', headers: json, body: JSON.stringify(credentials) });
    const login = await fetch(`${base}/auth/login`, { method: 'POST', headers: json, body: JSON.stringify(credentials) });
    if (signup.status !== 201 || login.status !== 200) throw new Error(`signing the bench user in failed: signup ${signup.status}, login ${login.status}`);
    const { token } = (await login.json()) as { token: string };
    const auth = { Authorization: `Bearer ${token}` };

    spawnSync('sync');
    const started = performance.now();
    // First client: aborted once ~40 % is sent, as a dropped connection would leave it.
    const uploadUrl = await new Promise<string>((resolve, reject) => {
      let cut = false;
      const upload: Upload = new Upload(fs.createReadStream(file), {
        endpoint: `${base}/upload/files`, uploadSize: size, chunkSize: 64 * mb, headers: auth, metadata: { filename: 'bench.mkv' },
        storeFingerprintForResuming: false,
        onProgress: (sent) => {
          if (cut || sent < 0.4 * size || !upload.url) return;
          cut = true;
          void upload.abort().then(() => resolve(upload.url!), reject);
        },
        onError: reject,
      });
      upload.start();
    });
    const offset = Number((await fetch(`${base}${new URL(uploadUrl, base).pathname}`, { method: 'HEAD', headers: { ...auth, 'Tus-Resumable': '1.0.0' } })).headers.get('upload-offset'));
    // Second client: resumes from the stored URL, sending only what the server does not have.
    const jobId = await new Promise<string>((resolve, reject) => {
      let id = '';
      new Upload(fs.createReadStream(file), {
        uploadUrl, uploadSize: size, chunkSize: 64 * mb, headers: auth, storeFingerprintForResuming: false,
        onAfterResponse: (_req, res) => { id = res.getHeader('Upload-Job-Id') ?? id; },
        onSuccess: () => (id ? resolve(id) : reject(new Error('no Upload-Job-Id on the last PATCH'))),
        onError: reject,
      }).start();
    });
    const uploaded = performance.now();
    for (;;) {
      const job = (await (await fetch(`${base}/download/jobs/${jobId}`, { headers: auth })).json()) as { status: string; error?: string };
      if (job.status === 'done') break;
      if (job.status !== 'queued' && job.status !== 'converting') throw new Error(`the job ended ${job.status}: ${job.error}`);
      await new Promise((r) => setTimeout(r, 200));
    }
    const converted = performance.now();
    const mp3 = path.join(dir, 'bench.mp3');
    const res = await fetch(`${base}/download/jobs/${jobId}/mp3`, { headers: auth });
    if (res.status !== 200 || !res.body) throw new Error(`downloading the MP3 answered ${res.status}`);
    await pipeline(res.body as unknown as NodeJS.ReadableStream, fs.createWriteStream(mp3));
    const probe = spawnSync('ffprobe', ['-v', 'error', '-show_entries', 'format=duration', '-of', 'csv=p=0', mp3], { encoding: 'utf8' });
    const mp3Seconds = Number(probe.stdout.trim());
    return {
      GB: Number((size / 1e9).toFixed(2)),
      'resumed at %': Math.round((offset / size) * 100),
      'upload s (both clients)': Number(((uploaded - started) / 1000).toFixed(1)),
      'last byte → MP3 done s': Number(((converted - uploaded) / 1000).toFixed(1)),
      'MP3 s': Number(mp3Seconds.toFixed(2)),
      'video s': videoSeconds,
      'MP3 matches': Math.abs(mp3Seconds - videoSeconds) < 0.1,
    };
  } finally {
    try { process.kill(-child.pid!, 'SIGKILL'); } catch { /* gone */ }
  }
}

async function startUpload(env: Record<string, string>, dataDir: string, bundle: string): Promise<{ child: ChildProcess; url: string }> {
  const port = 20_000 + Math.floor(Math.random() * 20_000);
  // The built bundle, as deployed (plain node with the image's flags, no TypeScript loader in the
  // measured process). The image's young generation of 1 MiB frees the socket buffers a multi-GB
  // upload passes through at every scavenge, instead of piling them up to V8's external-memory limit.
  const image = imageRuntime();
  const child = spawn(process.execPath, [...image.flags, path.join(bundle, 'index.js')], {
    cwd: root,
    env: { PATH: process.env.PATH, ...image.env, ...env, PORT: String(port), DATA_DIR: dataDir, LOG_LEVEL: 'warn' },
    stdio: ['ignore', 'inherit', 'inherit'],
  });
  const url = `http://127.0.0.1:${port}`;
  for (let i = 0; i < 200; i++) {
    if (await fetch(`${url}/healthz`).then((r) => r.ok, () => false)) return { child, url };
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error('the upload function did not start');
}

export async function runLargeUploadBench(): Promise<void> {
  const dir = fs.mkdtempSync(path.join(process.env.BENCH_DIR ?? os.tmpdir(), 'video2mp3-bench-large-'));
  try {
    const build = spawnSync(process.execPath, [path.join(root, 'build.mjs')], { cwd: root, encoding: 'utf8' });
    if (build.status !== 0) throw new Error(`npm run build failed: ${build.stderr}`);
    const bundle = imageBundle('upload');
    console.log(`upload bundle run as in the image: ${imageRuntime().describe}`);
    const file = path.join(dir, 'large.mkv');
    let started = performance.now();
    const seconds = Number(process.env.BENCH_LARGE_SECONDS ?? 62);
    const size = makeVideo(file, seconds);
    console.log(`made a ${(size / 1e9).toFixed(2)} GB video in ${((performance.now() - started) / 1000).toFixed(1)} s`);

    const backends: [string, Record<string, string>][] = [['embedded', {}]];
    const { DATABASE_URL, MONGODB_URI, AMQP_URL } = process.env;
    if (DATABASE_URL && MONGODB_URI && AMQP_URL) backends.push(['services', { DATABASE_URL, MONGODB_URI, AMQP_URL }]);

    // BENCH_LARGE_PARTS=e2e skips the per-function uploads (on a slow MongoDB stand-in they take long).
    const parts = (process.env.BENCH_LARGE_PARTS ?? 'upload,e2e').split(',');
    const rows: Record<string, unknown>[] = [];
    for (const [name, env] of parts.includes('upload') ? backends : []) {
      const dataDir = path.join(dir, `data-${name}`);
      const config = loadConfig({ ...env, DATA_DIR: dataDir });
      const token = signAccessToken({ id: 'bench-user', email: 'bench@example.com' }, config).token;
      const { child, url } = await startUpload(env, dataDir, bundle);
      try {
        for (const [method, send] of [
          ['tus-js-client', () => tus(file, size, `${url}/files`, token)],
          ['one POST', () => post(file, size, `${url}/`, token)],
        ] as const) {
          // Each upload starts with nothing left to write back: the video just made, or the copy just
          // deleted, would otherwise be flushed to disk during the next measurement and slow it.
          spawnSync('sync');
          let jobId = '';
          started = performance.now();
          const m = await measured(child.pid!, async () => { jobId = await send(); });
          rows.push({
            backend: name,
            method,
            GB: Number((size / 1e9).toFixed(2)),
            seconds: Number(m.seconds.toFixed(1)),
            'MB/s': Math.round(size / 1e6 / m.seconds),
            'server RSS before MB': Math.round(m.baseRss / mb),
            'server peak RSS MB': Math.round(m.peakRss / mb),
            jobId,
          });
          // Free the stored copy before the next upload.
          fs.rmSync(path.join(dataDir, 'blobs'), { recursive: true, force: true });
        }
      } finally {
        child.kill('SIGKILL');
      }
    }
    if (rows.length > 0) {
      console.table(rows);
      console.log('Targets: server peak RSS during upload ≤ 150 MB; embedded upload ≥ 150 MB/s over loopback.');
      for (const row of rows) console.log(JSON.stringify({ bench: 'large-upload', ...row }));
    }
    if (parts.includes('e2e')) {
      console.log('\nEnd to end on npm start: tus cut off at ~40 % and resumed by a new client, converted, downloaded.');
      const e2e: Record<string, unknown>[] = [];
      for (const [name, env] of backends) e2e.push({ backend: name, ...(await endToEnd(file, size, seconds, path.join(dir, name), env)) });
      console.table(e2e);
      for (const row of e2e) console.log(JSON.stringify({ bench: 'large-upload-e2e', ...row }));
    }
    console.log('Conversion of large files is the other opt-in part: BENCH_LARGE=1 npm run bench.');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
    removeImageBundles();
  }
}
