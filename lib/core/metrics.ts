import http from 'node:http';
import client from 'prom-client';
import type { Config } from './config';
import { log } from './log';

/**
 * The process's Prometheus metrics (prom-client), every one the functions record, in one registry.
 * Each function exposes what it did itself; the job gauges are measured in one place only, by the
 * scheduled maintenance (recordJobStats). docs/operations.md lists them for an operator.
 */
export const registry = new client.Registry();

const seconds = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];
const longSeconds = [0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600];

export const httpRequestDuration = new client.Histogram({
  name: 'video2mp3_http_request_duration_seconds',
  help: 'HTTP requests answered, by function, route pattern, method and status code, and how long each took',
  labelNames: ['function', 'route', 'method', 'status'] as const,
  buckets: seconds,
  registers: [registry],
});

export const uploadBytes = new client.Histogram({
  name: 'video2mp3_upload_bytes',
  help: 'Size of each video stored by an upload (single request or resumable)',
  labelNames: ['kind'] as const,
  buckets: client.exponentialBuckets(1024 * 1024, 4, 8), // 1 MiB … 16 GiB
  registers: [registry],
});

export const uploadDuration = new client.Histogram({
  name: 'video2mp3_upload_duration_seconds',
  help: 'Time from an upload\'s first byte to its video stored (single request), or from creation to the last byte (resumable)',
  labelNames: ['kind'] as const,
  buckets: longSeconds,
  registers: [registry],
});

export const jobsCreated = new client.Counter({
  name: 'video2mp3_jobs_created_total',
  help: 'Jobs queued for conversion',
  registers: [registry],
});

export const jobsFinished = new client.Counter({
  name: 'video2mp3_jobs_finished_total',
  help: 'Jobs that ended, by outcome (done, failed) and failure reason',
  labelNames: ['outcome', 'reason'] as const,
  registers: [registry],
});

export const conversionDuration = new client.Histogram({
  name: 'video2mp3_conversion_duration_seconds',
  help: 'Wall time of each successful conversion (the video read, converted and the MP3 stored)',
  buckets: longSeconds,
  registers: [registry],
});

export const conversionSpeed = new client.Histogram({
  name: 'video2mp3_conversion_speed_ratio',
  help: 'Media seconds converted per second of wall time, per successful conversion',
  buckets: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000],
  registers: [registry],
});

export const jobWait = new client.Histogram({
  name: 'video2mp3_job_wait_seconds',
  help: 'How long a job waited between its upload and the start of its first conversion',
  buckets: longSeconds,
  registers: [registry],
});

export const mailDeliveries = new client.Counter({
  name: 'video2mp3_mail_deliveries_total',
  help: 'Outcome emails, by result: sent, rejected (permanently, by the mail server), retry (server down or 4xx)',
  labelNames: ['outcome'] as const,
  registers: [registry],
});

export const webhookDeliveries = new client.Counter({
  name: 'video2mp3_webhook_deliveries_total',
  help: 'Webhook POSTs, by result: delivered, rejected (4xx or a refused address), retry, failed (attempts used up)',
  labelNames: ['outcome'] as const,
  registers: [registry],
});

export const reconcilerRedrives = new client.Counter({
  name: 'video2mp3_reconciler_redrives_total',
  help: 'What the reconciler did again, by kind: conversions, outcomes, notifications (events re-published), turns (jobs released), redriven (dead letters re-sent)',
  labelNames: ['kind'] as const,
  registers: [registry],
});

export const eventsHandled = new client.Counter({
  name: 'video2mp3_events_handled_total',
  help: 'Events received by convert and notify, by type and answer: ok, retry (503), rejected (4xx: the source dead-letters it)',
  labelNames: ['type', 'outcome'] as const,
  registers: [registry],
});

export const eventsDeadLettered = new client.Counter({
  name: 'video2mp3_events_dead_lettered_total',
  help: 'Events the local RabbitMQ source stand-in dead-lettered (npm start; on Knative the receive adapter does it, see video2mp3_dead_letters)',
  labelNames: ['queue', 'reason'] as const,
  registers: [registry],
});

/** Counts of the jobs table and the broker's dead-letter queues, as one maintenance pass measured them. */
export interface JobStats {
  queued: number;
  converting: number;
  /** created_at of the oldest job still queued, in ms; undefined when none is. */
  oldestQueuedAt?: number;
  deadLetters: Record<string, number>;
}

let stats: { value: JobStats; at: number; ttlMs: number } | undefined;

/** The measurement while it is fresh: a replica that stopped receiving ticks stops exposing it. */
const fresh = () => (stats && Date.now() - stats.at <= stats.ttlMs ? stats : undefined);

new client.Gauge({
  name: 'video2mp3_jobs',
  help: 'Jobs queued or converting, as the last maintenance pass counted them (exposed by the replica that ran it; use max())',
  labelNames: ['status'] as const,
  registers: [registry],
  collect() {
    this.reset();
    const s = fresh();
    if (!s) return;
    this.set({ status: 'queued' }, s.value.queued);
    this.set({ status: 'converting' }, s.value.converting);
  },
});

new client.Gauge({
  name: 'video2mp3_oldest_queued_job_age_seconds',
  help: 'Age of the oldest job still waiting for its conversion (0 when none waits), from the last maintenance pass',
  registers: [registry],
  collect() {
    this.reset();
    const s = fresh();
    if (!s) return void this.remove({}); // absent, not 0, on a replica that measured nothing
    this.set(s.value.oldestQueuedAt === undefined ? 0 : Math.max(0, (Date.now() - s.value.oldestQueuedAt) / 1000));
  },
});

new client.Gauge({
  name: 'video2mp3_dead_letters',
  help: 'Messages in each dead-letter queue, from the last maintenance pass',
  labelNames: ['queue'] as const,
  registers: [registry],
  collect() {
    this.reset();
    const s = fresh();
    for (const [queue, count] of Object.entries(s?.value.deadLetters ?? {})) this.set({ queue }, count);
  },
});

new client.Gauge({
  name: 'video2mp3_job_stats_timestamp_seconds',
  help: 'When the job and dead-letter gauges were measured (Unix time)',
  registers: [registry],
  collect() {
    this.reset();
    const s = fresh();
    if (s) this.set(s.at / 1000);
    else this.remove({});
  },
});

/**
 * Records what a maintenance pass measured. It is exposed for `ttlMs` (a little over the tick's
 * interval): the next tick may reach another replica, and a stale count must not linger beside it.
 */
export function recordJobStats(value: JobStats, ttlMs: number, at = Date.now()): void {
  stats = { value, at, ttlMs };
}

let defaults = false;

/**
 * Serves the registry at /metrics on its own listener (config.metrics), with the process's default
 * metrics. A port already taken is logged and the function goes on without metrics: they are never
 * a reason to stop serving users. Resolves to the URL, or undefined.
 */
export async function serveMetrics(config: Pick<Config, 'metrics'>): Promise<string | undefined> {
  if (!defaults) {
    client.collectDefaultMetrics({ register: registry });
    defaults = true;
  }
  const server = http.createServer((req, res) => {
    if (req.method !== 'GET' || (req.url ?? '').split('?')[0] !== '/metrics') {
      res.writeHead(404, { 'Content-Type': 'application/json' }).end('{"error":"not_found","message":"metrics are at /metrics"}');
      return;
    }
    registry.metrics().then(
      (text) => res.writeHead(200, { 'Content-Type': registry.contentType }).end(text),
      (err: unknown) => {
        log.error({ err }, 'could not collect metrics');
        res.writeHead(500).end();
      },
    );
  });
  const port = await new Promise<number | undefined>((resolve) => {
    server.once('error', (err) => {
      log.warn({ err, port: config.metrics.port }, 'metrics not served: METRICS_PORT is not available');
      resolve(undefined);
    });
    server.listen(config.metrics.port, config.metrics.host, () => resolve((server.address() as { port: number }).port));
  });
  if (port === undefined) return undefined;
  server.unref(); // it never holds the process open at shutdown
  const host = config.metrics.host === '0.0.0.0' ? '<pod IP>' : config.metrics.host;
  return `http://${host}:${port}/metrics`;
}
