// The alerting rules and the dashboard in knative/monitoring/: promtool checks the rules and runs their
// unit tests (alerts.test.yaml), and every metric a rule or a dashboard query names is one the functions
// expose (lib/core/metrics.ts, read through the metrics listener as Prometheus reads it).
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { parse } from 'yaml';
import { beforeAll, describe, expect, it } from 'vitest';
import { serveMetrics } from '../lib/core/metrics';

const dir = path.resolve(__dirname, '../knative/monitoring');

/** promtool from Debian's `prometheus` package; under CI=true its absence fails the run (.ci/run installs it). */
function promtoolAvailable(): boolean {
  if (spawnSync('promtool', ['--version'], { stdio: 'ignore' }).status === 0) return true;
  if (process.env.CI === 'true') throw new Error('promtool is missing (CI=true: install Debian\'s prometheus package; .ci/run does)');
  console.warn('[tests] promtool is missing: the rule checks are left out (they run under CI)');
  return false;
}

const promtool = (...args: string[]) => spawnSync('promtool', args, { cwd: dir, encoding: 'utf8', timeout: 60_000 });

/** Metric names a PromQL expression refers to: ours and the process defaults. */
const namesIn = (expr: string) => [...expr.matchAll(/\b((?:video2mp3|process|nodejs)_[a-z0-9_]+)\b/g)].map((m) => m[1]!);

describe.runIf(promtoolAvailable())('the alerting rules', () => {
  it('when promtool checks them, then they are valid', () => {
    const run = promtool('check', 'rules', 'alerts.yaml');
    expect(run.status, run.stdout + run.stderr).toBe(0);
    expect(run.stdout).toContain('SUCCESS: 6 rules found');
  });

  it('when promtool runs their unit tests, then every alert fires when it should and not otherwise', () => {
    const run = promtool('test', 'rules', 'alerts.test.yaml');
    expect(run.status, run.stdout + run.stderr).toBe(0);
    expect(run.stdout).toContain('SUCCESS');
  });

  it('when a unit test expects the wrong thing, then promtool fails (the tests are not vacuous)', () => {
    const spoilt = fs.readFileSync(path.join(dir, 'alerts.test.yaml'), 'utf8').replace('- eval_time: 4m\n        alertname: Video2mp3DeadLetters', '- eval_time: 7m\n        alertname: Video2mp3DeadLetters');
    const file = path.join(dir, `.spoilt-${process.pid}.test.yaml`);
    fs.writeFileSync(file, spoilt);
    try {
      const run = promtool('test', 'rules', path.basename(file));
      expect(run.status).not.toBe(0);
      expect(run.stdout + run.stderr).toContain('Video2mp3DeadLetters');
    } finally {
      fs.rmSync(file, { force: true });
    }
  });

  it('when the unit tests are listed, then each alert has a case where it fires', () => {
    const rules = (parse(fs.readFileSync(path.join(dir, 'alerts.yaml'), 'utf8')) as { groups: { rules: { alert: string }[] }[] }).groups.flatMap((g) => g.rules.map((r) => r.alert));
    const tests = parse(fs.readFileSync(path.join(dir, 'alerts.test.yaml'), 'utf8')) as { tests: { alert_rule_test: { alertname: string; exp_alerts: unknown[] }[] }[] };
    const firing = new Set(tests.tests.flatMap((t) => t.alert_rule_test.filter((a) => a.exp_alerts.length > 0).map((a) => a.alertname)));
    expect([...firing].sort()).toEqual([...rules].sort());
  });
});

describe('rules and dashboard name only metrics the functions expose', () => {
  let exposed: Set<string>;

  beforeAll(async () => {
    const url = await serveMetrics({ metrics: { port: 0, host: '127.0.0.1' } });
    const text = await (await fetch(url!)).text();
    exposed = new Set();
    for (const [, name, type] of text.matchAll(/^# TYPE (\S+) (\S+)$/gm)) {
      exposed.add(name!);
      if (type === 'histogram') for (const suffix of ['_bucket', '_sum', '_count']) exposed.add(`${name}${suffix}`);
    }
  });

  it('when the alert expressions are read, then every metric in them is exposed', () => {
    const rules = (parse(fs.readFileSync(path.join(dir, 'alerts.yaml'), 'utf8')) as { groups: { rules: { alert: string; expr: string }[] }[] }).groups.flatMap((g) => g.rules);
    expect(rules).toHaveLength(6);
    for (const rule of rules) {
      expect(namesIn(rule.expr).length, rule.alert).toBeGreaterThan(0);
      for (const name of namesIn(rule.expr)) expect(exposed, `${rule.alert}: ${name}`).toContain(name);
    }
  });

  it('when the dashboard is parsed, then it is a Grafana dashboard whose every query names exposed metrics only', () => {
    const dashboard = JSON.parse(fs.readFileSync(path.join(dir, 'grafana-dashboard.json'), 'utf8')) as {
      title: string; uid: string; panels: { type: string; title: string; targets?: { expr: string }[] }[];
    };
    expect(dashboard).toMatchObject({ title: 'video2mp3', uid: 'video2mp3' });
    const queries = dashboard.panels.filter((p) => p.type !== 'row').flatMap((p) => (p.targets ?? []).map((t) => ({ panel: p.title, expr: t.expr })));
    expect(queries.length).toBeGreaterThan(20);
    const used = new Set<string>();
    for (const q of queries) {
      expect(namesIn(q.expr).length, q.panel).toBeGreaterThan(0);
      for (const name of namesIn(q.expr)) {
        expect(exposed, `${q.panel}: ${name}`).toContain(name);
        used.add(name.replace(/_(bucket|sum|count)$/, ''));
      }
    }
    // Every one of our metrics is on the dashboard.
    const ours = [...exposed].filter((n) => n.startsWith('video2mp3_') && !/_(bucket|sum|count)$/.test(n));
    expect(ours.filter((n) => !used.has(n) && !used.has(`${n}_count`))).toEqual([]);
  });

  it('when a query names a metric nobody exposes, then the check catches it (not vacuous)', () => {
    expect(namesIn('sum(rate(video2mp3_jobs_finised_total[5m]))').every((n) => exposed.has(n))).toBe(false);
  });
});
