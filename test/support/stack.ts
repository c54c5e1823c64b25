import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import type http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { handlers } from '../../functions/all';
import { closeClients } from '../../lib/core/clients';
import { functionNames, loadConfig, setConfig, type Config } from '../../lib/core/config';
import { startTracing } from '../../lib/core/tracing';
import { getBroker, type Consumer } from '../../lib/messaging/queue';
import { bodyLimit, createServer, eventFunctions, listenInternal } from '../../lib/http/serve';
import { listStaticFiles } from '../../lib/http/static';
import { startPipelineSources, startSource } from '../../lib/messaging/source';
import { freePort } from './net';
import { startProxy, type Proxy } from './proxy';

export interface Backend {
  name: 'embedded' | 'services';
  env: Record<string, string>;
}

/** A fresh name for this file's MongoDB database, queues' test data and so on. */
export const uniqueName = (prefix: string) => `${prefix}_${randomBytes(6).toString('hex')}`;

/**
 * The backend sets every stack test runs against: the embedded defaults always, and the real
 * MariaDB + FerretDB + RabbitMQ when global-setup found them (always under CI).
 */
export function backends(): Backend[] {
  const list: Backend[] = [{ name: 'embedded', env: {} }];
  const { TEST_DATABASE_URL, TEST_MONGODB_URL, TEST_AMQP_URL } = process.env;
  if (TEST_DATABASE_URL && TEST_MONGODB_URL && TEST_AMQP_URL) {
    const mongo = new URL(TEST_MONGODB_URL);
    mongo.pathname = `/${uniqueName('t')}`;
    list.push({ name: 'services', env: { DATABASE_URL: TEST_DATABASE_URL, MONGODB_URI: mongo.toString(), AMQP_URL: TEST_AMQP_URL } });
  }
  return list;
}

export interface Stack {
  /** The public listener: auth, upload, download. */
  url: string;
  /** The loopback-only listener of the event receivers: convert, notify (as `npm start` serves them). */
  internalUrl: string;
  config: Readonly<Config>;
  server: http.Server;
  /** The loopback listener of convert and notify. */
  internalServer: http.Server;
  /** The running event sources; a test may stop, replace or add to them. */
  sources: Consumer[];
  close(): Promise<void>;
}


/**
 * The local stack in this process, on a free port: every function under /<name>/ exactly as
 * `npm start` serves it (with `sources`, also the local event sources; 'video' for convert's alone), with a fresh data directory
 * and the given environment.
 */
export async function startStack(env: Record<string, string> = {}, opts: { sources?: boolean | 'video'; web?: string } = {}): Promise<Stack> {
  await closeClients();
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'video2mp3-test-'));
  // Every test signs users up from 127.0.0.1 and many queue several jobs at once: the per-address
  // signup limit and the per-user turns (MAX_JOBS_IN_FLIGHT, docs/scheduling.md) are lifted unless a test sets them.
  const base = { DATA_DIR: dataDir, LOG_LEVEL: process.env.LOG_LEVEL ?? 'warn', SIGNUP_MAX_PER_HOUR: '100000', MAX_JOBS_IN_FLIGHT: '1000' };
  const limits = loadConfig({ ...base, ...env });
  // As `npm start`: the API description at /openapi.json, and the built page at / when `web` names its directory.
  const files = listStaticFiles(opts.web ?? path.join(dataDir, 'web'), { '/openapi.json': path.join(__dirname, '../../docs/openapi.json') });
  const mount = (name: (typeof functionNames)[number]) => ({ prefix: `/${name}`, name, handler: handlers[name], bodyLimit: bodyLimit(name, limits) });
  const server = createServer(functionNames.filter((n) => !eventFunctions.includes(n)).map(mount), { ...limits, files });
  const internal = createServer(eventFunctions.map(mount), limits);
  const internalUrl = `http://127.0.0.1:${await listenInternal(internal)}`;
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  // Links and Location headers point at this server, as PUBLIC_URL does for `npm start`.
  const config = loadConfig({ ...base, PUBLIC_URL: `http://127.0.0.1:${port}`, ...env });
  setConfig(config);
  if (config.otlpEndpoint) await startTracing({ endpoint: config.otlpEndpoint, service: 'video2mp3' });
  const url = `http://127.0.0.1:${port}`;
  const sources = opts.sources === 'video'
    ? [await startSource(await getBroker(), { ...config.sources.video, queue: 'video', sink: `${internalUrl}/convert/` })]
    : opts.sources ? await startPipelineSources(await getBroker(), internalUrl, config) : [];
  const stack: Stack = {
    url,
    internalUrl,
    config,
    server,
    internalServer: internal,
    sources,
    async close() {
      await Promise.all(stack.sources.map((s) => s.stop()));
      for (const s of [server, internal]) {
        s.closeAllConnections();
        await new Promise((resolve) => s.close(resolve));
      }
      await closeClients();
    },
  };
  return stack;
}

/**
 * The stack behind a TCP proxy (test/support/proxy.ts) that a test can slow down and cut, with the
 * service's links (the tus upload URL among them) naming the proxy, as PUBLIC_URL does behind an
 * ingress. `url` is the proxy's.
 */
export async function startStackBehindProxy(env: Record<string, string> = {}, opts: Parameters<typeof startStack>[1] = {}): Promise<{ stack: Stack; proxy: Proxy; url: string }> {
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const stack = await startStack({ ...env, PUBLIC_URL: url }, opts);
  const proxy = await startProxy({ host: '127.0.0.1', port: Number(new URL(stack.url).port) }, { port });
  return { stack, proxy, url };
}

export interface TestUser {
  id: string;
  email: string;
  token: string;
  auth: { authorization: string };
}

/** Signs a new user up and logs them in through the auth function. */
export async function newUser(stack: Stack): Promise<TestUser> {
  const email = `${uniqueName('user')}@example.com`;
  const password = 'correct horse battery';
  const headers = { 'content-type': 'application/json' };
  const signup = await fetch(`${stack.url}/auth/signup`, { method: 'POST', headers, body: JSON.stringify({ email, password }) });
  if (signup.status !== 201) throw new Error(`signup failed: ${signup.status} ${await signup.text()}`);
  const { id } = (await signup.json()) as { id: string };
  const login = await fetch(`${stack.url}/auth/login`, { method: 'POST', headers, body: JSON.stringify({ email, password }) });
  const { token } = (await login.json()) as { token: string };
  return { id, email, token, auth: { authorization: `Bearer ${token}` } };
}

/** A multipart upload form: option fields, then the one file part. */
export function videoForm(file: Buffer, filename: string, fields: Record<string, string> = {}, type = 'video/mp4') {
  const body = new FormData();
  for (const [k, v] of Object.entries(fields)) body.append(k, v);
  body.append('file', new Blob([file], { type }), filename);
  return body;
}

/** Polls `fn` until it returns a value, or fails after `ms`. */
export async function eventually<T>(fn: () => Promise<T | undefined>, ms = 30_000, what = 'condition'): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await fn();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
