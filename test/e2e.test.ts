// The whole product as a user meets it: sign up, log in, upload, wait, get the email, download the
// MP3 from the emailed link. Every function, both event sources, a real SMTP server (or, embedded,
// the outbox), on the embedded backends and on MariaDB + FerretDB + RabbitMQ.
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { HTTP } from 'cloudevents';
import { simpleParser } from 'mailparser';
import { conversionSucceeded } from '../lib/messaging/events';
import { parseBuffer } from 'music-metadata';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { getBroker } from '../lib/messaging/queue';
import { readFixture } from './fixtures';
import { startSmtp, type SmtpServer } from './support-smtp';
import { freePort } from './support/net';
import { backends, eventually, startStack, uniqueName, videoForm, type Stack } from './support/stack';

describe.each(backends())('a user on $name backends', ({ name, env }) => {
  let stack: Stack;
  let smtp: SmtpServer | undefined;
  let token: string;
  const email = `${uniqueName('e2e')}@example.com`;
  const password = 'a long enough password';

  /** Signs `who` up and logs in with HTTP Basic, as the original system's clients do. */
  async function signUpAndLogIn(who: string) {
    const signup = await fetch(`${stack.url}/auth/signup`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ email: who, password }) });
    const login = await fetch(`${stack.url}/auth/login`, { method: 'POST', headers: { authorization: `Basic ${Buffer.from(`${who}:${password}`).toString('base64')}` } });
    return { signup, login };
  }

  beforeAll(async () => {
    // Embedded means no SMTP server: mail goes to the outbox under DATA_DIR.
    if (name === 'services') smtp = await startSmtp();
    stack = await startStack({ ...env, ...(smtp ? { SMTP_URL: smtp.url } : {}) }, { sources: true });
    for (const q of ['video', 'mp3'] as const) await (await getBroker()).purge(q);
    const { login } = await signUpAndLogIn(email);
    token = ((await login.json()) as { token: string }).token;
  });
  afterAll(async () => {
    await stack.close();
    await smtp?.close();
  });

  /** The mails the user received so far, parsed: from the SMTP server, or the outbox's .eml files. */
  async function inbox() {
    if (smtp) return smtp.received.filter((m) => m.envelope.to.includes(email)).map((m) => m.parsed);
    const dir = path.join(stack.config.dataDir, 'outbox');
    const files = fs.existsSync(dir) ? fs.readdirSync(dir).filter((f) => f.endsWith('.eml')) : [];
    return Promise.all(files.map(async (f) => simpleParser(fs.readFileSync(path.join(dir, f)))));
  }

  async function upload(fixture: Parameters<typeof readFixture>[0], filename: string) {
    const res = await fetch(`${stack.url}/upload/`, { method: 'POST', headers: { authorization: `Bearer ${token}` }, body: videoForm(readFixture(fixture), filename) });
    expect(res.status).toBe(202);
    const { jobId, statusUrl } = (await res.json()) as { jobId: string; statusUrl: string };
    const final = await eventually(async () => {
      const job = (await (await fetch(statusUrl, { headers: { authorization: `Bearer ${token}` } })).json()) as { status: string; error?: string };
      return job.status === 'done' || job.status === 'failed' ? job : undefined;
    }, 60_000, 'the job to end');
    return { jobId, final };
  }

  it('when they sign up and log in, then they get a token', async () => {
    const { signup, login } = await signUpAndLogIn(`${uniqueName('e2e')}@example.com`);
    expect(signup.status).toBe(201);
    expect(login.status).toBe(200);
    expect(((await login.json()) as { token: string }).token).toMatch(/^[\w-]+\.[\w-]+\.[\w-]+$/);
  });

  /** The mails about one job, after a pause long enough for a duplicate to have arrived too. */
  async function settledMailsAbout(jobId: string) {
    await new Promise((r) => setTimeout(r, 500));
    return (await inbox()).filter((m) => m.text?.includes(jobId));
  }

  it('when they upload a video, then the job is done, an email arrives, and its link downloads a valid MP3', async () => {
    const { jobId, final } = await upload('mkv', 'Summer Trip.mkv');
    expect(final.status).toBe('done');
    const mail = await eventually(async () => (await inbox()).find((m) => m.text?.includes(jobId)), 20_000, 'the email');
    expect(mail.subject).toContain('Summer Trip.mkv');
    expect(mail.html).toContain('Summer Trip.mkv');
    const link = /https?:\/\/\S+\/links\/[\w.-]+/.exec(mail.text!)?.[0];
    expect(link).toBeDefined();
    expect(mail.html).toContain(link);
    expect(await settledMailsAbout(jobId)).toHaveLength(1);

    const res = await fetch(link!); // no token: the link is the credential
    expect(res.status).toBe(200);
    expect(res.headers.get('content-disposition')).toContain('Summer Trip.mp3');
    const meta = await parseBuffer(Buffer.from(await res.arrayBuffer()), { mimeType: 'audio/mpeg' }, { duration: true });
    expect(meta.format.codec).toMatch(/MPEG 1 Layer 3|MP3/i);
    expect(Math.abs(meta.format.duration! - 3)).toBeLessThanOrEqual(0.1);
  });

  it('when they upload a video without sound, then the job fails and an email says why', async () => {
    const { jobId, final } = await upload('no-audio', 'silent film.mp4');
    expect(final).toMatchObject({ status: 'failed', error: expect.stringMatching(/no audio/i) });
    const mail = await eventually(async () => (await inbox()).find((m) => m.text?.includes(jobId)), 20_000, 'the failure email');
    expect(mail.subject).toContain('silent film.mp4');
    expect(mail.text).toMatch(/no audio/i);
    expect(mail.text).not.toMatch(/\/links\//);
    expect(await settledMailsAbout(jobId)).toHaveLength(1);
  });
});

describe('npm start, as a person runs it (no services configured)', () => {
  let child: ChildProcess | undefined;
  afterAll(() => { child?.kill('SIGTERM'); });

  it('when it starts, then it names its embedded backends, and an uploaded clip ends as an .eml in the outbox with a working link', async () => {
    const root = path.resolve(__dirname, '..');
    const dataDir = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'npm-start-')), 'data'); // npm start creates it
    const port = await freePort();
    let output = '';
    child = spawn(process.execPath, ['--import', 'tsx', 'scripts/start.ts'], {
      cwd: root,
      env: { PATH: process.env.PATH!, PORT: String(port), DATA_DIR: dataDir, LOG_LEVEL: 'info' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    child.stdout!.on('data', (c: Buffer) => { output += c.toString(); });
    const base = `http://localhost:${port}`;
    await eventually(async () => (output.includes('video2mp3 is up') ? true : undefined), 30_000, 'npm start');
    const up = JSON.parse(output.split('\n').find((l) => l.includes('video2mp3 is up'))!) as Record<string, unknown>;
    expect(up).toMatchObject({
      database: `sqlite ${path.join(dataDir, 'video2mp3.sqlite')}`,
      storage: `directory ${path.join(dataDir, 'blobs')}`,
      queue: 'in-process queue',
      mail: `outbox ${path.join(dataDir, 'outbox')}`,
    });

    const credentials = { email: 'someone@example.com', password: 'a long enough password' };
    const json = { 'content-type': 'application/json' };
    expect((await fetch(`${base}/auth/signup`, { method: 'POST', headers: json, body: JSON.stringify(credentials) })).status).toBe(201);
    const { token } = (await (await fetch(`${base}/auth/login`, { method: 'POST', headers: json, body: JSON.stringify(credentials) })).json()) as { token: string };
    const res = await fetch(`${base}/upload/`, { method: 'POST', headers: { authorization: `Bearer ${token}` }, body: videoForm(readFixture('mp4'), 'clip.mp4') });
    expect(res.status).toBe(202);

    const outbox = path.join(dataDir, 'outbox');
    const file = await eventually(async () => (fs.existsSync(outbox) ? fs.readdirSync(outbox).find((f) => f.endsWith('.eml')) : undefined), 30_000, 'the .eml');
    const mail = await simpleParser(fs.readFileSync(path.join(outbox, file)));
    const link = /https?:\/\/\S+\/links\/[\w.-]+/.exec(mail.text!)![0];
    // npm start names the .eml and when its link expires, but never writes the link (a bearer credential) to the log.
    expect(output).toContain(path.join(outbox, file));
    expect(output).toMatch(/"linkExpiresAt":"\d{4}-/);
    expect(output).not.toContain(link.split('/links/')[1]);
    const mp3 = await fetch(link);
    expect(mp3.status).toBe(200);
    expect(mp3.headers.get('content-type')).toBe('audio/mpeg');

    // The data it keeps is readable by its user only.
    expect(fs.statSync(dataDir).mode & 0o777).toBe(0o700);
    expect(fs.statSync(path.join(dataDir, 'video2mp3.sqlite')).mode & 0o777).toBe(0o600);

    // Events are not taken from the public port: a forged outcome for this job, naming the sender's
    // own address, is refused there and mails nothing.
    const jobId = ((await res.json()) as { jobId: string }).jobId;
    const forged = HTTP.binary(conversionSucceeded({ jobId, owner: 'x', email: 'attacker@example.com', filename: 'x.mp4', mp3BlobId: jobId, durationSeconds: 1, bytes: 1 }));
    for (const fn of ['notify', 'convert']) {
      const refused = await fetch(`${base}/${fn}/`, { method: 'POST', headers: forged.headers as Record<string, string>, body: forged.body as string });
      expect(refused.status).toBe(404);
      expect(await refused.json()).toEqual({ error: { code: 'not_found', message: expect.any(String) } });
    }
    await new Promise((r) => setTimeout(r, 500));
    expect(fs.readdirSync(outbox).filter((f) => f.endsWith('.eml'))).toEqual([file]);
  });
});
