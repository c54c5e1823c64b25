// A real Prometheus (Debian's package) scraping `npm start` on loopback, with the alerting rules loaded:
// a few uploads later, the job and conversion series have moved in Prometheus's own HTTP API. Prometheus
// runs in a temporary directory of its own, on a free loopback port, and is killed at the end.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readFixture } from './fixtures';
import { freePort } from './support/net';
import { npmStart, type NpmStart } from './support/npm-start';
import { eventually, videoForm } from './support/stack';

/** Prometheus from Debian's package; under CI=true its absence fails the run (.ci/run installs it). */
function prometheusAvailable(): boolean {
  if (spawnSync('prometheus', ['--version'], { stdio: 'ignore' }).status === 0) return true;
  if (process.env.CI === 'true') throw new Error('prometheus is missing (CI=true: install Debian\'s prometheus package; .ci/run does)');
  console.warn('[tests] prometheus is missing: the scrape test is left out (it runs under CI)');
  return false;
}

const rules = path.resolve(__dirname, '../knative/monitoring/alerts.yaml');

describe.runIf(prometheusAvailable())('a real Prometheus scraping npm start', () => {
  let stack: NpmStart;
  let prometheus: ChildProcess;
  let prometheusUrl: string;
  let prometheusLog = '';
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'video2mp3-prometheus-'));

  beforeAll(async () => {
    const [port, metricsPort, prometheusPort] = [await freePort(), await freePort(), await freePort()];
    stack = await npmStart({ DATA_DIR: path.join(dir, 'data'), METRICS_PORT: String(metricsPort), MAINTENANCE_INTERVAL_SECONDS: '1' }, port);
    expect(stack.output()).toContain(`http://127.0.0.1:${metricsPort}/metrics`); // npm start says where
    fs.writeFileSync(path.join(dir, 'prometheus.yml'), [
      'global: { scrape_interval: 1s, evaluation_interval: 1s }',
      `rule_files: [ ${JSON.stringify(rules)} ]`,
      `scrape_configs: [ { job_name: video2mp3, static_configs: [ { targets: [ "127.0.0.1:${metricsPort}" ] } ] } ]`,
    ].join('\n'));
    prometheusUrl = `http://127.0.0.1:${prometheusPort}`;
    prometheus = spawn('prometheus', [
      `--config.file=${path.join(dir, 'prometheus.yml')}`, `--storage.tsdb.path=${path.join(dir, 'tsdb')}`,
      `--web.listen-address=127.0.0.1:${prometheusPort}`, '--storage.tsdb.retention.time=1h', '--log.level=warn',
    ], { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
    prometheus.stdout!.on('data', (c: Buffer) => { prometheusLog += c.toString(); });
    prometheus.stderr!.on('data', (c: Buffer) => { prometheusLog += c.toString(); });
    await eventually(async () => {
      if (prometheus.exitCode !== null) throw new Error(`prometheus exited with ${prometheus.exitCode}: ${prometheusLog}`);
      return (await fetch(`${prometheusUrl}/-/ready`).catch(() => undefined))?.ok ? true : undefined;
    }, 30_000, 'prometheus to be ready');
  }, 120_000);

  afterAll(async () => {
    prometheus?.kill('SIGKILL');
    try { process.kill(-stack.child.pid!, 'SIGTERM'); } catch { /* already gone */ }
    await Promise.race([stack?.exited, new Promise((r) => setTimeout(r, 10_000))]);
    fs.rmSync(dir, { recursive: true, force: true });
  });

  /** One instant query through the HTTP API: the first sample's value, or undefined when the result is empty. */
  async function query(promql: string): Promise<number | undefined> {
    const res = await fetch(`${prometheusUrl}/api/v1/query?query=${encodeURIComponent(promql)}`);
    const body = (await res.json()) as { status: string; data: { result: { value: [number, string] }[] } };
    expect(body.status, promql).toBe('success');
    return body.data.result[0] ? Number(body.data.result[0].value[1]) : undefined;
  }

  it('when three videos are converted, then the job, conversion, upload and request series moved, the job gauges are scraped and the rules are loaded', async () => {
    await eventually(async () => ((await query('up{job="video2mp3"}')) === 1 ? true : undefined), 30_000, 'the first scrape');
    const headers = { 'content-type': 'application/json' };
    const credentials = JSON.stringify({ email: 'prometheus@example.com', password: 'correct horse battery' });
    expect((await fetch(`${stack.url}/auth/signup`, { method: 'POST', headers, body: credentials })).status).toBe(201);
    const { token } = (await (await fetch(`${stack.url}/auth/login`, { method: 'POST', headers, body: credentials })).json()) as { token: string };
    const jobs: string[] = [];
    for (let i = 0; i < 3; i++) {
      const res = await fetch(`${stack.url}/upload/`, { method: 'POST', headers: { authorization: `Bearer ${token}` }, body: videoForm(readFixture('mp4'), `clip-${i}.mp4`) });
      expect(res.status).toBe(202);
      jobs.push(((await res.json()) as { jobId: string }).jobId);
    }

    const done = await eventually(async () => {
      const n = await query('sum(video2mp3_jobs_finished_total{outcome="done"})');
      return n !== undefined && n >= 3 ? n : undefined;
    }, 90_000, 'three jobs done, in Prometheus');
    expect(done).toBe(3);
    expect(await query('sum(video2mp3_jobs_created_total)')).toBe(3);
    await eventually(async () => ((await query('sum(video2mp3_conversion_duration_seconds_count)')) === 3 ? true : undefined), 10_000, 'three conversions');
    expect(await query('sum(video2mp3_conversion_speed_ratio_count)')).toBe(3);
    expect(await query('histogram_quantile(0.5, sum by (le) (video2mp3_conversion_duration_seconds_bucket))')).toBeGreaterThan(0);
    expect(await query('sum(video2mp3_upload_bytes_sum{kind="single"})')).toBe(3 * readFixture('mp4').length);
    expect(await query('sum(video2mp3_http_request_duration_seconds_count{function="upload",route="/",status="202"})')).toBe(3);
    // The maintenance tick (every second here) measured the jobs: none waits now.
    await eventually(async () => ((await query('max(video2mp3_jobs{status="queued"})')) === 0 ? true : undefined), 15_000, 'the job gauges');
    expect(await query('max(video2mp3_dead_letters{queue="video.dlq"})')).toBe(0);
    expect(await query('max_over_time(video2mp3_jobs{status="queued"}[1m])')).toBeGreaterThanOrEqual(0);
    expect(await query('process_resident_memory_bytes{job="video2mp3"}')).toBeGreaterThan(0);

    const rulesRes = (await (await fetch(`${prometheusUrl}/api/v1/rules`)).json()) as { data: { groups: { rules: { name: string; health: string }[] }[] } };
    const loaded = rulesRes.data.groups.flatMap((g) => g.rules);
    expect(loaded.map((r) => r.name)).toContain('Video2mp3NoConversions');
    expect(loaded).toHaveLength(6);
    await eventually(async () => {
      const again = (await (await fetch(`${prometheusUrl}/api/v1/rules`)).json()) as typeof rulesRes;
      return again.data.groups.flatMap((g) => g.rules).every((r) => r.health === 'ok') ? true : undefined;
    }, 10_000, 'every rule evaluated without error');
  }, 180_000);
});
