// Private instances of the services the fault suite kills: a MariaDB and a FerretDB of its own, on
// their own ports and data directories, so a `kill -9` hurts nobody else. RabbitMQ is not killed by
// any row of the matrix; the suite uses its own virtual host on the shared broker (global-setup).
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { freePort } from '../support/net';

const root = path.resolve(__dirname, '../..');

export interface PrivateService {
  url: string;
  /** kill -9, as a crash or an OOM kill does; resolves once the process is gone. */
  kill(): Promise<void>;
  /** Starts it again on the same port and data; resolves once it accepts connections. */
  start(): Promise<void>;
  stopGracefully(): Promise<void>;
  close(): Promise<void>;
}

async function waitForPort(port: number, ms: number, proc: () => ChildProcess | undefined): Promise<void> {
  const deadline = Date.now() + ms;
  for (;;) {
    const open = await new Promise<boolean>((resolve) => {
      const s = net.connect(port, '127.0.0.1', () => { s.destroy(); resolve(true); });
      s.on('error', () => resolve(false));
    });
    if (open) return;
    if (proc()?.exitCode !== null && proc()?.exitCode !== undefined) throw new Error(`exited with ${proc()!.exitCode}`);
    if (Date.now() > deadline) throw new Error(`port ${port} did not open within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

function privateService(name: string, port: number, url: string, command: () => [string, string[]], ready: () => Promise<void>): PrivateService {
  let child: ChildProcess | undefined;
  let stderr = '';
  const start = async () => {
    const [bin, args] = command();
    stderr = '';
    child = spawn(bin, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    child.stderr!.on('data', (c: Buffer) => { stderr = (stderr + c.toString()).slice(-4000); });
    try {
      await waitForPort(port, 60_000, () => child);
      await ready();
    } catch (err) {
      throw new Error(`${name} did not start: ${(err as Error).message}\n${stderr}`);
    }
  };
  const stop = async (signal: NodeJS.Signals) => {
    const c = child;
    if (!c || c.exitCode !== null) return;
    const gone = new Promise((r) => c.once('exit', r));
    c.kill(signal);
    await gone;
  };
  return { url, start, kill: () => stop('SIGKILL'), stopGracefully: () => stop('SIGTERM'), close: () => stop('SIGKILL') };
}

/** mariadbd on an empty data directory: no system tables, no grants (--skip-grant-tables), root. */
export async function startMariadb(): Promise<PrivateService> {
  const port = await freePort();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'faults-mariadb-'));
  const service = privateService('MariaDB', port, `mysql://root@127.0.0.1:${port}/faults`, () => ['mariadbd', [
    '--no-defaults', `--datadir=${dir}`, `--port=${port}`, '--bind-address=127.0.0.1', `--socket=${path.join(dir, 'sock')}`,
    '--user=root', '--skip-grant-tables', '--skip-log-bin', '--innodb-buffer-pool-size=32M', '--skip-name-resolve',
  ]], async () => {
    const { default: knex } = await import('knex');
    const db = knex({ client: 'mysql2', connection: { uri: `mysql://root@127.0.0.1:${port}`, connectTimeout: 3000 } as never });
    try {
      await db.raw('CREATE DATABASE IF NOT EXISTS faults CHARACTER SET utf8mb4');
    } finally {
      await db.destroy();
    }
  });
  // The first start creates InnoDB's files; a kill -9 before they were ever shut down cleanly leaves
  // them unusable ("wrong space ID"), which is not the fault under test. So: create, stop cleanly, start.
  await service.start();
  await service.stopGracefully();
  await service.start();
  return service;
}

/** The project's FerretDB (.bin/ferretdb) on its own port and SQLite directory. */
export async function startFerretdb(database: string): Promise<PrivateService> {
  const port = await freePort();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'faults-ferretdb-'));
  const bin = path.join(root, '.bin/ferretdb');
  if (!fs.existsSync(bin)) throw new Error('no .bin/ferretdb: build it with scripts/ferretdb.sh');
  const service = privateService('FerretDB', port, `mongodb://127.0.0.1:${port}/${database}?directConnection=true`,
    () => [bin, ['-listen', `127.0.0.1:${port}`, '-dir', dir]], async () => {});
  await service.start();
  return service;
}
