// The real Knative RabbitmqSource receive adapter (knative.dev/eventing-rabbitmq v0.48.0
// cmd/receive_adapter, built by scripts/receive-adapter.sh) as a child process, configured as the
// controller configures it (test/support/manifests.ts adapterEnv). Without Kubernetes it only needs a
// REST config, which `--server` supplies; it makes no request to it (docs/rabbitmq-source.md). It also serves its
// health probes on :8080 (hard-coded; a failed bind is ignored), so while it runs that port may be taken.
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import amqp from 'amqplib';

export const adapterVersion = 'v0.48.0';
export const adapterBinary = path.resolve(__dirname, '../../.bin', `receive-adapter-${adapterVersion}`);

/**
 * Whether the adapter binary is there. Under CI=true a missing binary is an error: those tests must
 * not be left out (CI builds it with scripts/receive-adapter.sh).
 */
export function adapterAvailable(): boolean {
  if (fs.existsSync(adapterBinary)) return true;
  const message = `${path.relative(process.cwd(), adapterBinary)} is missing: build it with bash scripts/receive-adapter.sh`;
  if (process.env.CI === 'true') throw new Error(`${message} (CI=true: the receive adapter tests must not be skipped)`);
  console.warn(`[tests] ${message}; the receive adapter tests are left out (they run under CI)`);
  return false;
}

export interface RunningAdapter {
  /** SIGTERM (in-flight requests are cancelled), then SIGKILL if it lingers. */
  stop(): Promise<void>;
  /** The adapter's recent log lines, for failure messages. */
  logs(): string;
}

/** An AMQP URL split as the adapter takes it: RABBIT_URL (no vhost) and RABBITMQ_VHOST. */
export function adapterBroker(amqpUrl: string): { rabbitUrl: string; vhost: string } {
  const u = new URL(amqpUrl);
  const vhost = decodeURIComponent(u.pathname.replace(/^\//, ''));
  u.pathname = '';
  return { rabbitUrl: u.toString().replace(/\/$/, ''), vhost };
}

/** The AMQP URL the adapter connects to: RABBIT_URL joined with RABBITMQ_VHOST as it joins them. */
export const adapterAmqpUrl = (env: Record<string, string>) => (env.RABBITMQ_VHOST ? `${env.RABBIT_URL}/${env.RABBITMQ_VHOST}` : env.RABBIT_URL!);

async function consumers(url: string, queue: string): Promise<number> {
  const conn = await amqp.connect(url);
  try {
    const ch = await conn.createChannel();
    return (await ch.checkQueue(queue)).consumerCount;
  } finally {
    await conn.close();
  }
}

/**
 * Starts an adapter with `env` (the controller's variables) and resolves once it consumes its queue,
 * i.e. once the broker counts one more consumer on RABBITMQ_QUEUE_NAME.
 */
export async function startAdapter(env: Record<string, string>, timeoutMs = 20_000): Promise<RunningAdapter> {
  const url = adapterAmqpUrl(env);
  const queue = env.RABBITMQ_QUEUE_NAME!;
  const before = await consumers(url, queue);
  const child: ChildProcess = spawn(adapterBinary, ['--server=http://127.0.0.1:1'], {
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? '/tmp', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let tail = '';
  const keep = (chunk: Buffer) => { tail = (tail + chunk.toString()).slice(-20_000); };
  child.stdout!.on('data', keep);
  child.stderr!.on('data', keep);
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  let gone = false;
  void exited.then(() => { gone = true; });

  const stop = async () => {
    if (gone) return;
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
    await exited;
    clearTimeout(timer);
  };

  const deadline = Date.now() + timeoutMs;
  while ((await consumers(url, queue)) <= before) {
    if (gone || Date.now() > deadline) {
      await stop();
      throw new Error(`the receive adapter for ${queue} did not start consuming (${gone ? `exited ${child.exitCode}` : 'timed out'}):\n${tail}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return { stop, logs: () => tail };
}
