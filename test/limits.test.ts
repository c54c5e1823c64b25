// Limits hold under bursts of parallel requests spread over two auth replicas (two processes on one
// database), as they run on Knative with more than one pod.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort } from './support/net';
import { backends, eventually } from './support/stack';

const root = path.resolve(__dirname, '..');
const maxFailures = 5;
const signupsPerHour = 3;
const newEmail = () => `user-${randomBytes(5).toString('hex')}@example.com`;
const address = () => `198.51.100.${1 + Math.floor(Math.random() * 250)}`;

describe.each(backends())('limits across two auth replicas on $name backends', ({ env }) => {
  const children: ChildProcess[] = [];
  let replicas: string[] = [];

  beforeAll(async () => {
    const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'video2mp3-limits-'));
    replicas = await Promise.all([0, 1].map(async () => {
      const port = await freePort();
      const child = spawn(process.execPath, ['--import', 'tsx', path.join(root, 'test/support/serve-function.ts'), 'auth'], {
        cwd: root,
        // Loopback is the trusted proxy: each request names its client address in X-Forwarded-For.
        env: { ...process.env, ...env, PORT: String(port), DATA_DIR: dataDir, LOG_LEVEL: 'warn', TRUST_PROXY: 'loopback', LOGIN_MAX_FAILURES: String(maxFailures), LOGIN_WINDOW_SECONDS: '300', SIGNUP_MAX_PER_HOUR: String(signupsPerHour) },
        stdio: ['ignore', 'inherit', 'inherit'],
      });
      children.push(child);
      const url = `http://127.0.0.1:${port}`;
      await eventually(async () => (await fetch(`${url}/healthz`).then((r) => r.ok, () => false)) || undefined, 30_000, 'an auth replica');
      return url;
    }));
  }, 60_000);
  afterAll(() => { for (const c of children) c.kill('SIGTERM'); });

  const post = (i: number, p: string, body: unknown, ip: string) => fetch(`${replicas[i % 2]}${p}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-forwarded-for': ip },
    body: JSON.stringify(body),
  });

  async function burst(n: number, request: (i: number) => Promise<Response>) {
    const responses = await Promise.all(Array.from({ length: n }, (_, i) => request(i)));
    const count = (status: number) => responses.filter((r) => r.status === status).length;
    return { responses, count };
  }

  async function signUp(email: string, password: string) {
    const res = await post(0, '/signup', { email, password }, address());
    expect(res.status).toBe(201);
  }

  it('when 40 wrong passwords for one email arrive at once, then exactly LOGIN_MAX_FAILURES are tried and the rest get 429 with Retry-After', async () => {
    const email = newEmail();
    await signUp(email, 'correct horse battery');
    const ip = address();
    const { responses, count } = await burst(40, (i) => post(i, '/login', { email, password: `wrong-${i}` }, ip));
    expect(count(401)).toBe(maxFailures);
    expect(count(401) + count(429)).toBe(40);
    for (const r of responses.filter((x) => x.status === 429)) expect(Number(r.headers.get('retry-after'))).toBeGreaterThan(0);
    // Locked: even the right password waits for the window now.
    expect((await post(0, '/login', { email, password: 'correct horse battery' }, ip)).status).toBe(429);
  });

  it('when 80 wrong passwords for different emails arrive at once from one address, then exactly four times LOGIN_MAX_FAILURES are tried', async () => {
    const ip = address();
    const { count } = await burst(80, (i) => post(i, '/login', { email: newEmail(), password: 'wrong-password' }, ip));
    expect(count(401)).toBe(maxFailures * 4);
    expect(count(401) + count(429)).toBe(80);
    // Another address is not held back by this one.
    expect((await post(1, '/login', { email: newEmail(), password: 'wrong-password' }, address())).status).toBe(401);
  });

  it('when the right password comes in a burst of wrong ones within the limit, then it logs in', async () => {
    const email = newEmail();
    const password = 'correct horse battery';
    await signUp(email, password);
    const ip = address();
    const { responses } = await burst(maxFailures - 1, (i) => post(i, '/login', { email, password: i === 0 ? password : `wrong-${i}` }, ip));
    expect(responses.map((r) => r.status).sort()).toEqual([200, ...Array<number>(maxFailures - 2).fill(401)]);
    // The success started the email's count over: the right password still logs in from either replica.
    expect((await post(1, '/login', { email, password }, ip)).status).toBe(200);
  });

  it('when 20 signups arrive at once from one address, then at most SIGNUP_MAX_PER_HOUR accounts are made and the rest get 429', async () => {
    const ip = address();
    const { responses, count } = await burst(20, (i) => post(i, '/signup', { email: newEmail(), password: 'password-123' }, ip));
    expect(count(201)).toBe(signupsPerHour);
    expect(count(429)).toBe(20 - signupsPerHour);
    for (const r of responses.filter((x) => x.status === 429)) expect(Number(r.headers.get('retry-after'))).toBeGreaterThan(0);
  });
});
