import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import type http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { closeClients } from '../../lib/clients';
import { functionNames, loadConfig, setConfig, type Config } from '../../lib/config';
import { getBroker } from '../../lib/queue';
import { bodyLimit, createServer } from '../../lib/serve';
import { startPipelineSources } from '../../lib/source';

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
  url: string;
  config: Readonly<Config>;
  server: http.Server;
  close(): Promise<void>;
}

// Every function that exists so far registers itself with functions-framework on import.
const functions = functionNames.filter((name) => fs.existsSync(path.join(__dirname, '../../functions', name, 'index.ts')));
const registered = Promise.all(functions.map((name) => import(`../../functions/${name}/index.ts`)));

/**
 * The local stack in this process, on a free port: every function under /<name>/ exactly as
 * `npm start` serves it (with `sources`, also the local event sources), with a fresh data directory
 * and the given environment.
 */
export async function startStack(env: Record<string, string> = {}, opts: { sources?: boolean } = {}): Promise<Stack> {
  await registered;
  await closeClients();
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'video2mp3-test-'));
  const config = loadConfig({ DATA_DIR: dataDir, ...env });
  setConfig(config);
  const server = createServer(functions.map((name) => ({ prefix: `/${name}`, name, bodyLimit: bodyLimit(name, config) })));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  const sources = opts.sources ? await startPipelineSources(await getBroker(), `http://127.0.0.1:${port}`, config) : [];
  return {
    url: `http://127.0.0.1:${port}`,
    config,
    server,
    async close() {
      await Promise.all(sources.map((s) => s.stop()));
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
      await closeClients();
    },
  };
}
