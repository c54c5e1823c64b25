// Starts or finds the real services the tests use, once per run, and hands their URLs to the test
// files through environment variables. Under CI a missing service fails the run; elsewhere the
// service-backed variants are left out and the embedded ones still run.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import amqp from 'amqplib';
import knex from 'knex';
import { MongoClient } from 'mongodb';
import { freePort } from './net';

const ci = process.env.CI === 'true';
const root = path.resolve(__dirname, '../..');

async function check(name: string, probe: () => Promise<void>): Promise<boolean> {
  try {
    await probe();
    return true;
  } catch (err) {
    const message = `${name} is not reachable: ${(err as Error).message}`;
    if (ci) throw new Error(`${message} (CI=true: service-backed tests must not be skipped)`);
    console.warn(`[tests] ${message}; its variants are left out (they run under CI)`);
    return false;
  }
}

let ferret: ChildProcess | undefined;
let vhost: string | undefined;
let mysqlAdminUrl: string | undefined;
// Names of this run's database and virtual host: runs on one machine do not disturb each other.
const runName = `video2mp3_test_${process.pid}`;

function rabbitmqctl(args: string[]): boolean {
  return spawnSync('rabbitmqctl', args, { stdio: 'ignore', timeout: 30_000 }).status === 0;
}

export async function setup() {
  const mysqlAdmin = process.env.TEST_MYSQL_URL ?? 'mysql://root@127.0.0.1:3306/test';
  const mysqlTest = new URL(mysqlAdmin);
  mysqlTest.pathname = `/${runName}`;
  const mysqlOk = await check('MariaDB', async () => {
    const db = knex({ client: 'mysql2', connection: { uri: mysqlAdmin, connectTimeout: 3000 } as never });
    try {
      await db.raw(`DROP DATABASE IF EXISTS ${runName}`);
      await db.raw(`CREATE DATABASE ${runName} CHARACTER SET utf8mb4`);
    } finally {
      await db.destroy();
    }
  });
  if (mysqlOk) {
    process.env.TEST_DATABASE_URL = mysqlTest.toString();
    mysqlAdminUrl = mysqlAdmin;
  }

  let amqpUrl = process.env.TEST_AMQP_URL ?? 'amqp://guest:guest@127.0.0.1:5672';
  if (!process.env.TEST_AMQP_URL && rabbitmqctl(['add_vhost', runName])) {
    // A virtual host of its own, so the run's queues are not shared with anything else on the broker.
    rabbitmqctl(['set_permissions', '-p', runName, 'guest', '.*', '.*', '.*']);
    vhost = runName;
    amqpUrl = `${amqpUrl}/${runName}`;
  }
  if (await check('RabbitMQ', async () => { await (await amqp.connect(amqpUrl)).close(); })) {
    process.env.TEST_AMQP_URL = amqpUrl;
  }

  let mongoUrl = process.env.TEST_MONGODB_URL;
  if (!mongoUrl) {
    const bin = path.join(root, '.bin/ferretdb');
    if (fs.existsSync(bin)) {
      const port = await freePort();
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ferretdb-'));
      ferret = spawn(bin, ['-listen', `127.0.0.1:${port}`, '-dir', dir], { stdio: ['ignore', 'ignore', 'inherit'] });
      mongoUrl = `mongodb://127.0.0.1:${port}/?directConnection=true`;
    }
  }
  const mongoOk = await check('FerretDB', async () => {
    if (!mongoUrl) throw new Error('no .bin/ferretdb (build it with scripts/ferretdb.sh) and no TEST_MONGODB_URL');
    const deadline = Date.now() + 15_000;
    for (;;) {
      const client = new MongoClient(mongoUrl, { serverSelectionTimeoutMS: 1000 });
      try {
        await client.db('admin').command({ ping: 1 });
        return;
      } catch (err) {
        if (Date.now() > deadline) throw err;
        await new Promise((r) => setTimeout(r, 250));
      } finally {
        await client.close();
      }
    }
  });
  if (mongoOk && mongoUrl) process.env.TEST_MONGODB_URL = mongoUrl;
}

export async function teardown() {
  ferret?.kill('SIGTERM');
  if (vhost) rabbitmqctl(['delete_vhost', vhost]);
  if (mysqlAdminUrl) {
    const db = knex({ client: 'mysql2', connection: { uri: mysqlAdminUrl } as never });
    await db.raw(`DROP DATABASE IF EXISTS ${runName}`).finally(() => db.destroy());
  }
}
