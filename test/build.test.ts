// The bundles as they ship: `npm run build`, then each bundle copied away from node_modules (as into
// its image) and started with plain `node`.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { getDb } from '../lib/storage/db';
import { getBroker } from '../lib/messaging/queue';
import { toCloudEventRequest } from '../lib/messaging/source';
import { readFixture } from './fixtures';
import { freePort } from './support/net';
import { backends, eventually, newUser, startStack, videoForm } from './support/stack';
import { tusUpload } from './support/tus';

const root = path.resolve(__dirname, '..');
const services = backends().find((b) => b.name === 'services');
const children: ChildProcess[] = [];

/** Copies dist/<name> to a directory with no node_modules above it: only what the image carries. */
function shipped(name: string): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `bundle-${name}-`));
  fs.cpSync(path.join(root, 'dist', name), dir, { recursive: true });
  return dir;
}

async function start(dir: string, env: Record<string, string>) {
  const port = await freePort();
  const child = spawn(process.execPath, ['index.js'], { cwd: dir, env: { PATH: process.env.PATH!, PORT: String(port), LOG_LEVEL: 'warn', ...env }, stdio: ['ignore', 'ignore', 'pipe'] });
  children.push(child);
  const url = `http://127.0.0.1:${port}`;
  await eventually(async () => (await fetch(`${url}/healthz`).then((r) => r.ok, () => false)) || undefined, 20_000, `${dir} to listen`);
  return url;
}

beforeAll(() => {
  const build = spawnSync(process.execPath, ['build.mjs'], { cwd: root, encoding: 'utf8' });
  expect(build.status, build.stderr).toBe(0);
  for (const name of ['auth', 'upload', 'download', 'convert', 'notify']) expect(build.stdout).toMatch(new RegExp(`dist/${name}/function.js\\s+\\d+ KiB\\s+\\d+ KiB`));
}, 120_000);
afterAll(() => { for (const c of children) c.kill('SIGKILL'); });

describe('the built bundles', () => {
  it('when the auth bundle starts on plain node, then it serves signup and login', async () => {
    // Deployed bundles use MySQL; on a machine without it, the embedded SQLite (from this checkout's node_modules).
    const dir = services ? shipped('auth') : path.join(root, 'dist/auth');
    const env: Record<string, string> = services ? { DATABASE_URL: services.env.DATABASE_URL! } : {};
    // The run's other tests sign up from 127.0.0.1 on the same database: lift the per-address signup limit.
    const url = await start(dir, { DATA_DIR: fs.mkdtempSync(path.join(os.tmpdir(), 'auth-data-')), SIGNUP_MAX_PER_HOUR: '100000', ...env });
    const headers = { 'content-type': 'application/json' };
    const credentials = JSON.stringify({ email: `bundle-${Date.now()}@example.com`, password: 'password-123' });
    expect((await fetch(`${url}/signup`, { method: 'POST', headers, body: credentials })).status).toBe(201);
    const login = await fetch(`${url}/login`, { method: 'POST', headers, body: credentials });
    expect(login.status).toBe(200);
    expect(await login.json()).toMatchObject({ tokenType: 'Bearer', token: expect.any(String) });
    expect((await fetch(`${url}/login`, { method: 'POST', headers, body: JSON.stringify({ email: 'nobody@example.com', password: 'password-123' }) })).status).toBe(401);
  });

  it('when the upload bundle (with @tus/server, ESM-only, bundled into CommonJS) starts on plain node, then a tus upload and a streamed POST become jobs', async () => {
    const stack = await startStack(services?.env ?? {});
    try {
      const user = await newUser(stack);
      const dir = services ? shipped('upload') : path.join(root, 'dist/upload');
      const url = await start(dir, { ...(services?.env ?? {}), DATA_DIR: stack.config.dataDir, DOWNLOAD_URL: stack.config.downloadUrl });
      const options = await fetch(`${url}/files`, { method: 'OPTIONS' });
      expect(options.headers.get('tus-extension')).toContain('creation-with-upload');
      const done = await tusUpload(readFixture('mp4'), { endpoint: `${url}/files`, token: user.token });
      expect(done.jobId).toMatch(/^[A-Za-z0-9_-]{22}$/);
      const posted = await fetch(`${url}/`, { method: 'POST', headers: user.auth, body: videoForm(readFixture('flv'), 'bundle.flv') });
      expect(posted.status).toBe(202);
      await (await getBroker()).purge('video');
    } finally {
      await stack.close();
    }
  });

  it('when the download bundle starts, then it also serves the web page, whose config.js names the functions', async () => {
    const web = 'http://download.example.test';
    const env = { DATA_DIR: fs.mkdtempSync(path.join(os.tmpdir(), 'download-data-')), AUTH_URL: 'http://auth.example.test', UPLOAD_URL: 'http://upload.example.test', DOWNLOAD_URL: web, WEB_ORIGIN: web };
    const url = await start(shipped('download'), env);
    const page = await fetch(`${url}/`);
    expect(page.headers.get('content-type')).toMatch(/^text\/html/);
    expect(await page.text()).toContain('<label for="video">Video</label>');
    expect((await fetch(`${url}/app.js`)).status).toBe(200);
    expect(await (await fetch(`${url}/config.js`)).text()).toBe(
      `window.video2mp3Config = ${JSON.stringify({ auth: env.AUTH_URL, upload: env.UPLOAD_URL, download: web })};\n`);
    const jobs = await fetch(`${url}/jobs`, { headers: { origin: web } });
    expect(jobs.status).toBe(401); // the function's own routes are unchanged
    expect(jobs.headers.get('access-control-allow-origin')).toBe(web);
  });

  it('when a bundle starts on Knative without its settings, then it exits naming them', () => {
    const run = spawnSync(process.execPath, ['index.js'], { cwd: shipped('upload'), env: { PATH: process.env.PATH!, K_SERVICE: 'upload' }, encoding: 'utf8', timeout: 20_000 });
    expect(run.status).toBe(1);
    expect(run.stdout + run.stderr).toMatch(/DATABASE_URL, MONGODB_URI, AMQP_URL, JWT_PUBLIC_KEY, DOWNLOAD_URL must be set for upload/);
  });

  it('when a bundle starts, then it runs from the code cache the build made, with stacks mapped to the TypeScript; a cache from another node is reported and ignored', () => {
    const dir = shipped('upload');
    const fail = () => spawnSync(process.execPath, ['--enable-source-maps', 'index.js'], { cwd: dir, env: { PATH: process.env.PATH!, K_SERVICE: 'upload' }, encoding: 'utf8', timeout: 20_000 });
    expect(fs.statSync(path.join(dir, 'function.js.cache')).size).toBeGreaterThan(100_000);
    const cached = fail();
    expect(cached.status).toBe(1);
    expect(cached.stdout + cached.stderr).not.toMatch(/code cache rejected/);
    // The start-up error's stack names the source file and line, as under plain require().
    expect(cached.stdout).toMatch(/at loadConfig \(\S*\/lib\/core\/config\.ts:\d+:\d+\)/);

    fs.writeFileSync(path.join(dir, 'function.js.cache'), 'made by some other node');
    const rejected = fail();
    expect(rejected.status).toBe(1);
    expect(rejected.stderr).toMatch(/"level":"warn".*code cache rejected \(made by another node version or under other flags\)/);
    expect(rejected.stdout).toMatch(/DATABASE_URL, MONGODB_URI, AMQP_URL, JWT_PUBLIC_KEY, DOWNLOAD_URL must be set for upload/);
  });

  it('when a bundle runs under --enable-source-maps, then its source map is read for the first error it logs, not as it starts nor for a client\'s malformed JSON', async () => {
    // A preload that reports every source map read: the map is ~10 MB and takes ~0.4 s to decode on a
    // slow VM, which a stack formatted at load (node's domain module does) once cost every cold start.
    const dir = path.join(root, 'dist/auth'); // embedded SQLite from this checkout's node_modules
    const hook = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'map-hook-')), 'hook.cjs');
    fs.writeFileSync(hook, `const fs = require('node:fs'); const read = fs.readFileSync;
fs.readFileSync = function (file, ...rest) { if (String(file).endsWith('.js.map')) process.stderr.write('source map read\\n'); return read.call(this, file, ...rest); };`);
    const port = await freePort();
    const child = spawn(process.execPath, ['--enable-source-maps', '-r', hook, 'index.js'], {
      cwd: dir, env: { PATH: process.env.PATH!, PORT: String(port), LOG_LEVEL: 'warn', DATA_DIR: fs.mkdtempSync(path.join(os.tmpdir(), 'auth-data-')) }, stdio: ['ignore', 'ignore', 'pipe'],
    });
    children.push(child);
    let stderr = '';
    child.stderr!.on('data', (chunk: Buffer) => { stderr += chunk.toString(); });
    const url = `http://127.0.0.1:${port}`;
    await eventually(async () => (await fetch(`${url}/healthz`).then((r) => r.ok, () => false)) || undefined, 20_000, 'auth to listen');
    const malformed = await fetch(`${url}/signup`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"email": ' });
    expect(malformed.status).toBe(400); // body-parser formats this error's stack
    expect((await fetch(`${url}/.well-known/jwks.json`)).status).toBe(200);
    expect((await fetch(`${url}/login`, { method: 'POST', headers: { authorization: `Basic ${Buffer.from('nobody@example.com:password-123').toString('base64')}` } })).status).toBe(401);
    child.kill('SIGKILL');
    expect(stderr).not.toMatch(/source map read/);

    // The same preload sees the read when an error is logged: a start that fails on its configuration.
    const failed = spawnSync(process.execPath, ['--enable-source-maps', '-r', hook, 'index.js'], { cwd: shipped('upload'), env: { PATH: process.env.PATH!, K_SERVICE: 'upload' }, encoding: 'utf8', timeout: 20_000 });
    expect(failed.status).toBe(1);
    expect(failed.stderr).toMatch(/source map read/);
    expect(failed.stdout).toMatch(/at loadConfig \(\S*\/lib\/core\/config\.ts:\d+:\d+\)/);
  });

  it('when a deployed bundle meets an error nothing catches, then it logs one fatal JSON line with the stack and exits 1', async () => {
    // The error is thrown by a preload a moment after the start: any error escaping to the event loop ends the same way.
    const hook = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'throw-hook-')), 'hook.cjs');
    fs.writeFileSync(hook, "setTimeout(() => { throw new Error('nobody catches this'); }, 1500);");
    const port = await freePort();
    const crashed = spawnSync(process.execPath, ['--enable-source-maps', '-r', hook, 'index.js'], {
      cwd: path.join(root, 'dist/auth'), env: { PATH: process.env.PATH!, PORT: String(port), LOG_LEVEL: 'warn', DATA_DIR: fs.mkdtempSync(path.join(os.tmpdir(), 'auth-data-')) }, encoding: 'utf8', timeout: 20_000,
    });
    expect(crashed.status).toBe(1);
    const fatal = crashed.stdout.trim().split('\n').map((l) => JSON.parse(l) as { level: string; msg: string; origin: string; err: { message: string; stack: string } }).find((l) => l.level === 'fatal');
    expect(fatal).toMatchObject({ msg: 'uncaught exception; exiting', origin: 'uncaughtException', err: { message: 'nobody catches this' } });
    expect(fatal!.err.stack).toMatch(/hook\.cjs:1:\d+/);
    expect(crashed.stderr).not.toMatch(/nobody catches this/); // not node's own print besides
  });

  it.runIf(services)('when the convert bundle (worker and wasm core beside it) gets a real event, then the job is done', async () => {
    const stack = await startStack(services!.env);
    try {
      await (await getBroker()).purge('video');
      const user = await newUser(stack);
      const res = await fetch(`${stack.url}/upload/`, { method: 'POST', headers: user.auth, body: videoForm(readFixture('flv'), 'bundle.flv') });
      const { jobId } = (await res.json()) as { jobId: string };
      const url = await start(shipped('convert'), { ...services!.env, DATA_DIR: stack.config.dataDir });
      const d = (await (await getBroker()).get('video'))!;
      const req = toCloudEventRequest(d.message, { queue: 'video' });
      const converted = await fetch(`${url}/`, { method: 'POST', headers: req.headers, body: req.body });
      expect(converted.status).toBe(200);
      expect(await converted.json()).toEqual({ jobId, outcome: 'converted' });
      d.ack();
      const row = await (await getDb())('jobs').where({ id: jobId }).first();
      expect(row).toMatchObject({ status: 'done', mp3_blob_id: jobId });
      await (await getBroker()).purge('mp3');
    } finally {
      await stack.close();
    }
  });
});
