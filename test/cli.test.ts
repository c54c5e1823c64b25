// The CLI as a person runs it (`npx video2mp3` is cli/video2mp3.cjs), against the local stack in this
// process: sign up, upload a directory of videos and wait for the MP3s, list, status, download, rm,
// and the messages for 401, 413, 415 and an unreachable service. A pseudo-terminal (util-linux
// `script`) shows the progress bar; without one, plain lines. An upload killed mid-file (through a
// slow TCP proxy, test/support/proxy.ts) resumes when the same command runs again.
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { parseBuffer } from 'music-metadata';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fixturePath, fixturesDir } from './fixtures';
import { freePort } from './support/net';
import type { Proxy } from './support/proxy';
import { findJob } from '../lib/pipeline/jobs';
import { getDb } from '../lib/storage/db';
import { eventually, newUser, startStack, startStackBehindProxy, uniqueName, videoForm, type Stack } from './support/stack';
import { makeRawVideo } from './support/video';

const cliPath = path.resolve(__dirname, '../cli/video2mp3.cjs');

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

const password = 'a long enough password';

/** Starts the CLI as a person would, with `home` as their home directory (the session and upload URLs live there). */
function cli(home: string, args: string[], env: Record<string, string> = {}, opts: { tty?: boolean } = {}): ChildProcess {
  const fullEnv = { PATH: process.env.PATH!, HOME: home, XDG_CONFIG_HOME: path.join(home, 'config'), VIDEO2MP3_PASSWORD: password, ...env };
  return opts.tty
    ? spawn('script', ['-qec', [process.execPath, cliPath, ...args].map((a) => `'${a}'`).join(' '), '/dev/null'], { env: { ...fullEnv, TERM: 'xterm', COLUMNS: '120' } })
    : spawn(process.execPath, [cliPath, ...args], { env: fullEnv });
}

/** Collects a CLI run's output without blocking this process (the stack it talks to lives here). */
function result(child: ChildProcess): Promise<Run> {
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (d: Buffer) => { stdout += d.toString(); });
  child.stderr!.on('data', (d: Buffer) => { stderr += d.toString(); });
  return new Promise((resolve) => child.on('close', (code) => resolve({ code, stdout, stderr })));
}

describe('the video2mp3 CLI', () => {
  let stack: Stack;
  let origin: http.Server;
  let home: string;
  const email = `${uniqueName('cli')}@example.com`;

  const run = (args: string[], env: Record<string, string> = {}, opts: { tty?: boolean } = {}) => result(cli(home, args, env, opts));

  beforeAll(async () => {
    home = fs.mkdtempSync(path.join(os.tmpdir(), 'video2mp3-cli-'));
    // 100 KB: every short fixture fits, the 5-minute clip does not (413). Imports may reach this
    // process's own loopback server (origin) and nothing else private.
    stack = await startStack({ MAX_UPLOAD_BYTES: '100000', IMPORT_ALLOW_PRIVATE: '127.0.0.1' }, { sources: true });
    origin = http.createServer((_req, res) => res.writeHead(200, { 'content-type': 'video/mp4' }).end(fs.readFileSync(fixturePath('mp4'))));
    await new Promise<void>((r) => origin.listen(0, '127.0.0.1', r));
  });
  afterAll(async () => {
    await stack.close();
    origin.close();
  });

  it('when a person signs up, then the token is saved for them alone (mode 0600)', async () => {
    const r = await run(['signup', '--url', stack.url, '--email', email]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(`Signed up and logged in as ${email}`);
    const file = path.join(home, 'config/video2mp3/session.json');
    expect(fs.statSync(file).mode & 0o777).toBe(0o600);
    expect(JSON.parse(fs.readFileSync(file, 'utf8'))).toMatchObject({ url: stack.url, email, token: expect.stringMatching(/^ey/) });

    const again = await run(['login', '--email', email]); // the URL is remembered
    expect(again.code).toBe(0);
    const wrong = await run(['login', '--email', email], { VIDEO2MP3_PASSWORD: 'not the password' });
    expect(wrong.code).toBe(1);
    expect(wrong.stderr).toMatch(/log in: email or password is wrong/);
  });

  it('when they upload a directory of videos with --wait, then every MP3 lands in --out, and the exit code is 0', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'videos-'));
    for (const name of ['mp4', 'mkv', 'webm'] as const) fs.copyFileSync(fixturePath(name), path.join(dir, path.basename(fixturePath(name))));
    const out = path.join(home, 'mp3s');
    const files = fs.readdirSync(dir).map((f) => path.join(dir, f));
    const r = await run(['--json', 'upload', ...files, '--bitrate', '96', '--mono', '--wait', '--out', out]);
    expect(r.code, r.stderr).toBe(0);
    const { uploads } = JSON.parse(r.stdout) as { uploads: { status: string; mp3: string; jobId: string }[] };
    expect(uploads.map((u) => u.status)).toEqual(['done', 'done', 'done']);
    expect(fs.readdirSync(out).sort()).toEqual(['h264-aac.mp3', 'vp8-vorbis.mp3', 'vp9-opus.mp3']);
    for (const u of uploads) {
      const { format } = await parseBuffer(fs.readFileSync(u.mp3), { mimeType: 'audio/mpeg' });
      expect(format).toMatchObject({ container: 'MPEG', numberOfChannels: 1, bitrate: 96_000 });
    }
    // Not a terminal: plain progress lines on stderr.
    expect(r.stderr).toMatch(/h264-aac\.mp4: uploading 100%\n/);
    expect(r.stderr).toMatch(/vp9-opus\.mkv: done 100%\n/);
  }, 120_000);

  it('when they list, check, download and remove a job, then each command says so', async () => {
    const list = await run(['--json', 'jobs']);
    expect(list.code).toBe(0);
    const { jobs } = JSON.parse(list.stdout) as { jobs: { jobId: string; filename: string }[] };
    expect(jobs).toHaveLength(3);
    const id = jobs.find((j) => j.filename === 'h264-aac.mp4')!.jobId;

    const status = await run(['status', id]);
    expect(status.code).toBe(0);
    expect(status.stdout).toMatch(new RegExp(`^${id}\\s+done\\s+.*h264-aac\\.mp4`));

    const out = path.join(home, 'again');
    const download = await run(['download', id, '--out', out]);
    expect(download.code).toBe(0);
    expect(download.stdout.trim()).toBe(path.join(out, 'h264-aac.mp3'));
    expect(fs.statSync(path.join(out, 'h264-aac.mp3')).size).toBeGreaterThan(10_000);

    expect((await run(['rm', id])).stdout).toBe(`deleted ${id}\n`);
    const gone = await run(['status', id]);
    expect(gone.code).toBe(1);
    expect(gone.stderr).toMatch(`job ${id}: not found`);
  });

  it.each([
    ['a file that is not a video', fixturePath('text'), /not-a-video\.txt: not a video the service can convert: this is not a video file/],
    ['a file over the size limit', path.join(fixturesDir, 'long-5min.mp4'), /long-5min\.mp4: larger than the service accepts/],
  ] as const)('when they upload %s, then the reason is printed and the exit code is 1', async (_what, file, message) => {
    const r = await run(['upload', file]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(message);
    expect(r.stdout).toMatch(/: rejected — /);
  });

  it('when they import a URL with --wait, then the MP3 arrives', async () => {
    const url = `http://127.0.0.1:${(origin.address() as AddressInfo).port}/clips/talk.mp4`;
    const out = path.join(home, 'imported');
    const r = await run(['--json', 'import', url, '--bitrate', '64', '--wait', '--out', out]);
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ file: url, status: 'done', mp3: path.join(out, 'talk.mp3') });
    const { format } = await parseBuffer(fs.readFileSync(path.join(out, 'talk.mp3')), { mimeType: 'audio/mpeg' });
    expect(format.bitrate).toBe(64_000);
  }, 60_000);

  it('when an import URL is refused, then the reason is printed and the exit code is 1', async () => {
    const r = await run(['import', 'http://10.0.0.1/video.mp4']);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/import: HTTP 400: url: loopback, link-local and private addresses are not allowed/);
  });

  it('when they upload with --loudness and --cover, then the service gets them as the `loudness` and `cover` fields', async () => {
    const r = await run(['upload', fixturePath('mp4'), '--loudness', 'podcast', '--cover', 'frame@2.5']);
    expect(r.code, r.stderr).toBe(0);
    const rows: { metadata: string }[] = await (await getDb())('uploads').select('metadata');
    expect(rows.map((row) => JSON.parse(row.metadata) as unknown)).toContainEqual(expect.objectContaining({ loudness: 'podcast', cover: 'frame@2.5' }));
  });

  it.each([
    [['--loudness', 'loud'], /loudness must be podcast, broadcast or a LUFS target from -31 to -5/],
    [['--loudness', '-40'], /loudness must be podcast, broadcast or a LUFS target from -31 to -5/],
    [['--cover', 'frame'], /cover must be auto, none or frame@SECONDS/],
  ])('when they give %j, then it is refused before anything is sent', async (args, message) => {
    const r = await run(['upload', fixturePath('mp4'), ...args]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(message);
  });

  it('when they rotate, show and revoke their feed, then the URL serves their MP3s until it is replaced or revoked', async () => {
    const rotated = await run(['feed', 'rotate']);
    expect(rotated.code, rotated.stderr).toBe(0);
    const url = rotated.stdout.trim();
    expect(url).toMatch(/\/download\/feed\/[A-Za-z0-9_-]{43}$/);
    const shown = await run(['--json', 'feed', 'show']);
    expect(JSON.parse(shown.stdout)).toEqual({ url, createdAt: expect.any(String) });
    const rss = await (await fetch(url)).text();
    expect(rss).toContain('<enclosure url="');

    const again = (await run(['feed', 'rotate'])).stdout.trim();
    expect(again).not.toBe(url);
    expect((await fetch(url)).status).toBe(404);

    expect((await run(['feed', 'revoke'])).stdout).toBe('feed revoked\n');
    expect((await fetch(again)).status).toBe(404);
    const none = await run(['feed', 'show']);
    expect(none.code).toBe(1);
    expect(none.stderr).toMatch(/no feed yet: run `video2mp3 feed rotate`/);
  });

  it('when the token is not valid, then they are told to log in again', async () => {
    const r = await run(['jobs'], { VIDEO2MP3_TOKEN: 'a.b.c' });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/not logged in, or the token has expired: run `video2mp3 login/);
  });

  it('when the service cannot be reached, then they are told so', async () => {
    const r = await run(['jobs'], { VIDEO2MP3_URL: `http://127.0.0.1:${await freePort()}` });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/cannot reach http:\/\/127\.0\.0\.1:\d+ \(ECONNREFUSED\)/);
  });

  it('when run on a terminal, then upload shows a progress bar', async () => {
    const r = await run(['upload', fixturePath('mov'), '--wait', '--out', path.join(home, 'tty')], {}, { tty: true });
    expect(r.code).toBe(0);
    // cli-progress draws with block characters and rewrites the line in place.
    expect(r.stdout).toMatch(/█+ 100% \| done \| h264-pcm\.mov/);
    expect(r.stdout).toContain('\u001b[');
    expect(fs.existsSync(path.join(home, 'tty/h264-pcm.mp3'))).toBe(true);
  }, 60_000);
});

describe('the video2mp3 CLI, when an upload is cut off', () => {
  let stack: Stack;
  let proxy: Proxy;
  let home: string;
  let url: string;
  const run = (args: string[], env: Record<string, string> = {}) => result(cli(home, args, env));

  beforeAll(async () => {
    home = fs.mkdtempSync(path.join(os.tmpdir(), 'video2mp3-cli-resume-'));
    // The CLI reaches the service through the proxy.
    ({ stack, proxy, url } = await startStackBehindProxy({}, { sources: true }));
  });
  afterAll(async () => {
    await proxy.close();
    await stack.close();
  });

  it('when `video2mp3 upload` is killed mid-file and run again, then it resumes where it stopped and the MP3 arrives once', async () => {
    expect((await run(['signup', '--url', url, '--email', `${uniqueName('resume')}@example.com`])).code).toBe(0);
    const video = path.join(home, 'talk.mkv');
    makeRawVideo(video, 4, '320x240');
    const size = fs.statSync(video).size;
    const out = path.join(home, 'mp3s');
    const args = ['upload', video, '--wait', '--out', out];

    proxy.rate = 2 * 1024 * 1024; // ~6 s for the file: time to kill it in the middle
    const start = proxy.bytesUp;
    const first = cli(home, args);
    const firstRun = result(first);
    await eventually(async () => (proxy.bytesUp - start > 0.4 * size ? true : undefined), 30_000, '40 % of the file at the service');
    first.kill('SIGKILL');
    expect((await firstRun).code).toBeNull(); // killed, not finished
    expect(fs.existsSync(path.join(out, 'talk.mp3'))).toBe(false);

    proxy.rate = Number.POSITIVE_INFINITY;
    const before = proxy.bytesUp;
    const second = await run(['--json', ...args]);
    expect(second.code, second.stderr).toBe(0);
    const resumedAt = Number(/talk\.mkv: resuming an interrupted upload at (\d+)%/.exec(second.stderr)?.[1]);
    expect(resumedAt).toBeGreaterThanOrEqual(30);
    // Only the rest of the file crossed the wire the second time.
    expect(proxy.bytesUp - before).toBeLessThan((1 - 0.3) * size);

    const { uploads } = JSON.parse(second.stdout) as { uploads: { status: string; mp3: string }[] };
    expect(uploads).toEqual([expect.objectContaining({ status: 'done', mp3: path.join(out, 'talk.mp3') })]);
    const { format } = await parseBuffer(fs.readFileSync(uploads[0]!.mp3), { mimeType: 'audio/mpeg' });
    expect(format.duration).toBeGreaterThan(3.9);
    expect(format.duration).toBeLessThan(4.2);
    // One job for the two runs, and nothing left to resume.
    const jobs = await run(['--json', 'jobs']);
    expect((JSON.parse(jobs.stdout) as { jobs: unknown[] }).jobs).toHaveLength(1);
    expect(Object.keys(JSON.parse(fs.readFileSync(path.join(home, 'config/video2mp3/uploads.json'), 'utf8')) as object)).toEqual([]);
  }, 120_000);
});

describe('the video2mp3 CLI with a batch, on the default quotas', () => {
  let home: string;
  const email = `${uniqueName('batch')}@example.com`;
  const run = (stack: Stack, args: string[]) => result(cli(home, args, { VIDEO2MP3_URL: stack.url }));

  /** A directory of `n` copies of the 3 s fixture, under distinct names. */
  const batchDir = (n: number) => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'batch-'));
    for (let i = 0; i < n; i++) fs.copyFileSync(fixturePath('mp4'), path.join(dir, `clip ${String(i).padStart(2, '0')}.mp4`));
    return fs.readdirSync(dir).sort().map((f) => path.join(dir, f));
  };
  const signUp = async (stack: Stack) => {
    home = fs.mkdtempSync(path.join(os.tmpdir(), 'video2mp3-cli-'));
    expect((await run(stack, ['signup', '--url', stack.url, '--email', email])).code).toBe(0);
  };

  it('when a person uploads 20 with --wait, then all 20 MP3s arrive, and another user\'s single upload is done within about one conversion', async () => {
    // The defaults, not the test stack's lifted ones: MAX_JOBS_IN_FLIGHT 3, MAX_JOBS_QUEUED 100.
    const stack = await startStack({ MAX_JOBS_IN_FLIGHT: '3' }, { sources: true });
    try {
      await signUp(stack);
      const other = await newUser(stack);
      const out = path.join(home, 'mp3s');
      const batch = run(stack, ['--json', 'upload', ...batchDir(20), '--wait', '--out', out]);
      const db = await getDb();
      const owner = (await db('users').where({ email }).first()).id as string;
      await eventually(async () => ((await db('jobs').where({ owner_id: owner }).count({ n: '*' }))[0]!.n as number >= 10 ? true : undefined), 60_000, 'half the batch uploaded');

      const started = Date.now();
      const res = await fetch(`${stack.url}/upload/`, { method: 'POST', headers: other.auth, body: videoForm(fs.readFileSync(fixturePath('mp4')), 'single.mp4') });
      expect(res.status).toBe(202);
      const { jobId } = (await res.json()) as { jobId: string };
      await eventually(async () => ((await findJob(db, jobId))!.status === 'done' ? true : undefined), 60_000, 'the single upload');
      const singleMs = Date.now() - started;
      const batchLeft = (await db('jobs').where({ owner_id: owner }).whereIn('status', ['queued', 'converting']).count({ n: '*' }))[0]!.n as number;

      const r = await batch;
      expect(r.code, r.stderr).toBe(0);
      const { uploads } = JSON.parse(r.stdout) as { uploads: { status: string }[] };
      expect(uploads.map((u) => u.status)).toEqual(uploads.map(() => 'done'));
      expect(uploads).toHaveLength(20);
      expect(fs.readdirSync(out).filter((f) => f.endsWith('.mp3'))).toHaveLength(20);
      // About one conversion: the batch's own jobs, converted four at a time on this machine, took this long each.
      const ms = (await db('jobs').where({ owner_id: owner }).pluck('conversion_ms')).map(Number).sort((x, y) => x - y);
      const median = ms[Math.floor(ms.length / 2)]!;
      console.log(JSON.stringify({ singleMs, batchConversionMedianMs: median, batchLeftWhenSingleDone: Number(batchLeft) }));
      expect(singleMs).toBeLessThan(3 * median + 2000);
      expect(Number(batchLeft)).toBeGreaterThan(0);
    } finally {
      await stack.close();
    }
  }, 300_000);

  it('when the queue is full, then the CLI prints the service\'s message, waits for Retry-After with progress, and goes on', async () => {
    const stack = await startStack({ MAX_JOBS_IN_FLIGHT: '1', MAX_JOBS_QUEUED: '2' }, { sources: true });
    try {
      await signUp(stack);
      const out = path.join(home, 'mp3s');
      const r = await run(stack, ['--json', 'upload', ...batchDir(4), '--wait', '--out', out]);
      expect(r.code, r.stderr).toBe(0);
      expect((JSON.parse(r.stdout) as { uploads: { status: string }[] }).uploads.map((u) => u.status)).toEqual(['done', 'done', 'done', 'done']);
      expect(r.stderr).toMatch(/clip 02\.mp4: your queue is full: 2 jobs waiting or converting \(MAX_JOBS_QUEUED\); upload more as they finish; waiting \d+ s as the service asks \(Retry-After\), then trying again\n/);
      expect(r.stderr).toMatch(/clip 02\.mp4: waiting for the service 50%\n/);
      expect(r.stderr).not.toMatch(/too many attempts/);
    } finally {
      await stack.close();
    }
  }, 180_000);
});
