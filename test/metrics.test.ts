// Prometheus metrics through their real boundary: the metrics listener (lib/core/metrics.ts serveMetrics)
// read as Prometheus reads it, after the stack has done real work on the embedded backends and on
// MariaDB + FerretDB + RabbitMQ.
import http from 'node:http';
import type net from 'node:net';
import { HTTP } from 'cloudevents';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { serveMetrics } from '../lib/core/metrics';
import { maintenanceTick } from '../lib/messaging/events';
import { getBroker } from '../lib/messaging/queue';
import { readFixture } from './fixtures';
import { valueOf } from './support/prometheus-text';
import { backends, eventually, newUser, startStack, videoForm, type Stack, type TestUser } from './support/stack';

let metricsUrl: string;
const scrape = async () => (await fetch(metricsUrl)).text();

beforeAll(async () => {
  metricsUrl = (await serveMetrics({ metrics: { port: 0, host: '127.0.0.1' } }))!;
});

describe.each(backends())('metrics on $name backends', ({ name, env }) => {
  let stack: Stack;
  let user: TestUser;
  let receiver: http.Server;
  let receiverUrl: string;
  const posts: string[] = [];

  beforeAll(async () => {
    receiver = http.createServer((req, res) => {
      posts.push(req.url ?? '');
      req.resume();
      res.writeHead(req.url === '/refuse' ? 410 : 200).end();
    });
    await new Promise<void>((resolve) => receiver.listen(0, '127.0.0.1', resolve));
    receiverUrl = `http://127.0.0.1:${(receiver.address() as net.AddressInfo).port}`;
    stack = await startStack({ ...env, WEBHOOK_ALLOW_PRIVATE: 'true' }, { sources: true });
    for (const q of ['video', 'mp3', 'video.dlq', 'mp3.dlq'] as const) await (await getBroker()).purge(q);
    user = await newUser(stack);
  });
  afterAll(async () => {
    await stack.close();
    receiver.close();
  });

  async function upload(fixture: 'mp4' | 'no-audio', fields: Record<string, string> = {}) {
    const res = await fetch(`${stack.url}/upload/`, { method: 'POST', headers: user.auth, body: videoForm(readFixture(fixture), `${fixture}.mp4`, fields) });
    expect(res.status).toBe(202);
    return ((await res.json()) as { jobId: string }).jobId;
  }

  const statusOf = async (jobId: string) =>
    ((await (await fetch(`${stack.url}/download/jobs/${jobId}`, { headers: user.auth })).json()) as { status: string }).status;

  it('when one video converts and one has no audio, then jobs, conversions, uploads, mail, webhooks and requests are counted', async () => {
    const before = await scrape();
    const at = (text: string, name: string, labels?: Record<string, string>) => valueOf(text, name, labels) ?? 0;
    const done = await upload('mp4', { callbackUrl: `${receiverUrl}/hook` });
    const failed = await upload('no-audio', { callbackUrl: `${receiverUrl}/refuse` });
    await eventually(async () => ((await statusOf(done)) === 'done' && (await statusOf(failed)) === 'failed' ? true : undefined), 60_000, 'both jobs to end');
    await eventually(async () => (posts.length >= 2 ? true : undefined), 30_000, 'both webhooks');
    const after = await eventually(async () => {
      const text = await scrape();
      return at(text, 'video2mp3_mail_deliveries_total', { outcome: 'sent' }) - at(before, 'video2mp3_mail_deliveries_total', { outcome: 'sent' }) >= 2 ? text : undefined;
    }, 30_000, 'both emails counted');
    const moved = (name: string, labels?: Record<string, string>) => at(after, name, labels) - at(before, name, labels);

    expect(moved('video2mp3_jobs_created_total')).toBe(2);
    expect(moved('video2mp3_jobs_finished_total', { outcome: 'done', reason: '' })).toBe(1);
    expect(moved('video2mp3_jobs_finished_total', { outcome: 'failed', reason: 'no-audio' })).toBe(1);
    expect(moved('video2mp3_conversion_duration_seconds_count')).toBe(1);
    expect(moved('video2mp3_conversion_speed_ratio_count')).toBe(1);
    expect(moved('video2mp3_conversion_speed_ratio_sum')).toBeGreaterThan(0);
    expect(moved('video2mp3_job_wait_seconds_count')).toBe(2);
    expect(moved('video2mp3_upload_bytes_count', { kind: 'single' })).toBe(2);
    expect(moved('video2mp3_upload_bytes_sum', { kind: 'single' })).toBe(readFixture('mp4').length + readFixture('no-audio').length);
    expect(moved('video2mp3_upload_duration_seconds_count', { kind: 'single' })).toBe(2);
    expect(moved('video2mp3_webhook_deliveries_total', { outcome: 'delivered' })).toBe(1);
    expect(moved('video2mp3_webhook_deliveries_total', { outcome: 'rejected' })).toBe(1);
    expect(moved('video2mp3_events_handled_total', { type: 'io.github.video2mp3.video.uploaded', outcome: 'ok' })).toBe(2);
    // Labelled by the route pattern, never the path with its ids.
    expect(moved('video2mp3_http_request_duration_seconds_count', { function: 'upload', route: '/', method: 'POST', status: '202' })).toBe(2);
    expect(moved('video2mp3_http_request_duration_seconds_count', { function: 'download', route: '/jobs/:id', method: 'GET', status: '200' })).toBeGreaterThanOrEqual(2);
    expect(after).not.toContain(done);
    // The process's default metrics.
    expect(valueOf(after, 'process_cpu_user_seconds_total')).toBeGreaterThan(0);
  });

  it('when a maintenance tick runs, then the job gauges show what waits and what is dead-lettered', async () => {
    const broker = await getBroker();
    const tickAndScrape = async () => {
      const tick = HTTP.binary(maintenanceTick());
      const res = await fetch(`${stack.internalUrl}/convert/maintenance`, { method: 'POST', headers: tick.headers as Record<string, string>, body: tick.body as string });
      expect(res.status).toBe(200);
      return scrape();
    };
    // On the services the run's database is shared with other test files, whose leftover jobs the reconciler
    // may move between two ticks: there the gauges are compared with a tick taken first, and bounded below.
    const shared = name === 'services';
    const before = await tickAndScrape();
    const jobsBefore = (status: string) => valueOf(before, 'video2mp3_jobs', { status }) ?? 0;
    await stack.sources[0]!.stop(); // nothing takes `video` now: the next upload waits
    stack.sources.shift();
    const waiting = await upload('mp4');
    // Not one of our events: notify answers 400 and the source stand-in dead-letters it.
    const rejectedBefore = valueOf(await scrape(), 'video2mp3_events_dead_lettered_total', { queue: 'mp3', reason: 'rejected' }) ?? 0;
    await broker.publish('mp3', { body: Buffer.from('{}'), contentType: 'application/json', messageId: 'dead-1', headers: {} });
    await eventually(async () => ((await broker.depth('mp3.dlq')) === 1 ? true : undefined), 10_000, 'the dead letter');
    expect(valueOf(await scrape(), 'video2mp3_events_dead_lettered_total', { queue: 'mp3', reason: 'rejected' })).toBe(rejectedBefore + 1);
    await new Promise((r) => setTimeout(r, 1100)); // the job's age, in whole seconds, is at least 1
    const text = await tickAndScrape();
    if (shared) {
      expect(valueOf(text, 'video2mp3_jobs', { status: 'queued' })).toBeGreaterThanOrEqual(1);
      expect(valueOf(text, 'video2mp3_jobs', { status: 'converting' }) ?? 0).toBeLessThanOrEqual(jobsBefore('converting'));
    } else {
      expect(valueOf(text, 'video2mp3_jobs', { status: 'queued' })).toBe(jobsBefore('queued') + 1);
      expect(valueOf(text, 'video2mp3_jobs', { status: 'converting' }) ?? 0).toBe(jobsBefore('converting'));
    }
    expect(valueOf(text, 'video2mp3_oldest_queued_job_age_seconds')).toBeGreaterThanOrEqual(1);
    expect(valueOf(text, 'video2mp3_dead_letters', { queue: 'mp3.dlq' })).toBe(1);
    expect(valueOf(text, 'video2mp3_dead_letters', { queue: 'video.dlq' })).toBe(0);
    expect(await statusOf(waiting)).toBe('queued');
    await broker.purge('mp3.dlq');
    await broker.purge('video');
  });

  it('when the public listener is asked for /metrics, then it is not there', async () => {
    for (const path of ['/metrics', '/upload/metrics', '/download/metrics']) {
      const res = await fetch(`${stack.url}${path}`);
      expect(res.status, path).toBe(404);
      expect(await res.text()).not.toContain('video2mp3_');
    }
  });
});

describe('the job gauges of a replica that ran no tick', () => {
  it('when the measurement is older than its lifetime, then the gauges are absent rather than stale', async () => {
    const { recordJobStats } = await import('../lib/core/metrics');
    recordJobStats({ queued: 7, converting: 1, oldestQueuedAt: Date.now() - 60_000, deadLetters: { 'video.dlq': 2 } }, 1000, Date.now() - 2000);
    const text = await scrape();
    for (const name of ['video2mp3_jobs', 'video2mp3_oldest_queued_job_age_seconds', 'video2mp3_dead_letters', 'video2mp3_job_stats_timestamp_seconds']) {
      expect(valueOf(text, name), name).toBeUndefined();
    }
    recordJobStats({ queued: 7, converting: 1, oldestQueuedAt: Date.now() - 60_000, deadLetters: { 'video.dlq': 2 } }, 60_000);
    const fresh = await scrape();
    expect(valueOf(fresh, 'video2mp3_jobs', { status: 'queued' })).toBe(7);
    expect(valueOf(fresh, 'video2mp3_oldest_queued_job_age_seconds')).toBeGreaterThanOrEqual(60);
  });
});
