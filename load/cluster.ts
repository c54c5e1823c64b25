// The deployment of knative/, minus Kubernetes, for the load test: every bundled function as R separate
// processes with the environment it gets on Knative, a balancer in front of each function's replicas
// (round robin, the manifest's containerConcurrency per replica), the two real RabbitMQ receive adapters
// with knative/50-sources.yaml's settings, the PingSources' ticks, and real MariaDB, RabbitMQ, FerretDB
// and an SMTP server. Everything listens on loopback and gets its own database, vhost and data dir.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import knex from 'knex';
import { MongoClient } from 'mongodb';
import { parseAllDocuments } from 'yaml';
import { functionNames, loadConfig, type Config, type FunctionName } from '../lib/core/config';
import { startPing } from '../lib/messaging/ping';
import { createBroker } from '../lib/messaging/queue';
import { adapterAvailable, adapterBroker, startAdapter, type RunningAdapter } from '../test/support/adapter';
import { ensureBundles, killBundles, startBundle, type RunningFunction } from '../test/support/bundles';
import { adapterEnv, functionEnv, sourceFor } from '../test/support/manifests';
import { freePort } from '../test/support/net';
import { startSmtp, type SmtpServer } from '../test/support-smtp';
import { startBalancer, type Balancer } from './balancer';

const root = path.resolve(__dirname, '..');

export interface ClusterOptions {
  replicas: number;
  /** Settings that differ from the manifests (e.g. a higher signup limit: every load user signs up from 127.0.0.1). */
  overrides: Record<string, string>;
}

export interface Cluster {
  /** Each function's balancer URL, as clients and the adapters reach it. */
  url: Record<FunctionName, string>;
  /** The settings the upload function runs with (quotas and limits, for the invariants). */
  config: Config;
  smtp: SmtpServer;
  db: ReturnType<typeof knex>;
  mongo: MongoClient;
  /** The functions' recent log lines, for a failure's message. */
  logs(): string;
  close(): Promise<void>;
}

function containerConcurrency(fn: FunctionName): number {
  const [doc] = parseAllDocuments(fs.readFileSync(path.join(root, 'knative/40-services', `${fn}.yaml`), 'utf8'));
  return Number((doc!.toJS() as { spec: { template: { spec: { containerConcurrency?: number } } } }).spec.template.spec.containerConcurrency ?? 0);
}

/** The PingSources of knative/55-maintenance.yaml: which function and path each ticks, and how often (by its cron's minutes). */
function pingSinks(): { fn: FunctionName; uri: string }[] {
  return parseAllDocuments(fs.readFileSync(path.join(root, 'knative/55-maintenance.yaml'), 'utf8'))
    .map((d) => d.toJS() as { kind?: string; spec?: { sink: { ref: { name: FunctionName }; uri?: string } } })
    .filter((o) => o?.kind === 'PingSource')
    .map((o) => ({ fn: o.spec!.sink.ref.name, uri: o.spec!.sink.uri ?? '/' }));
}

async function startFerretDb(): Promise<{ url: string; stop(): void }> {
  const bin = path.join(root, '.bin/ferretdb');
  if (!fs.existsSync(bin)) throw new Error('.bin/ferretdb is missing: build it with bash scripts/ferretdb.sh');
  const port = await freePort();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'load-ferretdb-'));
  const child: ChildProcess = spawn(bin, ['-listen', `127.0.0.1:${port}`, '-dir', dir], { stdio: 'ignore' });
  const url = `mongodb://127.0.0.1:${port}/load?directConnection=true`;
  const deadline = Date.now() + 15_000;
  for (;;) {
    const client = new MongoClient(url, { serverSelectionTimeoutMS: 1000 });
    try {
      await client.db('admin').command({ ping: 1 });
      break;
    } catch (err) {
      if (Date.now() > deadline) throw err;
      await new Promise((r) => setTimeout(r, 250));
    } finally {
      await client.close();
    }
  }
  return { url, stop: () => { child.kill('SIGTERM'); fs.rmSync(dir, { recursive: true, force: true }); } };
}

const rabbitmqctl = (args: string[]) => spawnSync('rabbitmqctl', args, { stdio: 'ignore', timeout: 30_000 }).status === 0;

/** Brings the whole deployment up; `log` is told each step. */
export async function startCluster(opts: ClusterOptions, log: (line: string) => void): Promise<Cluster> {
  if (!adapterAvailable()) throw new Error('the receive adapter is missing: bash scripts/receive-adapter.sh');
  ensureBundles();
  const name = `video2mp3_load_${process.pid}`;
  const stops: (() => Promise<void> | void)[] = [];
  const close = async () => {
    for (const stop of stops.reverse()) await Promise.resolve(stop()).catch(() => {});
    killBundles();
  };
  try {
    const admin = knex({ client: 'mysql2', connection: { uri: process.env.LOAD_MYSQL_URL ?? 'mysql://root@127.0.0.1:3306/mysql' } as never });
    await admin.raw(`DROP DATABASE IF EXISTS ${name}`);
    await admin.raw(`CREATE DATABASE ${name} CHARACTER SET utf8mb4`);
    stops.push(async () => { await admin.raw(`DROP DATABASE IF EXISTS ${name}`); await admin.destroy(); });
    const databaseUrl = new URL(process.env.LOAD_MYSQL_URL ?? 'mysql://root@127.0.0.1:3306/mysql');
    databaseUrl.pathname = `/${name}`;

    if (!rabbitmqctl(['add_vhost', name])) throw new Error('rabbitmqctl add_vhost failed: is RabbitMQ running on this machine?');
    rabbitmqctl(['set_permissions', '-p', name, 'guest', '.*', '.*', '.*']);
    stops.push(() => { rabbitmqctl(['delete_vhost', name]); });
    const amqpUrl = `${process.env.LOAD_AMQP_URL ?? 'amqp://guest:guest@127.0.0.1:5672'}/${name}`;
    // The queues exist before any adapter looks for them (on a cluster, knative/11-queues.yaml declares them).
    const broker = createBroker(loadConfig({ AMQP_URL: amqpUrl }));
    await broker.depth('video');
    await broker.close();

    const ferret = await startFerretDb();
    stops.push(() => ferret.stop());
    const smtp = await startSmtp();
    stops.push(() => smtp.close());
    log(`backends: MariaDB database ${name}, RabbitMQ vhost ${name}, FerretDB, SMTP on ${smtp.port}`);

    const keys = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const balancers = {} as Record<FunctionName, Balancer>;
    const ports = {} as Record<FunctionName, number[]>;
    for (const fn of functionNames) ports[fn] = await Promise.all(Array.from({ length: opts.replicas }, () => freePort()));
    for (const fn of functionNames) {
      balancers[fn] = await startBalancer(ports[fn], containerConcurrency(fn));
      stops.push(() => balancers[fn].close());
    }
    const url = Object.fromEntries(functionNames.map((fn) => [fn, balancers[fn].url])) as Record<FunctionName, string>;
    // What a cluster resolves differently: Secret values, and where each function is reached.
    const local: Record<string, string> = {
      DATABASE_URL: databaseUrl.toString(),
      MONGODB_URI: ferret.url,
      AMQP_URL: amqpUrl,
      SMTP_URL: smtp.url,
      JWT_PRIVATE_KEY: keys.privateKey.export({ format: 'pem', type: 'pkcs8' }).toString(),
      JWT_PUBLIC_KEY: keys.publicKey.export({ format: 'pem', type: 'spki' }).toString(),
      LINK_SECRET: randomBytes(32).toString('hex'),
      PUBLIC_URL: url.auth,
      DOWNLOAD_URL: url.download,
      LOG_LEVEL: 'warn',
    };
    const envOf = (fn: FunctionName) => ({ ...functionEnv(fn, local), ...opts.overrides });

    // The first replica of each function alone (each migrates the database as it starts), then the rest.
    const running: RunningFunction[] = [];
    stops.push(() => Promise.all(running.map((r) => r.stop())).then(() => {}));
    for (const fn of functionNames) running.push(await startBundle(fn, ports[fn][0]!, envOf(fn)));
    await Promise.all(functionNames.flatMap((fn) => ports[fn].slice(1).map(async (port) => { running.push(await startBundle(fn, port, envOf(fn))); })));
    log(`functions: ${functionNames.map((fn) => `${fn}×${opts.replicas}`).join(', ')}`);

    const adapters: RunningAdapter[] = [];
    stops.push(() => Promise.all(adapters.map((a) => a.stop())).then(() => {}));
    for (const fn of ['convert', 'notify'] as const) {
      adapters.push(await startAdapter(adapterEnv(sourceFor(fn).metadata.name, { ...adapterBroker(amqpUrl), sink: `${url[fn]}/` })));
    }
    // The PingSources tick every few minutes on a cluster; a load run is short, so every 5 s.
    for (const sink of pingSinks()) {
      const ping = startPing({ sink: `${url[sink.fn]}${sink.uri}`, intervalMs: 5_000 });
      stops.push(() => ping.stop());
    }
    log('receive adapters for `video` and `mp3`, maintenance ticks every 5 s');

    const db = knex({ client: 'mysql2', connection: { uri: local.DATABASE_URL } as never, pool: { min: 0, max: 2 } });
    stops.push(() => db.destroy());
    const mongo = await MongoClient.connect(ferret.url);
    stops.push(() => mongo.close());
    const logs = () => running.map((r) => `--- ${r.fn} :${r.port}\n${r.logs()}`).join('\n');
    return { url, config: loadConfig(envOf('upload')), smtp, db, mongo, logs, close };
  } catch (err) {
    await close();
    throw err;
  }
}
